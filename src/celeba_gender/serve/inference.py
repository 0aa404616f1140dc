"""Prediction on your own photos with an exported model: any size, JPEG/PNG/BMP/..., optional face detection,
test-time augmentation and Grad-CAM overlays.

Each file is read by :mod:`celeba_gender.serve.photos`: checked from its header (size, format) before decoding, then
decoded and resized exactly as training decodes (the source study's demo fed OpenCV's BGR arrays to an RGB
model), turned upright by its EXIF orientation. Without ``detect_faces`` a photo is taken to be a CelebA-like
aligned crop and centre-cropped to the model's aspect ratio; with it, OpenCV's bundled Haar cascade finds the
faces and each is cropped the way CelebA's aligned images frame a face.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from celeba_gender.serve import overlay
from celeba_gender.serve import photos, tflite, tta
from celeba_gender.core.errors import UserError
from celeba_gender.core.invocation import command

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
    note: str | None = None  # what was done to the file besides decoding (turned upright, first GIF frame)
    explanation: str | None = None  # the Grad-CAM overlay's path (--explain)


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


def opencv():
    """The ``cv2`` module (face detection and cropping), or a PredictError saying how to install it: OpenCV is an
    extra (``celeba-gender[detect]``), so that a user's own opencv-python is not fought over."""
    try:
        import cv2
    except ImportError:
        raise PredictError("--detect_faces needs OpenCV: pip install 'celeba-gender[detect]' (or keep your own "
                           "opencv-python, below version 5: the 5.x wheels ship no face cascades).") from None
    return cv2


def detect_faces(image: np.ndarray, min_size: int = 40) -> list[tuple[int, int, int, int]]:
    """Frontal faces found by OpenCV's bundled Haar cascade, largest first, as (x, y, w, h)."""
    cv2 = opencv()

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
    cv2 = opencv()

    height, width = size
    left, top, crop_w, crop_h = crop_window(box, size)
    # An affine warp samples the region directly, replicating edge pixels outside the photo.
    matrix = np.array([[crop_w / width, 0, left], [0, crop_h / height, top]], np.float32)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


