"""Writes a plan into TFRecord shards: in parallel processes, atomically, resumably; keeps manifest.json.

Atomic: a shard is written under a temporary name and renamed when complete (:class:`ShardWriter`).
Resumable: after each finished shard the manifest (status ``in_progress``) records its checksum and its
``key``, a checksum of what the shard should hold (:func:`shard_key`); a rerun keeps every shard whose key is
the one it plans and whose file still has that checksum, and writes only the rest, so an interrupted run
(Ctrl-C, kill -9, a full disk) ends with exactly the files a clean run makes, and a finished run's rerun
writes nothing. Keys are per shard, so when one image changes, only the shard that holds it is rewritten.

A full disk (ENOSPC) while writing a shard or the manifest, in this process or a worker, ends in one
:class:`core.fileio.DiskFullError` line saying what was being written, the space needed and that finished shards
are intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence

from celeba_gender.core import worker_pool, fileio

from celeba_gender.shards import shard_dir
from celeba_gender.shards import schema, tfrecord
from celeba_gender.core.errors import UserError


class ChangedFileError(UserError):
    """An image file changed between the scan and the write."""


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One shard to write: which split, its index, and the (file path, record fields) it holds."""

    split: str
    index: int
    num_shards: int
    items: tuple[tuple[str, schema.ExampleFields], ...]

    @property
    def file(self) -> str:
        return shard_dir.shard_name(self.split, self.index, self.num_shards)


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
        framed = tfrecord.frame_record(serialized)
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


def split_into_shards(split: str, items: Sequence[tuple[str, schema.ExampleFields]], n: int) -> list[ShardSpec]:
    """Cuts a split's ordered items into ``n`` contiguous shards whose sizes differ by at most one."""
    bounds = [round(i * len(items) / n) for i in range(n + 1)] if n else [0]
    return [ShardSpec(split, i, n, tuple(items[bounds[i]:bounds[i + 1]])) for i in range(n)]


def shard_key(options: dict, spec: ShardSpec) -> str:
    """A checksum of everything that decides one shard's bytes: options, its name, each record's content."""
    sha = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    sha.update(spec.file.encode())
    for _, f in spec.items:
        sha.update(f"{f.filename}|{f.sha256}|{f.label}|{f.identity}|{list(f.attributes)}\n".encode())
    return sha.hexdigest()


def plan_fingerprint(keys: Sequence[str]) -> str:
    """A checksum of the whole plan: every shard's key (:func:`shard_key`), in order."""
    return hashlib.sha256("".join(keys).encode()).hexdigest()


def write_shard(job: tuple[ShardSpec, str, str]) -> dict:
    """Writes one shard (in a worker process) and returns its manifest entry.

    Errors cross the process pool by pickling, so they must rebuild from their arguments: OSError (a full
    disk included) and one-message UserErrors such as ChangedFileError do.
    """
    spec, out_dir, key = job
    writer = ShardWriter(os.path.join(out_dir, spec.file))
    try:
        for path, fields in spec.items:
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != fields.sha256:
                raise ChangedFileError(f"{path} changed while the conversion ran (its sha256 is not the one "
                                       "scanned): run the same command again; finished shards are kept.")
            writer.write(schema.encode_example(data, fields))
        sha = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return {"file": spec.file, "records": writer.records, "bytes": writer.bytes, "sha256": sha, "key": key}


def remove_temporary_files(out_dir: str) -> None:
    """Deletes what interrupted runs left half-written (never a complete shard)."""
    for path in glob.glob(os.path.join(out_dir, f".*{TMP_MARK}*")):
        os.remove(path)


def remove_shards(out_dir: str, keep: set[str] = frozenset()) -> None:
    """Deletes shard files (by the converter's naming) that are not in ``keep``."""
    for name in shard_dir.local_shard_files(out_dir):
        if name not in keep:
            os.remove(os.path.join(out_dir, name))


