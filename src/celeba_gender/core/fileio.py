"""What lies on disk and how it is read and written: the one home of the on-disk formats.

- Paths are local, or any ``tf.io.gfile`` URL (``gs://``, ``ram://``...). Local paths use plain Python I/O, so
  the converter, which must not import TensorFlow, can use this module; TensorFlow is imported only for URLs.
- JSON files (manifests, run records, reports) are written atomically: a temporary file, then a rename, so a
  reader never sees half of one, whatever kills the writer.
- A shard directory holds ``{split}-{i:05d}-of-{n:05d}.tfrecord`` files (TF Model Garden's naming) and
  ``manifest.json``, which lists them. Readers take the manifest, not a glob, and check the files against it.

manifest.json (format_version 1)::

    {"format_version": 1, "status": "complete" | "in_progress" | "failed",
     "source": {...}, "attribute": "Male", "class_names": ["Female", "Male"],
     "attribute_names": [... every attribute column, the order of image/attributes ...],
     "options": {... the converter's options ...}, "plan_fingerprint": "<sha256>",
     "image_sizes": {"218x178": 43298},
     "splits": {"train": {"count": n, "class_counts": {"Female": a, "Male": b}, "bytes": n,
                          "shards": [{"file", "records", "bytes", "sha256"}, ...]}, ...},
     "dropped_counts": {"duplicate": 3, ...},
     "dropped": [{"image_id", "reason", "detail"}, ...]}
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

from celeba_gender.shards import tfrecord
from celeba_gender.core.errors import UserError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COMPLETE, IN_PROGRESS, FAILED = "complete", "in_progress", "failed"
SHARD_PATTERN = "*-of-*.tfrecord"


class DataError(UserError):
    """Shards that are missing, unfinished or disagree with their manifest, or data that cannot be used as
    asked; the message says what to do."""


class ManifestError(DataError):
    """A manifest.json that cannot be read or has an unknown format."""


class DiskFullError(UserError):
    """The disk filled up while writing; the message says what was being written, the space needed, and that
    finished work is intact."""


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # TensorFlow's C++ file systems (checkpoints, SavedModels, events) raise their own errors with the OS text.
    return type(error).__module__.startswith("tensorflow") and "No space left on device" in str(error)


def free_bytes(path: str) -> int | None:
    """Free space on the disk holding ``path`` (or its nearest existing parent); None for URLs."""
    if is_url(path):
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def disk_space_for(what: str, where: str, need_bytes: int | None = None, intact: str = "") -> Iterator[None]:
    """Turns a full disk inside the block into one :class:`DiskFullError` line: what was being written, where,
    the space free and needed, and ``intact`` (what finished work is kept); other errors pass through."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only a full disk is translated; anything else is re-raised
        if not _is_disk_full(e):
            raise
        free = free_bytes(where)
        room = f"{free / 2**20:,.0f} MB free" if free is not None else "no space left"
        if need_bytes:
            room += f", about {need_bytes / 2**20:,.0f} MB needed"
        raise DiskFullError(f"The disk is full: writing {what} in {where} failed ({room}). "
                            f"{intact + ' ' if intact else ''}Free some space and run the same command again."
                            ) from None


# --- paths, local or URL -----------------------------------------------------------------------------------

def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths, which go through tf.io.gfile."""
    return "://" in path


def _gfile():
    import tensorflow as tf  # only for URLs: local I/O must not load TensorFlow

    return tf.io.gfile


def join(directory: str, *names: str) -> str:
    """A path inside ``directory`` (``/``-joined for URLs)."""
    if is_url(directory):
        return "/".join([directory.rstrip("/"), *names])
    return os.path.join(directory, *names)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_url(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def read_text(path: str) -> str:
    if is_url(path):
        with _gfile().GFile(path, "r") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_bytes(path: str) -> bytes:
    if is_url(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file (PNG figures and the like)."""
    if is_url(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def size(path: str) -> int:
    return _gfile().stat(path).length if is_url(path) else os.path.getsize(path)


# --- JSON --------------------------------------------------------------------------------------------------

def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically: a temporary file beside ``path``, flushed to disk, renamed over it."""
    text = json.dumps(value, indent=1, default=str) + "\n"
    tmp = join(os.path.dirname(path) if not is_url(path) else path.rsplit("/", 1)[0],
               f".{os.path.basename(path)}.tmp-{os.getpid()}")
    if is_url(path):
        with _gfile().GFile(tmp, "w") as f:
            f.write(text)
        _gfile().rename(tmp, path, overwrite=True)
        return
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: str) -> Any | None:
    """A JSON file's value, or None when it is absent or unreadable."""
    if not exists(path):
        return None
    try:
        return json.loads(read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# --- shard directories -------------------------------------------------------------------------------------

def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00003-of-00016.tfrecord``: TF Model Garden's naming."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def is_shard_name(name: str) -> bool:
    return fnmatch.fnmatch(name, SHARD_PATTERN)


def local_shard_files(directory: str) -> list[str]:
    """Names of the shard files (by their naming) in a local directory."""
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if is_shard_name(n))


def parse_manifest(text: str, where: str) -> dict:
    """Parses and sanity-checks manifest text; ``where`` names the file in error messages."""
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where} is not valid JSON ({e}). Rerun make_tfrecords.py for this directory.")
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: unknown manifest format (expected format_version {FORMAT_VERSION}); "
                            "convert the data again with this version's make_tfrecords.py.")
    return manifest


def find_manifest(directory: str) -> dict | None:
    """The manifest of a shard directory in whatever state it is, or None when there is none."""
    path = join(directory, MANIFEST)
    if not exists(path):
        return None
    return parse_manifest(read_text(path), path)


def read_manifest(directory: str) -> dict:
    """The manifest of a finished shard directory (local or URL); DataError when there is none or the
    conversion did not finish."""
    manifest = find_manifest(directory)
    path = join(directory, MANIFEST)
    if manifest is None:
        raise DataError(f"No {MANIFEST} in {directory}: convert CelebA first "
                        f"(python make_tfrecords.py --out_dir={directory}) or pass the right --data_dir.")
    if manifest.get("status") != COMPLETE:
        raise DataError(f"{path} says the conversion is {manifest.get('status')!r}, not complete: run the same "
                        "make_tfrecords.py command again to finish it.")
    return manifest


def check_shards(directory: str, shards: list[dict], verify_counts: bool = True) -> None:
    """Every shard exists with the manifest's size and, for local files, its record count."""
    for entry in shards:
        path = join(directory, entry["file"])
        if not exists(path):
            raise DataError(f"Shard {path} listed in the manifest is missing. Rerun the make_tfrecords.py "
                            "command that made this directory: it rewrites only what is missing.")
        found_size = size(path)
        if found_size != entry["bytes"]:
            raise DataError(f"Shard {path} has {found_size:,} bytes but the manifest says {entry['bytes']:,}: it "
                            "was changed or truncated. Rerun make_tfrecords.py to rewrite it.")
        if verify_counts and not is_url(path):
            try:
                found = tfrecord.count_records(path)
            except ValueError as e:
                raise DataError(f"{e} Rerun make_tfrecords.py to rewrite it.") from None
            if found != entry["records"]:
                raise DataError(f"Shard {path} holds {found:,} records but the manifest says "
                                f"{entry['records']:,}. Rerun make_tfrecords.py to rewrite it.")


def stored_size(manifest: dict) -> tuple[int, int] | None:
    """(height, width) when every image of the shards has one size, else None."""
    sizes = list(manifest.get("image_sizes", {}))
    return tuple(int(x) for x in sizes[0].split("x")) if len(sizes) == 1 else None
