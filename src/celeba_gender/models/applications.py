"""keras.applications backbones and their ImageNet weights, which must be found locally when offline.

Keras looks for ``$KERAS_HOME/models/<file>`` (default ``~/.keras/models``) before downloading, checks its
MD5, and *deletes* a file with the wrong hash before trying the download. We check first, so a user who
copied the wrong file gets told, and keeps the file.
"""

from __future__ import annotations

import hashlib
import os

import keras

from celeba_gender.core.errors import UserError

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


class WeightsError(UserError):
    """ImageNet (or local) weights that cannot be used; the message says where to put which file."""


def keras_models_dir() -> str:
    """Where Keras looks for weights: ``$KERAS_HOME/models``, else ``~/.keras/models`` (``/tmp/.keras`` when
    the home directory is read-only), as keras/src/backend/config.py decides."""
    if os.environ.get("KERAS_HOME"):
        return os.path.join(os.path.expanduser(os.environ["KERAS_HOME"]), "models")
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras", "models")


def md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_imagenet_file(arch: str, file_name: str, url_dir: str, file_md5: str) -> str:
    """Returns the local path of an arch's no-top ImageNet weights file, verified, or raises WeightsError.

    When the file is absent we still let Keras try the download (a connected machine gets it); callers
    turn the failure into :func:`missing_weights_message`.
    """
    path = os.path.join(keras_models_dir(), file_name)
    if os.path.exists(path):
        found = md5(path)
        if found != file_md5:
            raise WeightsError(f"{path} has MD5 {found}, not {file_md5}: it is not {arch}'s no-top ImageNet "
                               f"weights file (or it is incomplete). Download {WEIGHTS_URL}{url_dir}{file_name} "
                               "again and put it there.")
    return path


def missing_weights_message(arch: str, file_name: str, url_dir: str, file_md5: str, error: Exception) -> str:
    path = os.path.join(keras_models_dir(), file_name)
    return (f"--weights=imagenet for {arch} needs {file_name} (MD5 {file_md5}) and it could not be downloaded "
            f"({type(error).__name__}: {str(error)[:120]}). On a machine with internet, download "
            f"{WEIGHTS_URL}{url_dir}{file_name} and copy it to {path} (or to $KERAS_HOME/models/ after "
            "setting KERAS_HOME); or train from scratch with --weights=none.")


def build(constructor, input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """A keras.applications backbone without its classifier (``weights``: None, 'imagenet' or a path)."""
    return constructor(include_top=False, weights=weights, input_shape=input_shape)
