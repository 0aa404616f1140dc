"""evaluate.py: flags -> celeba_gender.evaluate.evaluator.evaluate_run() -> RUN/report/."""

from __future__ import annotations

import dataclasses
import os

from celeba_gender.cli import config_flags, runner, tf_startup
from celeba_gender.core import fileio
from celeba_gender.core.options import option
from celeba_gender.rundir.directory import CHECKPOINT_CHOICES
from celeba_gender.serve import tta


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The flags of evaluate.py."""

    run_dir: str = option(help="A training run's directory (required).", path=True)
    split: str = option("test", "The split to evaluate, every example once.", choices=("train", "validation", "test"))
    checkpoint: str = option("best", "best (by the run's --best_metric) or last checkpoint.",
                             choices=CHECKPOINT_CHOICES)
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
        from celeba_gender.evaluate import evaluator
        from celeba_gender.rundir import directory
        tf_startup.find_devices()
    if not fileio.is_url(c.run_dir) and not os.path.isdir(c.run_dir):
        raise directory.NotARunError(f"{c.run_dir} is not a directory; pass --run_dir=runs/<arch>-<time>.")
    run = directory.RunDirectory(c.run_dir)
    settings = {f.name: getattr(c, f.name) for f in dataclasses.fields(evaluator.EvaluationOptions)}
    report = evaluator.evaluate_run(run, evaluator.EvaluationOptions(**settings))
    out = run.report_dir(c.split, c.checkpoint)
    print(evaluator.console_text(report, out))


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "evaluate", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.evaluate
    run()
