"""Prediction on your own photos with an exported model: any size, JPEG/PNG/BMP/..., optional face detection,
test-time augmentation and Grad-CAM overlays.

Each file is read by :mod:`celeba_gender.serve.photos`: checked from its header (size, format) before decoding, then
decoded and resized exactly as training decodes (the source study's demo fed OpenCV's BGR arrays to an RGB
model), turned upright by its EXIF orientation. Without ``detect_faces`` a photo is taken to be a CelebA-like
aligned crop and centre-cropped to the model's aspect ratio; with it, :mod:`celeba_gender.serve.faces` finds the
faces and their landmarks and aligns each the way CelebA's aligned images were aligned.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from celeba_gender.serve import faces as face_finder
from celeba_gender.serve import overlay
from celeba_gender.serve import photos, tflite, tta
from celeba_gender.core.errors import UserError
from celeba_gender.tasks import kinds
from celeba_gender.core.invocation import command

ALREADY_ALIGNED = "already aligned: used as it is"


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
    confidence: float | None = None  # the face detector's
    landmarks: dict | None = None  # name -> (x, y) in the photo: face_finder.LANDMARK_NAMES (or the eyes only)


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


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """How photos are read and framed for the model (predict.py's flags of the same names): the pixel limit,
    test-time augmentation, and with ``predict(faces=True)`` the detector's confidence threshold, the most faces
    a photo gives (0: all) and the alignment rule (a rule of :mod:`celeba_gender.serve.faces`)."""

    max_pixels: int = photos.DEFAULT_MAX_PIXELS
    tta: str = tta.NONE
    face_confidence: float = face_finder.DEFAULT_MIN_CONFIDENCE
    max_faces: int = 0
    align: str = face_finder.CELEBA


class Predictor:
    """An exported run (``export/model.keras`` and ``export/labels.json``) and how to read photos for it."""

    def __init__(self, run_dir: str = "", options: PredictOptions | None = None, model: str | None = None):
        """``options``: how photos are read, decided and framed (defaults: PredictOptions()). ``model``: an
        exported model file to answer with instead of ``run_dir``'s ``export/model.keras``:
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
        options = options or PredictOptions()
        if options.tta not in tta.MODES:
            raise PredictError(f"--tta={options.tta}: choose one of {', '.join(tta.MODES)}.")
        if options.align not in face_finder.RULES:
            raise PredictError(f"--align={options.align}: choose one of {', '.join(face_finder.RULES)}.")
        self.model = tflite.TFLiteModel(path) if path.endswith(".tflite") else keras.models.load_model(path)
        self.image_size = tuple(self.model.input_shape[1:3])
        with open(labels) as f:
            recorded = json.load(f)
        # What the outputs are and how they are decided (a multi-attribute model: each attribute at its threshold,
        # chosen on the validation split; exports made before thresholds were recorded decide at 0.5).
        self.task = kinds.from_record(recorded)
        self.class_names = list(self.task.outputs)
        # Exports made before labels.json recorded the layer: the registry knows it by the arch (the core's name).
        self.gradcam_layer = recorded.get("gradcam_layer") or (
            "" if isinstance(self.model, tflite.TFLiteModel) else _registry_gradcam_layer(self.model))
        self.max_pixels, self.tta_mode = options.max_pixels, options.tta
        self.min_face_confidence, self.max_faces, self.align = options.face_confidence, options.max_faces, \
            options.align
        self._gradcam = self._detector = None

    def explainer(self):
        """The :class:`celeba_gender.serve.gradcam.GradCam` of this model (built on first use)."""
        from celeba_gender.serve import gradcam

        if self._gradcam is None:
            if not self.gradcam_layer:
                raise PredictError("This export records no Grad-CAM layer and its arch is not in the registry: "
                                   "--explain cannot be used with it.")
            self._gradcam = gradcam.GradCam(self.model, self.gradcam_layer)
        return self._gradcam

    @property
    def detector(self):
        """:func:`face_finder.detector`'s (built on first use: MTCNN takes a few seconds to load)."""
        if self._detector is None:
            self._detector = face_finder.detector(self.min_face_confidence)
        return self._detector

    def find_faces(self, image: np.ndarray) -> list[face_finder.Face]:
        """The faces of a photo, most confident first, at most ``max_faces``."""
        found = self.detector(image)
        return found[:self.max_faces] if self.max_faces else found

    def face_input(self, photo: photos.Photo, image: np.ndarray,
                   face: face_finder.Face) -> tuple[np.ndarray, str | None]:
        """(the model's input for one face of a photo, a note for the user): the face aligned like CelebA's, or the
        whole photo's decoding when the photo already is such a crop, or the Haar fallback's box framing."""
        note = self.detector.note(face)
        if face.landmarks is None:
            return face_finder.crop_like_celeba(image, face.box, self.image_size), note
        matrix = face_finder.alignment_matrix(face.landmarks, self.align)
        if face_finder.already_aligned(matrix, image.shape[:2]):
            return photos.model_input(photo, self.image_size), _join(note, ALREADY_ALIGNED)
        return face_finder.model_crop(face_finder.warp_to_celeba(image, matrix), self.image_size), note

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
                    found = self.find_faces(image)
                    if not found:
                        results.append(Prediction(file, error="no face found", note=photo.note))
                    for face in found:
                        crop, note = self.face_input(photo, image, face)
                        pending.append((file, face, _join(photo.note, note), crop))
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
        for (file, face, note, crop), p, heatmap in zip(pending, probs, maps):
            label, probability, caption = self._decision(p)
            box = face.box if face else None
            explanation = None
            if heatmap is not None:
                explanation = _overlay_path(explain_dir, file, box, names)
                overlay.save_explanation(crop, heatmap, f"{os.path.basename(file)}: {caption}", explanation)
            out.append(Prediction(file, box, label, probability, {n: float(v) for n, v in zip(self.class_names, p)},
                                  note=note, explanation=explanation, confidence=face.confidence if face else None,
                                  landmarks=(face.landmark_dict() or None) if face else None))
        return out

    def _decision(self, p: np.ndarray) -> tuple[str, float | None, str]:
        """(label, its probability or None, the overlay's caption): the task's decision (the most probable class,
        or the attributes present), the caption naming what Grad-CAM explains."""
        label, probability = self.task.describe(p)
        j, _ = self.task.explained_output(p)
        caption = f"{label} {probability:.2f}" if probability is not None else \
            f"Grad-CAM of {self.class_names[j]} (P={p[j]:.2f})"
        return label or "none", probability, caption

    def _explain(self, crops: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Heatmaps of the evidence for each decision: the predicted class, or the explained attribute's
        evidence for the value the model chose."""
        explained = [self.task.explained_output(p) for p in probs]
        return self.explainer()(crops, [j for j, _ in explained], sign=[s for _, s in explained])


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


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
    """CSV (file, x, y, width, height, face_confidence, the landmarks' x and y, label, probability, P(class)...,
    error, note, explanation) or JSON, by the extension."""
    rows = [dataclasses.asdict(p) for p in predictions]
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
        return
    import csv

    names = sorted({n for p in predictions if p.probabilities for n in p.probabilities})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        points = [f"{n}_{axis}" for n in face_finder.LANDMARK_NAMES for axis in "xy"]
        writer.writerow(["file", "x", "y", "width", "height", "face_confidence", *points, "label", "probability",
                         *[f"p_{n}" for n in names], "error", "note", "explanation"])
        for p in predictions:
            box = p.box or ("", "", "", "")
            confidence = f"{p.confidence:.6f}" if p.confidence is not None else ""
            marks = [f"{v:.2f}" if v != "" else "" for n in face_finder.LANDMARK_NAMES
                     for v in (p.landmarks or {}).get(n, ("", ""))]
            probs = [f"{p.probabilities[n]:.6f}" if p.probabilities else "" for n in names]
            writer.writerow([p.file, *box, confidence, *marks, p.label or "",
                             f"{p.probability:.6f}" if p.probability is not None else "",
                             *probs, p.error or "", p.note or "", p.explanation or ""])