def reusable_shards(out_dir: str, previous: dict | None, keys: dict[str, str]) -> dict[str, dict]:
    """Entries of a previous manifest whose shard is planned again with the same key ({file: key}) and whose
    file still has the recorded checksum."""
    reusable = {}
    for split in (previous or {}).get("splits", {}).values():
        for entry in split.get("shards", []):
            path = os.path.join(out_dir, entry["file"])
            if (entry.get("key") is not None and keys.get(entry["file"]) == entry["key"] and os.path.exists(path)
                    and file_sha256(path) == entry["sha256"]):
                reusable[entry["file"]] = entry
    return reusable


def _estimated_bytes(specs: Sequence[ShardSpec]) -> int:
    """About what ``specs`` take on disk: their images plus the records' own bytes (framing, fields)."""
    total = 0
    for spec in specs:
        for path, _ in spec.items:
            try:
                total += os.path.getsize(path) + 400
            except OSError:
                pass
    return total


@contextlib.contextmanager
def _full_disk(what: str, out_dir: str, specs: Sequence[ShardSpec], saved: set[str]) -> Iterator[None]:
    """A full disk inside the block -> core.fileio.DiskFullError (one line). ``saved``: the shards the manifest
    on disk lists (what a rerun keeps). The space still needed is summed only then (it stats every image
    left to write)."""
    try:
        yield
    except OSError as e:
        left = [s for s in specs if s.file not in saved]
        intact = (f"The finished shards ({len(saved)} of {len(specs)}) are intact and are kept by the rerun."
                  if saved else "No shard was finished yet.")
        with fileio.disk_space_for(what, out_dir, _estimated_bytes(left) + 2**20, intact):
            raise e


def write_shards(specs: Sequence[ShardSpec], out_dir: str, manifest: dict, workers: int,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Writes every shard of ``specs`` not already present, keeping ``manifest`` (a dict whose ``splits``
    have counts but no shard lists yet) up to date on disk; returns the completed manifest, with its
    ``plan_fingerprint``, and ``shards_kept`` and ``shards_written`` saying what this run did.

    While shards are being written, manifest.json is rewritten after each one but without the list of dropped
    images, which comes with the finished manifest: for CelebA that list is 3 MB of JSON, and serialising it
    after every shard took the parent process seconds that the workers needed.
    """
    os.makedirs(out_dir, exist_ok=True)
    remove_temporary_files(out_dir)
    options = manifest["options"]
    keys = {s.file: shard_key(options, s) for s in specs}
    manifest["plan_fingerprint"] = plan_fingerprint(list(keys.values()))
    done = reusable_shards(out_dir, shard_dir.find_manifest(out_dir), keys)
    remove_shards(out_dir, keep=set(done))
    manifest.update(status=shard_dir.IN_PROGRESS, shards_kept=len(done), shards_written=0)
    manifest_path = os.path.join(out_dir, shard_dir.MANIFEST)
    saved: set[str] = set()  # the shards listed by the manifest on disk

    def save() -> None:
        finished = manifest["status"] == shard_dir.COMPLETE
        with _full_disk(shard_dir.MANIFEST, out_dir, specs, saved):
            fileio.write_json(manifest_path, manifest if finished else
                              {k: v for k, v in manifest.items() if k != "dropped"})
        saved.update(done)

    def record(entry: dict) -> None:
        done[entry["file"]] = entry
        for split, info in manifest["splits"].items():
            info["shards"] = [done[s.file] for s in specs if s.split == split and s.file in done]

    record_sizes = {s.file: len(s.items) for s in specs}
    for entry in list(done.values()):
        record(entry)
        if progress:
            progress(record_sizes[entry["file"]])
    save()
    # Largest shards first, so the last worker to finish is not the one holding the biggest file.
    todo = sorted(((s, out_dir, keys[s.file]) for s in specs if s.file not in done), key=lambda j: -len(j[0].items))
    try:
        with _full_disk("TFRecord shards", out_dir, specs, saved):
            for entry in worker_pool.imap(write_shard, todo, workers, ordered=False):
                record(entry)
                manifest["shards_written"] += 1
                save()
                if progress:
                    progress(entry["records"])
    except fileio.DiskFullError:
        remove_temporary_files(out_dir)  # the pool has stopped: give back the space half-written shards hold
        raise
    manifest["status"] = shard_dir.COMPLETE
    for info in manifest["splits"].values():
        info["bytes"] = sum(e["bytes"] for e in info["shards"])
    save()
    return manifest
