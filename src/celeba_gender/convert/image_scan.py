"""Reads and checks every image file once, in parallel: exists, is a JPEG, decodes completely, its hashes.

The check decodes with Pillow's libjpeg-turbo, the same library family as ``tf.io.decode_jpeg``, so a file
that passes here decodes in the training pipeline. Pillow raises on truncated files (its default
``LOAD_TRUNCATED_IMAGES = False``), which is the usual way CelebA downloads get damaged.

Without ``--dedupe=near`` (which hashes the full image) the decode asks libjpeg for a 1/8-scale image: it
still reads and entropy-decodes every coefficient of the file, which is where truncated or broken data is
found, and skips only the full-size inverse DCT, upsampling and colour conversion, which cannot fail. That
halves the decode's cost (131 instead of 268 microseconds for a 178x218 image on the development machine); on
6,000 truncated or byte-flipped 178x218 JPEGs it rejected exactly the files the full decode rejects.

Before decoding, the image's size is read from its header (``Image.open`` reads nothing else): an image of
more than ``max_pixels`` pixels (``--max_pixels``, 40 megapixels by default, a thousand times a CelebA image
of 178x218 = 38,804 pixels) is skipped as ``too_large`` without being decoded, so a huge photo or a
decompression bomb (a few KB that decode to gigabytes) cannot exhaust the workers' memory. Pillow's own guard
(an error above 2 x ``Image.MAX_IMAGE_PIXELS``, about 179 megapixels) reports as ``too_large`` too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from collections.abc import Callable, Sequence

import imagehash
from PIL import Image

from celeba_gender.core import worker_pool

# Reasons a file is skipped (manifest "dropped" entries).
MISSING, UNREADABLE, NOT_JPEG, CORRUPT, UNSUPPORTED = "missing", "unreadable", "not_jpeg", "corrupt", "unsupported"
TOO_LARGE = "too_large"
# Default --max_pixels: 40 megapixels, a thousand CelebA images (178x218 = 38,804 pixels); an RGB image of
# this size decodes to 120 MB, which a worker can afford.
MAX_PIXELS = 40_000_000
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


def check_jpeg(data: bytes, near: bool = False, max_pixels: int = MAX_PIXELS) -> ScanResult:
    """Checks bytes that should be a JPEG: magic number, size from the header (at most ``max_pixels``),
    full decode, colour mode; hashes them."""
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
                if im.width * im.height > max_pixels:  # from the header alone: nothing decoded yet
                    return ScanResult(TOO_LARGE, f"{im.width}x{im.height} = {im.width * im.height:,} pixels, more "
                                      f"than --max_pixels={max_pixels:,}", sha, len(data))
                height, width = im.height, im.width
                if not near:  # every coefficient is still decoded (module docstring)
                    im.draft(im.mode, ((width + 7) // 8, (height + 7) // 8))
                im.load()  # raises on truncated or broken entropy-coded data
                if im.mode not in DECODABLE_MODES:
                    return ScanResult(UNSUPPORTED, f"{im.mode} JPEG (tf.io.decode_jpeg needs RGB or grey)",
                                      sha, len(data))
                phash = str(imagehash.phash(im, hash_size=PHASH_SIZE)) if near else ""
                return ScanResult(None, "", sha, len(data), height, width, phash)
    except Image.DecompressionBombError as e:  # Pillow's own limit, checked while reading the header
        return ScanResult(TOO_LARGE, str(e), sha, len(data))
    except (OSError, SyntaxError, ValueError) as e:
        return ScanResult(CORRUPT, f"does not decode: {e}", sha, len(data))


def scan_file(path: str, near: bool = False, max_pixels: int = MAX_PIXELS) -> ScanResult:
    """Reads ``path`` and checks it with :func:`check_jpeg`; a missing or unreadable file is a result too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ScanResult(MISSING, "no such file")
    except OSError as e:  # a directory, no permission, an I/O error
        return ScanResult(UNREADABLE, f"cannot be read: {e.strerror or e}")
    return check_jpeg(data, near, max_pixels)


def _scan_chunk(args: tuple[Sequence[str], bool, int]) -> list[ScanResult]:
    paths, near, max_pixels = args
    return [scan_file(p, near, max_pixels) for p in paths]


def scan_files(paths: Sequence[str], near: bool = False, workers: int = 1, chunk: int = 256,
               progress: Callable[[int], None] | None = None, max_pixels: int = MAX_PIXELS) -> list[ScanResult]:
    """Scans ``paths`` in ``workers`` processes; results come back in the order of ``paths``."""
    chunks = [(paths[i:i + chunk], near, max_pixels) for i in range(0, len(paths), chunk)]
    results: list[ScanResult] = []
    for part in worker_pool.imap(_scan_chunk, chunks, workers):
        results.extend(part)
        if progress is not None:
            progress(len(part))
    return results
