"""manifest.json: what a shard directory holds, written by the converter and checked by every reader.

Shape (format_version 1)::

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

import json
import os

FORMAT_VERSION = 1
FILENAME = "manifest.json"
COMPLETE, IN_PROGRESS, FAILED = "complete", "in_progress", "failed"


class ManifestError(ValueError):
    """A shard directory whose manifest is missing, unfinished or does not match its files."""


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00003-of-00016.tfrecord``: TF Model Garden's naming."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def write_atomic(directory: str, manifest: dict) -> None:
    """Writes manifest.json through a temporary file and a rename, so readers never see half of it."""
    path = os.path.join(directory, FILENAME)
    tmp = os.path.join(directory, f".{FILENAME}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse(text: str, where: str) -> dict:
    """Parses and sanity-checks manifest text; ``where`` names the file in error messages."""
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where} is not valid JSON ({e}). Rerun make_tfrecords.py for this directory.")
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: unknown manifest format (expected format_version {FORMAT_VERSION}); "
                            "convert the data again with this version's make_tfrecords.py.")
    return manifest


def read_local(directory: str) -> dict | None:
    """The manifest in a local directory, or None when there is none."""
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return parse(f.read(), path)