class Predictor:
    """An exported run (``export/model.keras`` and ``export/labels.json``) and how to read photos for it."""

    def __init__(self, run_dir: str, max_pixels: int = photos.DEFAULT_MAX_PIXELS, tta_mode: str = tta.NONE,
                 model: str | None = None):
        """``model``: an exported model file to answer with instead of ``run_dir``'s ``export/model.keras``:
        a ``model.tflite`` (run by :class:`celeba_gender.serve.tflite.TFLiteModel`) or a ``model.keras``,
        with its export's ``labels.json`` beside it."""
        import keras

        path = model or os.path.join(run_dir, "export", "model.keras")
        labels = os.path.join(os.path.dirname(path), "labels.json")
        for needed in (path, labels):
            if not os.path.exists(needed):
                where = ("--model must be a model.keras or model.tflite in a run's export/" if model else
                         f"--run_dir must be a {command('train')} run that finished")
                raise PredictError(f"{needed} does not exist: {where} (training writes export/ at the end; "
                                   f"{command('evaluate')} does not).")
        if tta_mode not in tta.MODES:
            raise PredictError(f"--tta={tta_mode}: choose one of {', '.join(tta.MODES)}.")
        self.model = tflite.TFLiteModel(path) if path.endswith(".tflite") else keras.models.load_model(path)
        self.image_size = tuple(self.model.input_shape[1:3])
        with open(labels) as f:
            recorded = json.load(f)
        self.class_names = recorded["class_names"]
        # A multi-attribute model: one sigmoid per name; an attribute is present when its probability reaches its
        # threshold (chosen on the validation split; exports made before thresholds were recorded: 0.5).
        self.multi_label = bool(recorded.get("multi_label"))
        self.thresholds = np.asarray(recorded.get("thresholds") or [0.5] * len(self.class_names), np.float32)
        self.explained_attribute = "Male" if "Male" in self.class_names else self.class_names[0]
        # Exports made before labels.json recorded the layer: the registry knows it by the arch (the core's name).
        self.gradcam_layer = recorded.get("gradcam_layer") or (
            "" if isinstance(self.model, tflite.TFLiteModel) else _registry_gradcam_layer(self.model))
        self.max_pixels, self.tta_mode = max_pixels, tta_mode
        self._gradcam = None

    def explainer(self):
        """The :class:`celeba_gender.serve.gradcam.GradCam` of this model (built on first use)."""
        from celeba_gender.serve import gradcam

        if self._gradcam is None:
            if not self.gradcam_layer:
                raise PredictError("This export records no Grad-CAM layer and its arch is not in the registry: "
                                   "--explain cannot be used with it.")
            self._gradcam = gradcam.GradCam(self.model, self.gradcam_layer)
        return self._gradcam

    def predict(self, files: list[str], faces: bool = False, batch: int = 32,
                explain_dir: str | None = None) -> list[Prediction]:
        """One Prediction per face (or per image without ``faces``), and one per file that failed, in the order
        of ``files``. ``explain_dir``: also write a Grad-CAM overlay of each prediction there."""
        pending, results, names = [], [], set()

        def flush():
            if pending:
                results.extend(self._predict_batch(pending, explain_dir, names))
                pending.clear()

        for file in files:
            try:
                photo = photos.open_photo(file, self.max_pixels)
                if not faces:
                    pending.append((file, None, photo.note, photos.model_input(photo, self.image_size)))
                else:
                    image = photos.full_image(photo)
                    boxes = detect_faces(image)
                    if not boxes:
                        results.append(Prediction(file, error="no face found", note=photo.note))
                    pending += [(file, box, photo.note, crop_like_celeba(image, box, self.image_size))
                                for box in boxes]
            except photos.UnreadableImage as e:
                results.append(Prediction(file, error=str(e)))
            if len(pending) >= batch:
                flush()
        flush()
        order = {f: i for i, f in enumerate(files)}
        return sorted(results, key=lambda r: order.get(r.file, len(order)))

    def _predict_batch(self, pending: list, explain_dir: str | None, names: set) -> list[Prediction]:
        crops = np.stack([crop for *_, crop in pending])
        probs = tta.predict(self.model, crops, self.tta_mode)
        maps = self._explain(crops, probs) if explain_dir else [None] * len(crops)
        out = []
        for (file, box, note, crop), p, heatmap in zip(pending, probs, maps):
            label, probability, caption = self._decision(p)
            explanation = None
            if heatmap is not None:
                explanation = _overlay_path(explain_dir, file, box, names)
                overlay.save_explanation(crop, heatmap, f"{os.path.basename(file)}: {caption}", explanation)
            out.append(Prediction(file, box, label, probability, {n: float(v) for n, v in zip(self.class_names, p)},
                                  note=note, explanation=explanation))
        return out

    def _decision(self, p: np.ndarray) -> tuple[str, float | None, str]:
        """(label, its probability, the overlay's caption): the most probable class, or for a multi-attribute
        model the attributes present, each at its threshold (no single probability)."""
        if not self.multi_label:
            k = int(p.argmax())
            return self.class_names[k], float(p[k]), f"{self.class_names[k]} {p[k]:.2f}"
        present = ",".join(n for n, v, t in zip(self.class_names, p, self.thresholds) if v >= t) or "none"
        j = self.class_names.index(self.explained_attribute)
        return present, None, f"Grad-CAM of {self.explained_attribute} (P={p[j]:.2f})"

    def _explain(self, crops: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Heatmaps of the predicted class, or of a multi-attribute model's explained attribute (its evidence
        for the value the model chose)."""
        if not self.multi_label:
            return self.explainer()(crops, probs.argmax(-1))
        j = self.class_names.index(self.explained_attribute)
        return self.explainer()(crops, j, sign=np.where(probs[:, j] >= self.thresholds[j], 1.0, -1.0))


def _registry_gradcam_layer(model) -> str:
    from celeba_gender.models import registry

    spec = registry.ARCHS.get(model.layers[-1].name)
    return spec.gradcam_layer if spec else ""


def _overlay_path(folder: str, file: str, box, taken: set) -> str:
    """``folder/<file's stem>[_x<x>_y<y>].png``, numbered when two inputs share a name."""
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(file))[0] + ("" if box is None else f"_x{box[0]}_y{box[1]}")
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}.png"
    taken.add(name)
    return os.path.join(folder, name)


def write_predictions(predictions: list[Prediction], path: str) -> None:
    """CSV (file, x, y, width, height, label, probability, P(class)..., error, note, explanation) or JSON, by
    the extension."""
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
                         "error", "note", "explanation"])
        for p in predictions:
            box = p.box or ("", "", "", "")
            probs = [f"{p.probabilities[n]:.6f}" if p.probabilities else "" for n in names]
            writer.writerow([p.file, *box, p.label or "", f"{p.probability:.6f}" if p.probability is not None else "",
                             *probs, p.error or "", p.note or "", p.explanation or ""])
