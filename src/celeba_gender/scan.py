"""Reads and checks every image file once, in parallel: exists, is a JPEG, decodes fully, its hashes.

The check decodes with Pillow's libjpeg-turbo, the same library family as ``tf.io.decode_jpeg``, so a file
that passes here decodes in the training pipeline. Pillow raises on truncated files (its default
``LOAD_TRUNCATED_IMAGES = False``), which is the usual way CelebA downloads get damaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from collections.abc import Callable, Sequence

import imagehash
from PIL import Image

from celeba_gender import parallel

# Reasons a file is skipped (manifest "dropped" entries).
MISSING, UNREADABLE, NOT_JPEG, CORRUPT, UNSUPPORTED = "missing", "unreadable", "not_jpeg", "corrupt", "unsupported"
JPEG_MAGIC = b"\xff\xd8\xff"
# Modes tf.io.decode_jpeg(channels=3) can turn into RGB; CMYK/YCCK JPEGs it cannot.
DECODABLE_MODES = ("RGB", "L")
# pHash side: 16 gives 256-bit hashes. Aligned faces all look alike to the usual 64-bit hash (different
# synthetic faces came within 4 bits of each other); at 256 bits re-encoded copies stay within a few bits
# while different photos of one person are dozens apart.
PHASH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """What is known about one file after reading it: ``problem`` is None for a usable JPEG."""

    problem: str | None
    detail: str = ""
    sha256: str = ""
    nbytes: int = 0
    height: int = 0
    width: int = 0
    phash: str = ""  # 256-bit perceptual hash as hex; "" when not computed


def check_jpeg(data: bytes, near: bool = False) -> ScanResult:
    """Checks bytes that should be a JPEG: magic number, full decode, colour mode; hashes them."""
    sha = hashlib.sha256(data).hexdigest()
    if not data.startswith(JPEG_MAGIC):
        kind = "empty file" if not data else f"starts with {data[:8]!r}"
        return ScanResult(NOT_JPEG, f"not a JPEG file ({kind})", sha, len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning: the error path reports it
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG":
                    return ScanResult(NOT_JPEG, f"decodes as {im.format}, not JPEG", sha, len(data))
                im.load()  # the full decode: raises on truncated or broken entropy-coded data
                if im.mode not in DECODABLE_MODES:
                    return ScanResult(UNSUPPORTED, f"{im.mode} JPEG (tf.io.decode_jpeg needs RGB or grey)",
                                      sha, len(data))
                phash = str(imagehash.phash(im, hash_size=PHASH_SIZE)) if near else ""
                return ScanResult(None, "", sha, len(data), im.height, im.width, phash)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return ScanResult(CORRUPT, f"does not decode: {e}", sha, len(data))


def scan_file(path: str, near: bool = False) -> ScanResult:
    """Reads ``path`` and checks it with :func:`check_jpeg`; a missing or unreadable file is a result too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ScanResult(MISSING, "no such file")
    except OSError as e:  # a directory, no permission, an I/O error
        return ScanResult(UNREADABLE, f"cannot be read: {e.strerror or e}")
    return check_jpeg(data, near)


def _scan_chunk(args: tuple[Sequence[str], bool]) -> list[ScanResult]:
    paths, near = args
    return [scan_file(p, near) for p in paths]


def scan_files(paths: Sequence[str], near: bool = False, workers: int = 1, chunk: int = 256,
               progress: Callable[[int], None] | None = None) -> list[ScanResult]:
    """Scans ``paths`` in ``workers`` processes; results come back in the order of ``paths``."""
    chunks = [(paths[i:i + chunk], near) for i in range(0, len(paths), chunk)]
    results: list[ScanResult] = []
    for part in parallel.imap(_scan_chunk, chunks, workers):
        results.extend(part)
        if progress is not None:
            progress(len(part))
    return results
