"""The converter: a CelebA folder in, de-duplicated, balanced, leak-free TFRecord shards and a manifest out.

Steps: read the attribute table -> choose candidate rows (``--limit``; the source's draws for ``seed``)
-> scan their files in parallel (exists, JPEG, decodes, sha256, perceptual hash) -> drop bad rows and
duplicates -> split and balance -> write shards in parallel -> manifest.json. No TensorFlow is imported.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

import celeba_gender
from celeba_gender import curation, options, parallel, records, scan, storage, writer
from celeba_gender.attributes import class_names
from celeba_gender.celeba import (CelebaError, Dropped, attribute_columns, check_attribute, detect_layout,
                                  read_celeba)
from celeba_gender.errors import UserError
from celeba_gender.options import option

class ConvertError(UserError):
    """The conversion cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Options of one conversion (the flags of make_tfrecords.py)."""

    celeba_dir: str | None = option(None, "CelebA folder: list_attr_celeba.txt (or Kaggle's .csv) and "
                                    "img_align_celeba/. Required unless --synthetic is set (then it is where the "
                                    "synthetic dataset is written).", path=True)
    out_dir: str = option("tfrecords", "Where shards and manifest.json go.", path=True)
    attribute: str = option("Male", "The attribute to classify (any column of the attribute file).")
    split: str = option("official", "official: CelebA's identity-disjoint list_eval_partition; identity: a random "
                        "identity-disjoint split by --split_fractions (needs identity_CelebA.txt); seed: the source "
                        "study's random split, replayed draw for draw (leaks identities; for reproduction only).",
                        choices=curation.SPLIT_MODES)
    split_fractions: tuple[float, float, float] = option((0.8, 0.1, 0.1), "train,validation,test fractions for "
                                                         "--split=identity.", lower=0)
    limit: int = option(0, "Use this many rows drawn at random (df.sample with --seed); 0 = all.", lower=0)
    balance: bool = option(False, "Undersample the majority class (per split; before the split for --split=seed).")
    dedupe: str = option("exact", "Drop copies before splitting: exact = byte-identical files; near = also "
                         "perceptual-hash near-copies (slower); none = keep them (copies may leak).",
                         choices=curation.DEDUPE_MODES)
    near_threshold: int = option(curation.NEAR_THRESHOLD, "Max differing bits of the 256-bit perceptual hashes for "
                                 "--dedupe=near.", lower=0, upper=31)
    num_shards: int = option(0, "Shards per split; 0 = enough for --shard_mb each (at least 8).", lower=0)
    shard_mb: float = option(100.0, "Target shard size in MB when --num_shards=0.", lower=0.001)
    workers: int = option(0, "Worker processes for reading and writing; 0 = one per CPU.", lower=0)
    seed: int = option(42, "Seed of every random draw (sampling, balancing, splits, shard order).")
    overwrite: bool = option(False, "Replace shards in --out_dir that were made with other options.")
    max_bad_fraction: float = option(0.01, "Fail (after writing the report) when more than this fraction of rows "
                                     "or files is unusable.", lower=0.0, upper=1.0)
    synthetic: int = option(0, "Generate a synthetic CelebA of this many images (into --celeba_dir, or beside "
                            "--out_dir) and convert it.", lower=0)
    progress: bool = option(True, "Show progress bars.")

    def plan_options(self) -> dict:
        """The options that decide the shards' content (and so the plan fingerprint)."""
        keys = ("attribute", "split", "split_fractions", "limit", "balance", "dedupe", "near_threshold",
                "num_shards", "shard_mb", "seed")
        out = {k: getattr(self, k) for k in keys}
        out["split_fractions"] = list(self.split_fractions)
        return out

    def __post_init__(self):
        options.validate(self)
        if len(self.split_fractions) != 3 or sum(self.split_fractions) <= 0:
            raise ConvertError("--split_fractions takes three non-negative numbers: train,validation,test.")


def default_synthetic_dir(config: ConvertConfig) -> str:
    """Where ``--synthetic=N`` writes its images when --celeba_dir is not given: beside the shards."""
    parent = os.path.dirname(os.path.abspath(config.out_dir))
    return os.path.join(parent, f"synthetic_celeba_{config.synthetic}_seed{config.seed}")


