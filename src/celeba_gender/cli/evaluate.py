"""evaluate.py: flags -> celeba_gender.evaluate.evaluator.evaluate_run() -> RUN/report/."""

from __future__ import annotations

import dataclasses
import os

from celeba_gender.cli import config_flags, runner, tf_startup
from celeba_gender.core import fileio
from celeba_gender.core.options import option
from celeba_gender.serve import tta

CHECKPOINTS = ("best", "last")  # evaluate.evaluator.CHECKPOINTS, spelled here: that module imports TensorFlow


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The flags of evaluate.py."""

    run_dir: str = option(help="A training run's directory (required).", path=True)
    split: str = option("test", "The split to evaluate, every example once.", choices=("train", "validation", "test"))
    checkpoint: str = option("best", "best (by the run's --best_metric) or last checkpoint.",
                             choices=CHECKPOINTS)
    data_dir: str | None = option(None, "Shards to evaluate on; default: the run's --data_dir. Others must hold what "
                                  "the run predicts (its attribute's classes, or each of its attributes).", path=True)
    batch: int = option(64, "Evaluation batch size.", lower=1)
    gallery_size: int = option(24, "Misclassified faces shown per direction.", lower=0)
    min_subgroup: int = option(20, "Smallest attribute subgroup reported.", lower=1)
    tta: str = option(tta.NONE, "Test-time augmentation reported beside the plain figures: flip averages the "
                      "probabilities of each image and its mirror image.", choices=tta.MODES)
    gradcam_size: int = option(6, "Faces per Grad-CAM figure (the most confident errors of each direction, and "
                               "correct answers); 0: no Grad-CAM figures.", lower=0)
    gradcam_attribute: str = option("", "Multi-attribute runs: the attribute the Grad-CAM figures explain "
                                    "(default: Male when the run predicts it, else its first).")


config_flags.define(EvaluateConfig, __name__)


def main(argv: list[str]) -> None:
    c, _ = config_flags.build(EvaluateConfig)
    with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice
        from celeba_gender.evaluate import evaluator, markdown_report
        from celeba_gender.rundir import directory
        tf_startup.find_devices()
    if not fileio.is_url(c.run_dir) and not os.path.isdir(c.run_dir):
        raise directory.NotARunError(f"{c.run_dir} is not a directory; pass --run_dir=runs/<arch>-<time>.")
    report = evaluator.evaluate_run(c.run_dir, c.split, c.checkpoint, c.data_dir, c.batch, c.gallery_size,
                                     c.min_subgroup, c.tta, c.gradcam_size, c.gradcam_attribute)
    out = evaluator.report_dir(c.run_dir, c.split, c.checkpoint)
    if report.get("multi_label"):
        print(markdown_report.attributes_markdown(report).split("## Grad-CAM")[0].rstrip())
        print(f"\nreport.json, report.md, predictions.csv, attributes.png, curves.png and the Grad-CAM figures are "
              f"in {out}")
        return
    print(markdown_report.report_markdown(report).split("## Most confident errors")[0].rstrip())
    print(f"\nreport.json, report.md, predictions.csv, confusion_matrix.png, curves.png, the error galleries and "
          f"the Grad-CAM figures are in {out}")


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "evaluate", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.evaluate
    run()
