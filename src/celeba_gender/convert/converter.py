"""The converter: a CelebA folder in, de-duplicated, balanced, leak-free TFRecord shards and a manifest out.

Steps: find CelebA (``convert.locate``) -> read the attribute table -> choose candidate rows (``--limit``; the
source's draws for ``source``) -> scan their files in parallel (exists, JPEG, size, decodes, sha256, perceptual
hash) -> drop bad rows and duplicates -> split and balance -> write shards in parallel -> manifest.json. The
whole run holds ``out_dir``'s lock (``locks``): one conversion at a time per folder. No TensorFlow is imported.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time

import numpy as np

import celeba_gender
from celeba_gender.convert import locate, shard_plan, curation, image_scan, writer
from celeba_gender.core import locks, worker_pool, progress, fileio
from celeba_gender.shards import shard_dir
from celeba_gender.shards.attributes import class_names
from celeba_gender.convert.celeba import CelebaError, attribute_columns, check_attribute, detect_layout, read_celeba
from celeba_gender.convert.summary import format_summary  # noqa: F401 - part of this module's interface
from celeba_gender.convert.config import ConvertConfig, ConvertError


def default_synthetic_dir(config: ConvertConfig) -> str:
    """Where ``--synthetic=N`` writes its images when --celeba_dir is not given: beside the shards."""
    parent = os.path.dirname(os.path.abspath(config.out_dir))
    return os.path.join(parent, f"synthetic_celeba_{config.synthetic}_seed{config.seed}")


def check_out_dir(config: ConvertConfig) -> None:
    """Refuses, before any work, to mix shards made with other options into ``out_dir``."""
    try:
        previous = shard_dir.find_manifest(config.out_dir)
    except shard_dir.ManifestError:
        previous = {"options": "unreadable"}
    if previous and previous.get("options") != config.plan_options() and not config.overwrite:
        raise ConvertError(
            f"{config.out_dir} already holds shards made with other options ({_options_diff(previous, config)}). "
            "Pass --overwrite to replace them, or choose another --out_dir.")


def _options_diff(previous: dict, config: ConvertConfig) -> str:
    old = previous.get("options")
    if not isinstance(old, dict):
        return "its manifest.json is unreadable"
    new = config.plan_options()
    return ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k])


def _check_bad_fraction(bad: int, considered: int, what: str, config: ConvertConfig) -> str | None:
    if considered and bad / considered > config.max_bad_fraction:
        return (f"{bad:,} of {considered:,} {what} ({bad / considered:.1%}) are unusable, more than "
                f"--max_bad_fraction={config.max_bad_fraction:g}")
    return None


def find_celeba(config: ConvertConfig) -> str:
    """The CelebA folder to convert: the synthetic one (``--synthetic``: the command makes it first, see
    ``synthetic.generate.ensure``), the download, or the search's find."""
    if config.synthetic:
        return config.celeba_dir or default_synthetic_dir(config)
    found = locate.download() if config.download else locate.locate(config.celeba_dir)
    if found.how != "--celeba_dir":
        print(f"Converting the CelebA in {found.path} ({found.how}).", file=sys.stderr)
    return found.path


def convert(config: ConvertConfig) -> dict:
    """Runs one conversion and returns its manifest (also written to ``out_dir/manifest.json``). The run holds
    ``out_dir``'s lock: a second conversion into the same folder stops at once with a LockHeldError."""
    if os.path.exists(config.out_dir) and not os.path.isdir(config.out_dir):
        raise ConvertError(f"--out_dir={config.out_dir} is a file, not a folder: choose another --out_dir.")
    with locks.hold(config.out_dir, purpose="converting CelebA into it",
                    fix="wait for it to finish, or choose another --out_dir"):
        return _convert(config)


@dataclasses.dataclass
class _Read:
    """CelebA's table as read: where it came from, its usable rows, the rows dropped and the file's row count."""

    layout: object
    table: object
    dropped: list
    rows_in_file: int
    attribute_names: list[str]


def _read(config: ConvertConfig, celeba_dir: str) -> _Read:
    """The attribute table of ``celeba_dir``, checked for what the conversion needs."""
    layout = detect_layout(celeba_dir)
    if config.split == "official" and layout.partition_file is None:
        raise CelebaError(f"--split=official needs list_eval_partition.txt (or .csv) in {layout.root}. "
                          "Add it, or use --split=identity (needs identity_CelebA.txt) or --split=source.")
    if config.split == "identity" and layout.identity_file is None:
        raise CelebaError(f"--split=identity needs identity_CelebA.txt in {layout.root} (CelebA's "
                          "Anno/identity_CelebA.txt; Kaggle's copy lacks it). Or use --split=official.")
    table, dropped = read_celeba(layout)
    if table.empty:
        raise CelebaError(f"{layout.attr_file} has no usable rows ({len(dropped)} bad). See its format in README.md.")
    check_attribute(table, config.attribute)
    attribute_names = attribute_columns(table)  # before the label column joins them
    table["label"] = table[config.attribute].astype(np.int64)
    return _Read(layout, table, dropped, len(table) + len(dropped), attribute_names)


