"""Prediction on your own photos with an exported model: any size, JPEG/PNG/BMP/..., optional face detection.

Images are decoded to RGB as the training pipeline decodes them (the source study's demo fed OpenCV's BGR
arrays to an RGB model) and turned upright by their EXIF orientation. Without ``detect_faces`` a photo is taken to be a CelebA-like aligned crop
and centre-cropped to the model's aspect ratio; with it, OpenCV's bundled Haar cascade finds the faces and each
is cropped the way CelebA's aligned images frame a face.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from celeba_gender.errors import UserError

# CelebA's aligned crops (178x218) frame a face so that a frontal-face detector's box is about 1/1.5 of the
# crop's width, its centre a little above the middle. Calibrated on the synthetic faces (which follow
# CelebA's framing); real photos were not available to check it.
CROP_WIDTH_PER_BOX = 1.5
BOX_CENTRE_HEIGHT = 0.52


class PredictError(UserError):
    """A model or input that cannot be used at all; per-file problems are reported, not raised."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One face (or one whole image) and what the model says, or the reason there is no prediction."""

    file: str
    box: tuple[int, int, int, int] | None = None  # x, y, width, height in the photo
    label: str | None = None
    probability: float | None = None  # of ``label``
    probabilities: dict | None = None
    error: str | None = None


def list_inputs(paths: list[str]) -> list[str]:
    """Files named, and every (non-hidden) file inside named folders, sorted; a missing path is kept so that
    it is reported like any unreadable file."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
        else:
            files.append(path)
    return files


# EXIF orientation -> how to turn the decoded pixels upright (Pillow's exif_transpose, in numpy).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
# Formats TensorFlow decodes itself: decoded by tf.io.decode_image, exactly as the training pipeline decodes
# (Pillow's JPEG decoder differs from it by a few units in red and blue).
_TF_FORMATS = ("JPEG", "PNG", "BMP", "GIF")


def read_image(path: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] of any image Pillow can identify, turned upright by its EXIF orientation;
    ValueError with a reason otherwise."""
    import io

    import tensorflow as tf
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as e:
        raise ValueError(f"unreadable file ({e.strerror or e})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, orientation = im.format, im.getexif().get(0x0112, 1)
            if fmt not in _TF_FORMATS:
                image = np.asarray(im.convert("RGB"))
        if fmt in _TF_FORMATS:
            image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except UnidentifiedImageError:
        raise ValueError("not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, tf.errors.InvalidArgumentError) as e:
        message = getattr(e, "message", None) or str(e)
        # TensorFlow wraps its op errors in "{{function_node ...}} ... [Op:DecodeImage]": keep the reason only.
        message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "", message.splitlines()[0])
        raise ValueError(f"unreadable or corrupt image ({message[:120]})") from None
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(image))


def detect_faces(image: np.ndarray, min_size: int = 40) -> list[tuple[int, int, int, int]]:
    """Frontal faces found by OpenCV's bundled Haar cascade, largest first, as (x, y, w, h)."""
    import cv2

    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise PredictError(f"OpenCV's face cascade is missing ({path}); install opencv-python-headless<5.")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in f) for f in faces), key=lambda b: -b[2] * b[3])


def crop_window(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the region that frames a face box like CelebA's aligned crops, with the
    aspect ratio of ``size`` (height, width)."""
    x, y, w, h = box
    crop_w = CROP_WIDTH_PER_BOX * w
    crop_h = crop_w * size[0] / size[1]
    return x + w / 2 - crop_w / 2, y + h / 2 - BOX_CENTRE_HEIGHT * crop_h, crop_w, crop_h


def crop_like_celeba(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The :func:`crop_window` of a face box, resized to ``size`` (edges replicated where the region leaves
    the photo)."""
    import cv2

    height, width = size
    left, top, crop_w, crop_h = crop_window(box, size)
    # An affine warp samples the region directly, replicating edge pixels outside the photo.
    matrix = np.array([[crop_w / width, 0, left], [0, crop_h / height, top]], np.float32)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest central crop with the model's aspect ratio, resized (what the training pipeline does)."""
    from celeba_gender.decode import fit_to_size

    return np.asarray(fit_to_size(image, size))


class Predictor:
    """An exported run: ``export/model.keras`` and ``export/labels.json``."""

    def __init__(self, run_dir: str):
        import keras

        import celeba_gender.archs  # noqa: F401 - registers the model's layers for loading
        import celeba_gender.augment  # noqa: F401

        path = os.path.join(run_dir, "export", "model.keras")
        if not os.path.exists(path):
            raise PredictError(f"{path} does not exist: --run_dir must be a finished train.py run.")
        self.model = keras.models.load_model(path)
        self.image_size = tuple(self.model.input_shape[1:3])
        with open(os.path.join(run_dir, "export", "labels.json")) as f:
            self.class_names = json.load(f)["class_names"]

    def predict(self, files: list[str], faces: bool = False, batch: int = 32) -> list[Prediction]:
        """One Prediction per face (or per image without ``faces``), and one per file that failed."""
        crops, owners, results = [], [], []
        for file in files:
            try:
                image = read_image(file)
            except ValueError as e:
                results.append(Prediction(file, error=str(e)))
                continue
            if not faces:
                crops.append(centre_crop(image, self.image_size))
                owners.append((file, None))
                continue
            boxes = detect_faces(image)
            if not boxes:
                results.append(Prediction(file, error="no face found"))
            for box in boxes:
                crops.append(crop_like_celeba(image, box, self.image_size))
                owners.append((file, box))
        for start in range(0, len(crops), batch):
            probs = np.asarray(self.model(np.stack(crops[start:start + batch]), training=False))
            for (file, box), p in zip(owners[start:start + batch], probs):
                k = int(p.argmax())
                results.append(Prediction(file, box, self.class_names[k], float(p[k]),
                                          {n: float(v) for n, v in zip(self.class_names, p)}))
        order = {f: i for i, f in enumerate(files)}
        return sorted(results, key=lambda r: order.get(r.file, len(order)))


def write_predictions(predictions: list[Prediction], path: str) -> None:
    """CSV (file, x, y, width, height, label, probability, P(class)..., error) or JSON, by the extension."""
    rows = [dataclasses.asdict(p) for p in predictions]
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
        return
    import csv

    names = sorted({n for p in predictions if p.probabilities for n in p.probabilities})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "x", "y", "width", "height", "label", "probability", *[f"p_{n}" for n in names],
                         "error"])
        for p in predictions:
            box = p.box or ("", "", "", "")
            probs = [f"{p.probabilities[n]:.6f}" if p.probabilities else "" for n in names]
            writer.writerow([p.file, *box, p.label or "", f"{p.probability:.6f}" if p.probability is not None else "",
                             *probs, p.error or ""])