def ensure_synthetic(directory: str, num_images: int, seed: int, workers: int) -> None:
    """Generates the synthetic CelebA into ``directory`` unless an identical one is already there.

    Its marker, synthetic.json, says which synthetic set a folder holds: a set made with other parameters
    is replaced (said on stderr). A folder with CelebA files and no marker may be the user's real CelebA:
    it is refused with a SyntheticError and left untouched.
    """
    from celeba_gender import synthetic

    marker = os.path.join(directory, "synthetic.json")
    wanted = {"num_images": num_images, "seed": seed, "version": celeba_gender.__version__}
    try:
        with open(marker) as f:
            previous = json.load(f)
    except (OSError, ValueError):  # missing or unreadable: proves nothing
        previous = None
    if previous == wanted:
        return
    if isinstance(previous, dict) and isinstance(previous.get("num_images"), int):
        unfinished = "unfinished " if previous.get("complete") is False else ""
        print(f"Replacing the {unfinished}synthetic CelebA in {directory} (num_images={previous['num_images']}, "
              f"seed={previous.get('seed')}) with num_images={num_images}, seed={seed}.", file=sys.stderr)
        synthetic.remove(directory, previous["num_images"])
    elif synthetic.holds_celeba_files(directory):
        raise synthetic.SyntheticError(
            f"{directory} holds CelebA images or annotation files but no synthetic.json, so it may be a real "
            "CelebA, which --synthetic never writes over: choose another --celeba_dir for --synthetic, or an "
            "empty folder.")
    os.makedirs(directory, exist_ok=True)
    with open(marker, "w") as f:  # before generating, so that an interrupted run's files are known as ours
        json.dump({**wanted, "complete": False}, f)
    synthetic.generate(directory, num_images, seed=seed, workers=workers)
    with open(marker, "w") as f:
        json.dump(wanted, f)


def check_out_dir(config: ConvertConfig) -> None:
    """Refuses, before any work, to mix shards made with other options into ``out_dir``."""
    try:
        previous = storage.find_manifest(config.out_dir)
    except storage.ManifestError:
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


def _drop(df: pd.DataFrame, mask: np.ndarray, reasons: list[str], details: list[str]) -> list[Dropped]:
    ids = df["image_id"].to_numpy()
    return [Dropped(ids[i], reasons[i], details[i]) for i in np.flatnonzero(mask)]


def _check_bad_fraction(bad: int, considered: int, what: str, config: ConvertConfig) -> str | None:
    if considered and bad / considered > config.max_bad_fraction:
        return (f"{bad:,} of {considered:,} {what} ({bad / considered:.1%}) are unusable, more than "
                f"--max_bad_fraction={config.max_bad_fraction:g}")
    return None


def _shard_items(part: pd.DataFrame, attribute_names: list[str], names: tuple[str, str]
                 ) -> list[tuple[str, records.ExampleFields]]:
    """(file path, record fields) for each planned row of one split, in order."""
    columns = zip(part["path"], part["image_id"], part["label"], part["sha256"], part["height"], part["width"],
                  part["identity"], part[attribute_names].to_numpy())
    return [(path, records.ExampleFields(filename=image_id, label=int(label), class_text=names[int(label)],
                                         sha256=sha, height=int(h), width=int(w), identity=int(identity),
                                         attributes=tuple(int(x) for x in attrs)))
            for path, image_id, label, sha, h, w, identity, attrs in columns]


