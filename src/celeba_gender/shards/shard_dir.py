"""A shard directory: the converter's output and the input pipeline's source (the on-disk contract).

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

import fnmatch
import json
import os

from celeba_gender.core.errors import UserError
from celeba_gender.core import fileio
from celeba_gender.core.invocation import command
from celeba_gender.shards import tfrecord

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COMPLETE, IN_PROGRESS, FAILED = "complete", "in_progress", "failed"
SHARD_PATTERN = "*-of-*.tfrecord"


class DataError(UserError):
    """Shards that are missing, unfinished or disagree with their manifest, or data that cannot be used as
    asked; the message says what to do."""


class ManifestError(DataError):
    """A manifest.json that cannot be read or has an unknown format."""


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
        raise ManifestError(f"{where} is not valid JSON ({e}). Rerun {command('make_tfrecords')} for this "
                            "directory.")
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{where}: unknown manifest format (expected format_version {FORMAT_VERSION}); "
                            f"convert the data again with this version's {command('make_tfrecords')}.")
    return manifest


def find_manifest(directory: str) -> dict | None:
    """The manifest of a shard directory in whatever state it is, or None when there is none."""
    path = fileio.join(directory, MANIFEST)
    if not fileio.exists(path):
        return None
    return parse_manifest(fileio.read_text(path), path)


def read_manifest(directory: str) -> dict:
    """The manifest of a finished shard directory (local or URL); DataError when there is none or the
    conversion did not finish."""
    manifest = find_manifest(directory)
    path = fileio.join(directory, MANIFEST)
    if manifest is None:
        raise DataError(f"No {MANIFEST} in {directory}: convert CelebA first "
                        f"({command('make_tfrecords')} --out_dir={directory}) or pass the right --data_dir.")
    if manifest.get("status") != COMPLETE:
        raise DataError(f"{path} says the conversion is {manifest.get('status')!r}, not complete: run the same "
                        f"{command('make_tfrecords')} command again to finish it.")
    return manifest


def check_shards(directory: str, shards: list[dict], verify_counts: bool = True) -> None:
    """Every shard exists with the manifest's size and, for local files, its record count."""
    for entry in shards:
        path = fileio.join(directory, entry["file"])
        if not fileio.exists(path):
            raise DataError(f"Shard {path} listed in the manifest is missing. Rerun the {command('make_tfrecords')} "
                            "command that made this directory: it rewrites only what is missing.")
        found_size = fileio.size(path)
        if found_size != entry["bytes"]:
            raise DataError(f"Shard {path} has {found_size:,} bytes but the manifest says {entry['bytes']:,}: it "
                            f"was changed or truncated. Rerun {command('make_tfrecords')} to rewrite it.")
        if verify_counts and not fileio.is_url(path):
            try:
                found = tfrecord.count_records(path)
            except ValueError as e:
                raise DataError(f"{e} Rerun {command('make_tfrecords')} to rewrite it.") from None
            if found != entry["records"]:
                raise DataError(f"Shard {path} holds {found:,} records but the manifest says "
                                f"{entry['records']:,}. Rerun {command('make_tfrecords')} to rewrite it.")


def stored_size(manifest: dict) -> tuple[int, int] | None:
    """(height, width) when every image of the shards has one size, else None."""
    sizes = list(manifest.get("image_sizes", {}))
    return tuple(int(x) for x in sizes[0].split("x")) if len(sizes) == 1 else None
