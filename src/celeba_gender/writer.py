"""Writes a plan into TFRecord shards: in parallel processes, atomically, resumably; keeps manifest.json.

Atomic: a shard is written under a temporary name and renamed when complete (:class:`ShardWriter`).
Resumable: after each finished shard the manifest (status ``in_progress``) records its checksum; a rerun
with the same plan keeps every shard whose file still has that checksum and writes only the rest, so an
interrupted run (Ctrl-C, kill -9) ends with exactly the files a clean run makes.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence

from celeba_gender import parallel, records, storage, tfrecord_file
from celeba_gender.errors import UserError


class ChangedFileError(UserError):
    """An image file changed between the scan and the write."""


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One shard to write: which split, its index, and the (file path, record fields) it holds."""

    split: str
    index: int
    num_shards: int
    items: tuple[tuple[str, records.ExampleFields], ...]

    @property
    def file(self) -> str:
        return storage.shard_name(self.split, self.index, self.num_shards)


class ShardWriter:
    """Writes framed records to ``path`` through a temporary name; :meth:`commit` renames it into place.

    The sha256 of the file is computed while writing, so the manifest's checksum costs no second read.
    A writer that is not committed (an exception, Ctrl-C, kill -9) leaves only a temporary file, which the
    next run removes: a file with the final name is always complete.
    """

    def __init__(self, path: str):
        self.path = path
        self.tmp_path = temporary_name(path)
        self._file = open(self.tmp_path, "wb")
        self._sha = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    def write(self, serialized: bytes) -> None:
        framed = tfrecord_file.frame_record(serialized)
        self._file.write(framed)
        self._sha.update(framed)
        self.records += 1
        self.bytes += len(framed)

    def commit(self) -> str:
        """Flushes to disk, renames to the final name and returns the file's sha256."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._file.close()
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)


TMP_MARK = ".tmp-"


def temporary_name(path: str) -> str:
    """Where a shard is written before it is complete: hidden, and tagged with the writing process."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{TMP_MARK}{os.getpid()}")


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def num_shards_for(count: int, nbytes: int, num_shards: int, shard_mb: float, min_shards: int = 8) -> int:
    """Shards for a split: ``num_shards`` when set, else enough for ``shard_mb`` each, and at least
    ``min_shards`` (so up to that many input pipelines or workers can each read their own files), but
    never more shards than records.
    """
    if count == 0:
        return 0
    wanted = num_shards if num_shards > 0 else max(min_shards, math.ceil(nbytes / (shard_mb * 2**20)))
    return max(1, min(wanted, count))


def split_into_shards(split: str, items: Sequence[tuple[str, records.ExampleFields]], n: int) -> list[ShardSpec]:
    """Cuts a split's ordered items into ``n`` contiguous shards whose sizes differ by at most one."""
    bounds = [round(i * len(items) / n) for i in range(n + 1)] if n else [0]
    return [ShardSpec(split, i, n, tuple(items[bounds[i]:bounds[i + 1]])) for i in range(n)]


def plan_fingerprint(options: dict, specs: Sequence[ShardSpec]) -> str:
    """A checksum of everything that decides the shards' bytes: options, and each record's content key."""
    sha = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for spec in specs:
        sha.update(spec.file.encode())
        for _, f in spec.items:
            sha.update(f"{f.filename}|{f.sha256}|{f.label}|{f.identity}|{list(f.attributes)}\n".encode())
    return sha.hexdigest()


def write_shard(job: tuple[ShardSpec, str]) -> dict:
    """Writes one shard (in a worker process) and returns its manifest entry."""
    spec, out_dir = job
    writer = ShardWriter(os.path.join(out_dir, spec.file))
    try:
        for path, fields in spec.items:
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != fields.sha256:
                raise ChangedFileError(f"{path} changed while the conversion ran (its sha256 is not the one "
                                       "scanned): run the same command again; finished shards are kept.")
            writer.write(records.encode_example(data, fields))
        sha = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return {"file": spec.file, "records": writer.records, "bytes": writer.bytes, "sha256": sha}


def remove_temporary_files(out_dir: str) -> None:
    """Deletes what interrupted runs left half-written (never a complete shard)."""
    for path in glob.glob(os.path.join(out_dir, f".*{TMP_MARK}*")):
        os.remove(path)


def remove_shards(out_dir: str, keep: set[str] = frozenset()) -> None:
    """Deletes shard files (by the converter's naming) that are not in ``keep``."""
    for name in storage.local_shard_files(out_dir):
        if name not in keep:
            os.remove(os.path.join(out_dir, name))


def reusable_shards(out_dir: str, previous: dict | None, fingerprint: str) -> dict[str, dict]:
    """Entries of a previous manifest for the same plan whose files still have the recorded checksum."""
    if not previous or previous.get("plan_fingerprint") != fingerprint:
        return {}
    reusable = {}
    for split in previous.get("splits", {}).values():
        for entry in split.get("shards", []):
            path = os.path.join(out_dir, entry["file"])
            if os.path.exists(path) and file_sha256(path) == entry["sha256"]:
                reusable[entry["file"]] = entry
    return reusable


def write_shards(specs: Sequence[ShardSpec], out_dir: str, manifest: dict, workers: int,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Writes every shard of ``specs`` not already present, keeping ``manifest`` (a dict whose ``splits``
    have counts but no shard lists yet) up to date on disk; returns the completed manifest.
    """
    os.makedirs(out_dir, exist_ok=True)
    remove_temporary_files(out_dir)
    done = reusable_shards(out_dir, storage.find_manifest(out_dir), manifest["plan_fingerprint"])
    remove_shards(out_dir, keep=set(done))
    manifest["status"] = storage.IN_PROGRESS

    def record(entry: dict) -> None:
        done[entry["file"]] = entry
        for split, info in manifest["splits"].items():
            info["shards"] = [done[s.file] for s in specs if s.split == split and s.file in done]
        storage.write_json(os.path.join(out_dir, storage.MANIFEST), manifest)

    record_sizes = {s.file: len(s.items) for s in specs}
    for entry in list(done.values()):
        record(entry)
        if progress:
            progress(record_sizes[entry["file"]])
    todo = [(s, out_dir) for s in specs if s.file not in done]
    if not done:
        storage.write_json(os.path.join(out_dir, storage.MANIFEST), manifest)
    # Largest shards first, so the last worker to finish is not the one holding the biggest file.
    todo.sort(key=lambda job: -len(job[0].items))
    for entry in parallel.imap(write_shard, todo, workers, ordered=False):
        record(entry)
        if progress:
            progress(entry["records"])
    manifest["status"] = storage.COMPLETE
    for info in manifest["splits"].values():
        info["bytes"] = sum(e["bytes"] for e in info["shards"])
    storage.write_json(os.path.join(out_dir, storage.MANIFEST), manifest)
    return manifest