def convert(config: ConvertConfig) -> dict:
    """Runs one conversion and returns its manifest (also written to ``out_dir/manifest.json``)."""
    workers = config.workers or parallel.default_workers()
    celeba_dir = config.celeba_dir
    if config.synthetic:
        celeba_dir = celeba_dir or default_synthetic_dir(config)
        ensure_synthetic(celeba_dir, config.synthetic, config.seed, workers)
    started = time.perf_counter()  # the conversion itself, without making synthetic data
    if not celeba_dir:
        raise ConvertError("--celeba_dir is required (the folder with list_attr_celeba.txt/.csv and "
                           "img_align_celeba/), or pass --synthetic=N to make a synthetic CelebA.")
    layout = detect_layout(celeba_dir)
    if config.split == "official" and layout.partition_file is None:
        raise CelebaError(f"--split=official needs list_eval_partition.txt (or .csv) in {layout.root}. "
                          "Add it, or use --split=identity (needs identity_CelebA.txt) or --split=seed.")
    if config.split == "identity" and layout.identity_file is None:
        raise CelebaError(f"--split=identity needs identity_CelebA.txt in {layout.root} (CelebA's "
                          "Anno/identity_CelebA.txt; Kaggle's copy lacks it). Or use --split=official.")
    table, dropped = read_celeba(layout)
    rows_in_file = len(table) + len(dropped)
    if table.empty:
        raise CelebaError(f"{layout.attr_file} has no usable rows ({len(dropped)} bad). See its format in README.md.")
    check_attribute(table, config.attribute)
    check_out_dir(config)
    problems = [_check_bad_fraction(len(dropped), rows_in_file, "attribute rows", config)]
    attribute_names = attribute_columns(table)
    table["label"] = table[config.attribute].astype(np.int64)

    seed_info, balanced_out = None, []
    if config.split == "seed":
        candidates, balanced_out, seed_info = curation.seed_split(table, config.limit, config.balance, config.seed)
    else:
        candidates = curation.sample_limit(table, config.limit, config.seed)

    bar = tqdm(total=len(candidates), desc="scan", unit="img", disable=not config.progress, smoothing=0.05)
    results = scan.scan_files(candidates["path"].tolist(), near=config.dedupe == "near", workers=workers,
                              progress=bar.update)
    bar.close()
    candidates = candidates.assign(
        sha256=[r.sha256 for r in results], nbytes=[r.nbytes for r in results],
        height=[r.height for r in results], width=[r.width for r in results], phash=[r.phash for r in results])
    bad = np.array([r.problem is not None for r in results], dtype=bool)
    dropped += _drop(candidates, bad, [r.problem for r in results], [r.detail for r in results])
    problems.append(_check_bad_fraction(int(bad.sum()), len(candidates), "image files", config))
    usable = candidates[~bad]

    plan, curated = _curate(config, usable, balanced_out)
    dropped += curated

    names = class_names(config.attribute)
    manifest = {
        "format_version": storage.FORMAT_VERSION,
        "status": storage.IN_PROGRESS,
        "created_by": f"celeba_gender {celeba_gender.__version__}",
        "source": {"dir": layout.root, "form": layout.form, "attribute_file": os.path.basename(layout.attr_file),
                   "rows": rows_in_file, "scanned": len(candidates), "synthetic": config.synthetic or None},
        "attribute": config.attribute,
        "class_names": list(names),
        "attribute_names": attribute_names,
        "options": config.plan_options(),
        "image_sizes": dict(collections.Counter(f"{h}x{w}" for h, w in zip(plan["height"], plan["width"]))),
        "splits": {},
        "dropped_counts": dict(sorted(collections.Counter(d.reason for d in dropped).items())),
        "dropped": [dataclasses.asdict(d) for d in sorted(dropped, key=lambda d: (d.reason, d.image_id))],
        "warnings": _straddling_copies(plan, config),
    }
    if seed_info is not None:
        by_name = lambda counts: {names[k]: v for k, v in counts.items()}  # noqa: E731
        seed_info["sampled_class_counts"] = by_name(seed_info["sampled_class_counts"])
        seed_info["split_class_counts"] = {s: by_name(c) for s, c in seed_info["split_class_counts"].items()}
        manifest["seed_protocol"] = seed_info
    failures = [p for p in problems if p]
    if failures or plan.empty:
        manifest["status"] = storage.FAILED
        os.makedirs(config.out_dir, exist_ok=True)
        storage.write_json(os.path.join(config.out_dir, storage.MANIFEST), manifest)
        where = os.path.join(config.out_dir, storage.MANIFEST)
        if failures:
            raise ConvertError("; ".join(failures) + f". Every bad row and its reason is listed in {where} "
                               "('dropped'). Fix or remove them, or raise --max_bad_fraction.")
        raise ConvertError(f"Nothing left to write: every row was dropped ({manifest['dropped_counts']}). "
                           f"See {where}.")

    specs = []
    for split in curation.SPLITS:
        part = plan[plan["split"] == split]
        items = _shard_items(part, attribute_names, names)
        n = writer.num_shards_for(len(part), int(part["nbytes"].sum()), config.num_shards, config.shard_mb)
        specs += writer.split_into_shards(split, items, n)
        counts = part["label"].value_counts()
        manifest["splits"][split] = {"count": len(part), "class_counts": {names[k]: int(counts.get(k, 0)) for k in (0, 1)},
                                     "num_shards": n, "bytes": 0, "shards": []}
    manifest["plan_fingerprint"] = writer.plan_fingerprint(config.plan_options(), specs)

    bar = tqdm(total=len(plan), desc="write", unit="img", disable=not config.progress, smoothing=0.05)
    manifest = writer.write_shards(specs, config.out_dir, manifest, workers, progress=bar.update)
    bar.close()
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def _curate(config: ConvertConfig, usable: pd.DataFrame, balanced_out: list[Dropped]
            ) -> tuple[pd.DataFrame, list[Dropped]]:
    """Duplicates, split and balance of the usable rows: the plan (rows with a ``split``) and what it drops."""
    deduped, dropped = curation.drop_duplicates(usable, config.dedupe, config.near_threshold)
    if config.split == "seed":
        # The draws saw every row, as the source's did; copies are resolved after them, so that no two copies
        # of an image can sit in different splits while the drawn ids stay the source's.
        return deduped, balanced_out + dropped
    if config.split == "official":
        plan, split_dropped = curation.official_split(deduped)
    else:
        plan, split_dropped = curation.identity_split(deduped, config.split_fractions, config.seed)
    dropped += split_dropped
    if config.balance:
        plan, bal_dropped = curation.balance_per_split(plan, config.seed)
        dropped += bal_dropped
    return curation.order_within_splits(plan, config.seed), dropped


