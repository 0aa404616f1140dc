"""evaluate.py: flags -> celeba_gender.evaluation.evaluate_run() -> RUN/report/."""

from __future__ import annotations

import dataclasses
import os

from celeba_gender.cli import tf_startup

with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice
    from celeba_gender import evaluation, report_markdown, runs, storage
    from celeba_gender.cli import config_flags, runner
    from celeba_gender.options import option
    tf_startup.find_devices()


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The flags of evaluate.py."""

    run_dir: str = option(help="A train.py run directory (required).", path=True)
    split: str = option("test", "The split to evaluate, every example once.", choices=("train", "validation", "test"))
    checkpoint: str = option("best", "best (validation accuracy) or last checkpoint.", choices=evaluation.CHECKPOINTS)
    data_dir: str | None = option(None, "Shards to evaluate on; default: the run's --data_dir.", path=True)
    batch: int = option(64, "Evaluation batch size.", lower=1)
    gallery_size: int = option(24, "Misclassified faces shown per direction.", lower=0)
    min_subgroup: int = option(20, "Smallest attribute subgroup reported.", lower=1)


config_flags.define(EvaluateConfig, __name__)


def main(argv: list[str]) -> None:
    c, _ = config_flags.build(EvaluateConfig)
    if not storage.is_url(c.run_dir) and not os.path.isdir(c.run_dir):
        raise runs.NotARunError(f"{c.run_dir} is not a directory; pass --run_dir=runs/<arch>-<time>.")
    report = evaluation.evaluate_run(c.run_dir, c.split, c.checkpoint, c.data_dir, c.batch, c.gallery_size,
                                     c.min_subgroup)
    out = evaluation.report_dir(c.run_dir, c.split, c.checkpoint)
    print(report_markdown.report_markdown(report).split("## Most confident errors")[0].rstrip())
    print(f"\nreport.json, report.md, predictions.csv, confusion_matrix.png, curves.png and the error galleries are "
          f"in {out}")


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "evaluate", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.evaluate
    run()
