"""Files, local or remote, read and written safely: the one place paths are joined, JSON is written atomically
and a full disk becomes one line.

- Paths are local, or any ``tf.io.gfile`` URL (``gs://``, ``ram://``...). Local paths use plain Python I/O, so
  the converter, which must not import TensorFlow, can use this module; TensorFlow is imported only for URLs.
- JSON files (manifests, run records, reports) are written atomically: a temporary file, then a rename, so a
  reader never sees half of one, whatever kills the writer.
- A full disk (ENOSPC, or TensorFlow's file systems saying so) inside :func:`disk_space_for` becomes one
  :class:`DiskFullError` line saying what was being written and that finished work is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

from celeba_gender.core.errors import UserError

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