def _straddling_copies(plan: pd.DataFrame, config: ConvertConfig) -> list[str]:
    """With --dedupe=none, says how many byte-identical copies ended up in different splits."""
    if config.dedupe != "none" or plan.empty:
        return []
    splits_per_hash = plan.groupby("sha256")["split"].nunique()
    n = int((splits_per_hash > 1).sum())
    return [f"{n} groups of byte-identical images are in more than one split (--dedupe=none): "
            "the test set sees training images."] if n else []


def format_summary(manifest: dict, out_dir: str) -> str:
    """The end-of-run table: per split images, classes, shards, MB; dropped rows by reason."""
    c0, c1 = manifest["class_names"]
    lines = [f"{'split':<11}{'images':>9}{c0:>10}{c1:>10}{'shards':>8}{'MB':>9}"]
    for split, info in manifest["splits"].items():
        cc = info["class_counts"]
        lines.append(f"{split:<11}{info['count']:>9,}{cc[c0]:>10,}{cc[c1]:>10,}{len(info['shards']):>8}"
                     f"{info['bytes'] / 2**20:>9.1f}")
    total = sum(i["count"] for i in manifest["splits"].values())
    lines.append(f"{'total':<11}{total:>9,}")
    if manifest["dropped_counts"]:
        lines.append("dropped: " + ", ".join(f"{k} {v:,}" for k, v in manifest["dropped_counts"].items())
                     + f"  (each listed in {os.path.join(out_dir, storage.MANIFEST)})")
    else:
        lines.append("dropped: none")
    if "seed_protocol" in manifest:
        sp = manifest["seed_protocol"]
        sampled = ", ".join(f"{v:,} {k}" for k, v in sp["sampled_class_counts"].items())
        drawn = " / ".join(f"{v:,}" for v in sp["split_sizes"].values())
        lines.append(f"seed protocol: sampled {sp['sampled']:,} ({sampled}), kept {sp['selected']:,} after "
                     f"balancing, drawn train / validation / test {drawn}")
    lines += [f"warning: {w}" for w in manifest.get("warnings", [])]
    if "seconds" in manifest:
        lines.append(f"{manifest['source']['scanned']:,} images scanned in {manifest['seconds']:.1f} s "
                     f"({manifest['source']['scanned'] / max(manifest['seconds'], 1e-9):,.0f} images/s); "
                     f"shards and manifest.json in {out_dir}")
    return "\n".join(lines)
