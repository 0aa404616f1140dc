"""predict.py: flags and photo paths -> celeba_gender.serve.inference.Predictor.

Exit code 0 when every input was predicted, 1 when some could not be read (the results of the others are
printed and written, and each failure is listed with its reason), 2 for a user error (no model, bad flags).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from celeba_gender.cli import config_flags, runner, tf_startup
from celeba_gender.core import invocation
from celeba_gender.core.options import option
from celeba_gender.serve import faces, inference, photos, tta

SOME_FAILED_EXIT = 1


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The flags of predict.py (the photos are its arguments)."""

    run_dir: str = option("", "A finished training run: its export/model.keras answers (or give --model).",
                          path=True)
    model: str = option("", "An exported model to answer with instead: RUN/export/model.tflite (TensorFlow Lite, as "
                        "phones run it) or RUN/export/model.keras; labels.json beside it says what it predicts.",
                        path=True)
    detect_faces: bool = option(False, "Find the faces and their eyes, nose and mouth corners (MTCNN) and align "
                                "each as CelebA's aligned images are aligned (for ordinary photos; without it each "
                                "image is taken as an aligned face crop).")
    face_confidence: float = option(faces.DEFAULT_MIN_CONFIDENCE, "--detect_faces: the detector's confidence below "
                                    "which a detection is not taken as a face.", lower=0, upper=1)
    max_faces: int = option(0, "--detect_faces: predict at most this many faces per photo, the most confident; 0: "
                            "all.", lower=0)
    align: str = option(faces.CELEBA, "--detect_faces: celeba aligns like CelebA (eyes and mouth, least squares); "
                        "eyes puts the two eyes exactly where CelebA's template has them.", choices=faces.RULES)
    output: str | None = option(None, "Also write the predictions to this .csv or .json file.", path=True)
    batch: int = option(32, "Faces per model call.", lower=1)
    max_pixels: int = option(photos.DEFAULT_MAX_PIXELS, "Refuse (per file, from its header, before decoding) images "
                             "with more pixels than this, counting every frame of an animated GIF; a CelebA image "
                             "has 38,804.", lower=1)
    tta: str = option(tta.NONE, "Test-time augmentation: flip averages the probabilities of each face and its "
                      "mirror image.", choices=tta.MODES)
    explain: bool = option(False, "Write a Grad-CAM overlay of each prediction (where the model found the evidence "
                           "for the label it gives) into --explain_dir.")
    explain_dir: str | None = option(None, "Where --explain writes its overlays; default: explain/ in --output's "
                                     "folder, or ./explain without --output.", path=True)


config_flags.define(PredictConfig, __name__)


def explain_dir(c: PredictConfig) -> str:
    """The folder of the Grad-CAM overlays: --explain_dir, else explain/ beside --output, else ./explain."""
    if c.explain_dir:
        return c.explain_dir
    return os.path.join(os.path.dirname(c.output) if c.output else ".", "explain")


def format_line(p: inference.Prediction) -> str:
    """One printed line: file, box or whole image, label and probability (or the error), note, overlay."""
    if p.error:
        line = f"{p.file}\terror: {p.error}"
    else:
        box = "whole image" if p.box is None else "box x={} y={} w={} h={}".format(*p.box)
        if p.confidence is not None:
            box += f" face {p.confidence:.3f}"
        if p.probability is not None:
            line = f"{p.file}\t{box}\t{p.label}\t{p.probability:.4f}"
        else:  # a multi-attribute model: the attributes present, each with its probability
            shown = ", ".join(f"{n} {p.probabilities[n]:.2f}" for n in p.label.split(",") if n in p.probabilities)
            line = f"{p.file}\t{box}\t{shown or 'no attribute present'}"
    if p.note:
        line += f"\t({p.note})"
    if p.explanation:
        line += f"\texplanation: {p.explanation}"
    return line


def main(argv: list[str]) -> None:
    c, _ = config_flags.build(PredictConfig)
    if bool(c.run_dir) == bool(c.model):
        raise inference.PredictError("give --run_dir=RUN (its export/model.keras answers) or --model=FILE (e.g. "
                                     "RUN/export/model.tflite), one of them.")
    if c.explain and c.model.endswith(".tflite"):
        raise inference.PredictError("--explain needs the Keras model (Grad-CAM takes its gradients): use "
                                     "--run_dir=RUN, or --model=RUN/export/model.keras, to explain.")
    if c.detect_faces:
        faces.opencv()  # or one line saying how to install it, before anything is loaded
    if len(argv) < 2:
        raise inference.PredictError(f"name at least one image file or folder: {invocation.command('predict')} "
                                     "--run_dir=RUN photo.jpg ...")
    with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice (inference imports it lazily)
        import tensorflow  # noqa: F401
        tf_startup.find_devices()
    options = inference.PredictOptions(c.max_pixels, c.tta, c.face_confidence, c.max_faces, c.align)
    predictor = inference.Predictor(c.run_dir, options, model=c.model or None)
    predictions = predictor.predict(inference.list_inputs(argv[1:]), c.detect_faces, c.batch,
                                    explain_dir(c) if c.explain else None)
    for p in predictions:
        print(format_line(p))
    if c.output:
        inference.write_predictions(predictions, c.output)
        print(f"wrote {c.output}")
    failed = [p for p in predictions if p.error]
    if failed:
        print(f"predict: {len(failed)} of {len(predictions)} input(s) without a prediction:", file=sys.stderr)
        for p in failed:
            print(f"  {p.file}: {p.error}", file=sys.stderr)
        sys.exit(SOME_FAILED_EXIT)


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "predict", __name__, positional=True)


if __name__ == "__main__":  # python -m celeba_gender.cli.predict
    run()
