"""Where CelebA is when ``--celeba_dir`` is not given, and ``--download`` through Kaggle's own client.

The search order (also in the flag's help and the README), first match wins:

1. ``--celeba_dir`` when given (no search);
2. the ``CELEBA_DIR`` environment variable when set (no search either: a setting that is wrong is an error);
3. ``data/celeba`` under the current folder (``.gitignore`` reserves ``data/``);
4. the copy that ``kagglehub.dataset_download("jessicali9530/celeba-dataset")`` left in kagglehub's cache:
   ``$KAGGLEHUB_CACHE`` (kagglehub's own variable), by default ``~/.cache/kagglehub``, then
   ``datasets/jessicali9530/celeba-dataset/versions/<n>/``; the newest version kagglehub marked complete
   (its ``<n>.complete`` file beside ``versions/``) is used. This is the layout of kagglehub 0.3 to 1.0
   (``kagglehub/cache.py``).

A folder holds CelebA when :func:`celeba.detect_layout` accepts it. When nothing does, one
:class:`CelebaNotFoundError` lists the places looked at and the ways to get CelebA.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from celeba_gender.convert.celeba import CelebaError, detect_layout

# The Kaggle release the source study used (Kaggle's layout: CSV annotations, nested image folder).
KAGGLE_HANDLE = "jessicali9530/celeba-dataset"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"
ENV_VAR = "CELEBA_DIR"
DEFAULT_DIR = os.path.join("data", "celeba")
KAGGLEHUB_CACHE_VAR = "KAGGLEHUB_CACHE"  # kagglehub/config.py: CACHE_FOLDER_ENV_VAR_NAME
GET_CELEBA = (f"Get CelebA: unpack Kaggle's archive ({KAGGLE_URL}) or the original img_align_celeba.zip with "
              f"its annotation files into {DEFAULT_DIR}, or set {ENV_VAR}, or pass --celeba_dir=<folder>; or "
              "pass --download to fetch the Kaggle release with kagglehub (needs Kaggle credentials); or "
              "--synthetic=N to try the engine on N synthetic faces.")


class CelebaNotFoundError(CelebaError):
    """No CelebA where the converter looked; the message lists the places and the ways to get it."""


class DownloadError(CelebaError):
    """``--download`` failed; the message says why, where credentials go, and the manual way."""


@dataclasses.dataclass(frozen=True)
class Found:
    """A CelebA folder and how it was found (for the note on stderr)."""

    path: str
    how: str


def kagglehub_dataset_dir(environ: Mapping[str, str] = os.environ) -> str:
    """``<kagglehub cache>/datasets/jessicali9530/celeba-dataset``, where kagglehub keeps its versions."""
    cache = environ.get(KAGGLEHUB_CACHE_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "kagglehub")
    return os.path.join(cache, "datasets", *KAGGLE_HANDLE.split("/"))


def kagglehub_versions(environ: Mapping[str, str] = os.environ) -> list[tuple[int, str]]:
    """(version, folder) of every version kagglehub finished downloading, newest first."""
    base = kagglehub_dataset_dir(environ)
    try:
        names = os.listdir(os.path.join(base, "versions"))
    except OSError:
        return []
    versions = sorted((int(n) for n in names if re.fullmatch(r"\d+", n)), reverse=True)
    # kagglehub writes <n>.complete only after extracting the whole archive: without it, a download broke off.
    return [(v, os.path.join(base, "versions", str(v))) for v in versions
            if os.path.isfile(os.path.join(base, f"{v}.complete"))]


def _why_not(path: str) -> str | None:
    """None when ``path`` holds CelebA, else the reason it does not."""
    try:
        detect_layout(path)
    except CelebaError as e:
        return "missing" if not os.path.isdir(path) else str(e)
    return None


def locate(celeba_dir: str | None, environ: Mapping[str, str] = os.environ) -> Found:
    """The CelebA folder to convert (module docstring: the search order)."""
    if celeba_dir:
        return Found(celeba_dir, "--celeba_dir")
    if environ.get(ENV_VAR):
        path = os.path.expanduser(environ[ENV_VAR])
        why = _why_not(path)
        if why is not None:
            raise CelebaNotFoundError(f"${ENV_VAR}={environ[ENV_VAR]} does not hold CelebA ({why}). Point it at the "
                                      f"folder holding list_attr_celeba.txt (or .csv) and img_align_celeba/, or "
                                      f"unset it to search ./{DEFAULT_DIR} and kagglehub's cache.")
        return Found(path, f"${ENV_VAR}")
    looked = []
    default = os.path.abspath(DEFAULT_DIR)
    why = _why_not(default)
    if why is None:
        return Found(default, f"the default folder ./{DEFAULT_DIR}")
    looked.append(f"./{DEFAULT_DIR} ({why})")
    base = kagglehub_dataset_dir(environ)
    for version, path in kagglehub_versions(environ):
        if _why_not(path) is None:
            return Found(path, f"kagglehub's cache, {KAGGLE_HANDLE} version {version}")
    cache_from = f"${KAGGLEHUB_CACHE_VAR}" if environ.get(KAGGLEHUB_CACHE_VAR) else "kagglehub's default cache"
    looked.append(f"{base}/versions/<n>/ ({cache_from}: no complete download)")
    raise CelebaNotFoundError(f"No CelebA found: --celeba_dir and ${ENV_VAR} are not set, and none is in "
                              f"{' or '.join(looked)}. {GET_CELEBA}")


def download() -> Found:
    """Kaggle's CelebA through ``kagglehub.dataset_download`` (into kagglehub's cache, about 1.4 GB).

    A version that kagglehub already finished is asked for by its number, which kagglehub serves from its
    cache without contacting Kaggle (an unversioned handle always asks Kaggle for the latest version first).
    """
    try:
        import kagglehub
    except ImportError:
        raise DownloadError("--download needs the kagglehub package: pip install kagglehub (or reinstall this "
                            "project, which requires it).") from None
    cached = kagglehub_versions()  # the cache kagglehub itself uses: it reads the same variable
    handle = f"{KAGGLE_HANDLE}/versions/{cached[0][0]}" if cached else KAGGLE_HANDLE
    try:
        path = kagglehub.dataset_download(handle)
    except Exception as e:  # noqa: BLE001 - network, credentials, HTTP: all end in one line with the way out
        raise DownloadError(
            f"Downloading {KAGGLE_HANDLE} from Kaggle with kagglehub failed: {_reason(e)}. kagglehub needs "
            "internet access and your Kaggle credentials, in ~/.kaggle/kaggle.json or the KAGGLE_USERNAME and "
            f"KAGGLE_KEY environment variables (an API token from kaggle.com > Settings). Or download the archive "
            f"by hand from {KAGGLE_URL}, unpack it into {DEFAULT_DIR} (or pass --celeba_dir), and run again "
            "without --download.") from None
    why = _why_not(path)
    if why is not None:
        raise DownloadError(f"kagglehub's copy of {KAGGLE_HANDLE} in {path} is not CelebA as expected: {why}")
    return Found(path, f"kagglehub's cache, {handle}")


def _reason(error: Exception) -> str:
    """The first line of an exception, with its type; what kagglehub or requests say can be very long."""
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
