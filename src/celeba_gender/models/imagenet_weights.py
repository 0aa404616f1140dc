"""The ImageNet weights files of the keras.applications backbones: where Keras looks for them, their check, and
their download before TensorFlow is imported. No TensorFlow here.

Keras looks for ``$KERAS_HOME/models/<file>`` (default ``~/.keras/models``) before downloading, checks its MD5,
and *deletes* a file with the wrong hash before trying the download. We check first, so a user who copied the
wrong file is told so and keeps the file. ``train.py`` fetches the file before it starts TensorFlow: a machine
without internet is told in a second which file to copy where, instead of after TensorFlow's start-up and the
input pipeline's; a connected one downloads it once into the same place Keras would have, where Keras finds it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request

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
    """The file's MD5, the hash keras.applications publishes for its weights files."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_file(arch: str, file_name: str, url_dir: str, file_md5: str) -> str:
    """The local path of an arch's no-top ImageNet weights file; raises WeightsError when a file is there with
    the wrong MD5. An absent file is not an error here (:func:`fetch` or Keras downloads it)."""
    path = os.path.join(keras_models_dir(), file_name)
    if os.path.exists(path):
        found = md5(path)
        if found != file_md5:
            raise WeightsError(f"{path} has MD5 {found}, not {file_md5}: it is not {arch}'s no-top ImageNet "
                               f"weights file (or it is incomplete). Download {WEIGHTS_URL}{url_dir}{file_name} "
                               "again and put it there.")
    return path


def missing_message(arch: str, file_name: str, url_dir: str, file_md5: str, error: Exception) -> str:
    """The one line for weights that could not be downloaded: the file, its MD5, its URL and where to copy it."""
    path = os.path.join(keras_models_dir(), file_name)
    return (f"--weights=imagenet for {arch} needs {file_name} (MD5 {file_md5}) and it could not be downloaded "
            f"({type(error).__name__}: {str(error)[:120]}). On a machine with internet, download "
            f"{WEIGHTS_URL}{url_dir}{file_name} and copy it to {path} (or to $KERAS_HOME/models/ after "
            "setting KERAS_HOME); or train from scratch with --weights=none.")


def fetch(arch: str, file_name: str, url_dir: str, file_md5: str, timeout: float = 60.0) -> str:
    """The verified local path of the weights file, downloaded first when it is absent.

    The download goes to a file of this process's own and is renamed into place once its MD5 is right, so
    workers fetching at once, or a download cut short, never leave a partial file where Keras looks.
    """
    path = check_file(arch, file_name, url_dir, file_md5)
    if os.path.exists(path):
        return path
    url = f"{WEIGHTS_URL}{url_dir}{file_name}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.part-{os.getpid()}"
    print(f"Downloading {url} to {path}", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        found = md5(partial)
        if found != file_md5:
            raise WeightsError(f"{url} arrived with MD5 {found}, not {file_md5} (a proxy or a cut connection?): "
                               f"download it again and copy it to {path}; or train with --weights=none.")
        os.replace(partial, path)
    except OSError as e:  # urllib's URLError, a timeout, a refused proxy, a full disk
        raise WeightsError(missing_message(arch, file_name, url_dir, file_md5, e)) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def fetch_for(arch: str, imagenet: tuple[str, str, str] | None, weights: str) -> None:
    """Fetches the arch's ImageNet weights when ``weights`` (resolved: ``auto`` is already ``imagenet`` or
    ``none``, as TrainConfig.model_config decides) asks for them; anything else is left to the model builder."""
    if imagenet is not None and weights == "imagenet":
        fetch(arch, *imagenet)