def _scan(config: ConvertConfig, candidates, workers: int, read: _Read):
    """The candidates' files read and checked (in parallel): the usable rows, with their sha256, size and hash;
    the bad ones join ``read.dropped``."""
    bar = progress.counter(len(candidates), "scan", enabled=config.progress)
    results = image_scan.scan_files(candidates["path"].tolist(), near=config.dedupe == "near", workers=workers,
                                    progress=bar.update, max_pixels=config.max_pixels)
    bar.close()
    candidates = candidates.assign(
        sha256=[r.sha256 for r in results], nbytes=[r.nbytes for r in results],
        height=[r.height for r in results], width=[r.width for r in results], phash=[r.phash for r in results])
    bad = np.array([r.problem is not None for r in results], dtype=bool)
    read.dropped += shard_plan.drop_rows(candidates, bad, [r.problem for r in results], [r.detail for r in results])
    return candidates, bad


def _convert(config: ConvertConfig) -> dict:
    workers = config.workers or worker_pool.default_workers()
    read = _read(config, find_celeba(config))
    started = time.perf_counter()  # the conversion itself, without making or downloading data
    check_out_dir(config)
    problems = [_check_bad_fraction(len(read.dropped), read.rows_in_file, "attribute rows", config)]
    names = class_names(config.attribute)
    source_info, balanced_out = None, []
    if config.split == "source":
        candidates, balanced_out, source_info = curation.source_split(read.table, config.limit, config.balance,
                                                                    config.seed)
    else:
        candidates = curation.sample_limit(read.table, config.limit, config.seed)
    candidates, bad = _scan(config, candidates, workers, read)
    problems.append(_check_bad_fraction(int(bad.sum()), len(candidates), "image files", config))
    plan, curated, balance = shard_plan.curate(config, candidates[~bad], balanced_out, names)
    if source_info is not None and config.balance:
        balance = shard_plan.source_balance(source_info, names)
    read.dropped += curated
    manifest = _manifest(config, read, plan, len(candidates), balance)
    if source_info is not None:
        manifest["source_protocol"] = _named_source_info(source_info, names)
    _refuse_failures(config, manifest, [p for p in problems if p], plan.empty)
    specs = _shard_specs(config, plan, manifest)
    bar = progress.counter(len(plan), "write", enabled=config.progress)
    manifest = writer.write_shards(specs, config.out_dir, manifest, workers, progress=bar.update)
    bar.close()
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def _manifest(config: ConvertConfig, read: _Read, plan, scanned: int, balance: dict) -> dict:
    """The manifest of the planned shards, before any is written (status in_progress; the writer fills
    ``splits``' shard lists)."""
    layout, dropped = read.layout, read.dropped
    return {
        "format_version": shard_dir.FORMAT_VERSION,
        "status": shard_dir.IN_PROGRESS,
        "created_by": f"celeba_gender {celeba_gender.__version__}",
        "source": {"dir": layout.root, "form": layout.form, "attribute_file": os.path.basename(layout.attr_file),
                   "rows": read.rows_in_file, "usable_rows": len(read.table), "scanned": scanned,
                   "synthetic": config.synthetic or None},
        "attribute": config.attribute,
        "class_names": list(class_names(config.attribute)),
        "attribute_names": read.attribute_names,
        "options": config.plan_options(),
        "image_sizes": dict(collections.Counter(f"{h}x{w}" for h, w in zip(plan["height"], plan["width"]))),
        "splits": {},
        "balance": balance,
        "dropped_counts": dict(sorted(collections.Counter(d.reason for d in dropped).items())),
        "dropped": [dataclasses.asdict(d) for d in sorted(dropped, key=lambda d: (d.reason, d.image_id))],
        "warnings": shard_plan.straddling_copies(plan, config),
    }


def _named_source_info(source_info: dict, names: tuple[str, str]) -> dict:
    """The source study's draws (curation.source_split) with class names in place of label ids."""
    by_name = lambda counts: {names[k]: v for k, v in counts.items()}  # noqa: E731
    source_info["sampled_class_counts"] = by_name(source_info["sampled_class_counts"])
    source_info["split_class_counts"] = {s: by_name(c) for s, c in source_info["split_class_counts"].items()}
    return source_info


def _refuse_failures(config: ConvertConfig, manifest: dict, failures: list[str], nothing_left: bool) -> None:
    """Too many bad rows or files, or nothing left to write: the manifest (with every dropped row and its reason)
    is written as failed, then one ConvertError line."""
    if not failures and not nothing_left:
        return
    manifest["status"] = shard_dir.FAILED
    where = os.path.join(config.out_dir, shard_dir.MANIFEST)
    with fileio.disk_space_for(shard_dir.MANIFEST, config.out_dir):
        os.makedirs(config.out_dir, exist_ok=True)
        fileio.write_json(where, manifest)
    if failures:
        raise ConvertError("; ".join(failures) + f". Every bad row and its reason is listed in {where} "
                           "('dropped'). Fix or remove them, or raise --max_bad_fraction.")
    raise ConvertError(f"Nothing left to write: every row was dropped ({manifest['dropped_counts']}). See {where}.")


def _shard_specs(config: ConvertConfig, plan, manifest: dict) -> list:
    """Every shard to write, split by split (and each split's counts entered in the manifest)."""
    names, specs = tuple(manifest["class_names"]), []
    for split in curation.SPLITS:
        part = plan[plan["split"] == split]
        items = shard_plan.shard_items(part, manifest["attribute_names"], names)
        n = writer.num_shards_for(len(part), int(part["nbytes"].sum()), config.num_shards, config.shard_mb)
        specs += writer.split_into_shards(split, items, n)
        counts = part["label"].value_counts()
        class_counts = {names[k]: int(counts.get(k, 0)) for k in (0, 1)}
        manifest["splits"][split] = {"count": len(part), "class_counts": class_counts, "num_shards": n, "bytes": 0,
                                     "shards": []}
    return specs
