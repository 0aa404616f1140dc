"""Flags of predict.py -> celeba_gender.inference.Predictor."""

from __future__ import annotations

import sys

from absl import app, flags, logging

from celeba_gender import inference

flags.DEFINE_string("run_dir", None, "A finished train.py run (its export/ is used). Required.")
flags.DEFINE_bool("detect_faces", False, "Find faces with OpenCV's Haar cascade and crop each like CelebA's "
                  "aligned images (for ordinary photos; without it each image is taken as an aligned face crop).")
flags.DEFINE_string("output", None, "Also write the predictions to this .csv or .json file.")
flags.DEFINE_integer("batch", 32, "Faces per model call.", lower_bound=1)

FLAGS = flags.FLAGS


def format_line(p: inference.Prediction) -> str:
    if p.error:
        return f"{p.file}\terror: {p.error}"
    box = "whole image" if p.box is None else "box x={} y={} w={} h={}".format(*p.box)
    return f"{p.file}\t{box}\t{p.label}\t{p.probability:.4f}"


def main(argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if len(argv) < 2:
        raise app.UsageError("Name at least one image file or folder: predict.py --run_dir=RUN photo.jpg ...")
    try:
        predictor = inference.Predictor(FLAGS.run_dir)
        predictions = predictor.predict(inference.list_inputs(argv[1:]), FLAGS.detect_faces, FLAGS.batch)
    except inference.PredictError as e:
        print(f"predict: error: {e}", file=sys.stderr)
        sys.exit(2)
    for p in predictions:
        print(format_line(p))
    if FLAGS.output:
        inference.write_predictions(predictions, FLAGS.output)
        print(f"wrote {FLAGS.output}")
    failed = sum(1 for p in predictions if p.error)
    if failed:
        print(f"{failed} file(s) without a prediction (reasons above)", file=sys.stderr)


def run() -> None:
    flags.mark_flag_as_required("run_dir")
    app.run(main)


if __name__ == "__main__":  # python -m celeba_gender.cli.predict
    run()
