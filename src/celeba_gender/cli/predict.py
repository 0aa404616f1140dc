"""predict.py: flags and photo paths -> celeba_gender.inference.Predictor.

Exit code 0 when every input was predicted, 1 when some could not be read (their results are written and
each failure is listed), 2 for a user error (no model, bad flags).
"""

from __future__ import annotations

import dataclasses
import sys

from celeba_gender.cli import tf_startup

with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice
    import tensorflow  # noqa: F401 - imported now (inference imports it lazily) so that its lines are tidied
    tf_startup.find_devices()

    from celeba_gender import inference
    from celeba_gender.cli import config_flags, runner
    from celeba_gender.options import option

SOME_FAILED_EXIT = 1


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The flags of predict.py (the photos are its arguments)."""

    run_dir: str = option(help="A finished train.py run (its export/ is used). Required.", path=True)
    detect_faces: bool = option(False, "Find faces with OpenCV's Haar cascade and crop each like CelebA's aligned "
                                "images (for ordinary photos; without it each image is taken as an aligned face "
                                "crop).")
    output: str | None = option(None, "Also write the predictions to this .csv or .json file.", path=True)
    batch: int = option(32, "Faces per model call.", lower=1)


config_flags.define(PredictConfig, __name__)


def format_line(p: inference.Prediction) -> str:
    if p.error:
        return f"{p.file}\terror: {p.error}"
    box = "whole image" if p.box is None else "box x={} y={} w={} h={}".format(*p.box)
    return f"{p.file}\t{box}\t{p.label}\t{p.probability:.4f}"


def main(argv: list[str]) -> None:
    c, _ = config_flags.build(PredictConfig)
    if len(argv) < 2:
        raise inference.PredictError("name at least one image file or folder: predict.py --run_dir=RUN photo.jpg ...")
    predictor = inference.Predictor(c.run_dir)
    predictions = predictor.predict(inference.list_inputs(argv[1:]), c.detect_faces, c.batch)
    for p in predictions:
        print(format_line(p))
    if c.output:
        inference.write_predictions(predictions, c.output)
        print(f"wrote {c.output}")
    failed = sum(1 for p in predictions if p.error)
    if failed:
        print(f"predict: {failed} of {len(predictions)} input(s) without a prediction (reasons above)", file=sys.stderr)
        sys.exit(SOME_FAILED_EXIT)


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "predict", __name__, positional=True)


if __name__ == "__main__":  # python -m celeba_gender.cli.predict
    run()
