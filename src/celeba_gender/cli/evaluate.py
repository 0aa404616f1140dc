"""Flags of evaluate.py -> celeba_gender.evaluation.evaluate_run()."""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from celeba_gender import evaluation, plots
from celeba_gender.storage import DataError

flags.DEFINE_string("run_dir", None, "A train.py run directory (required).")
flags.DEFINE_enum("split", "test", ("train", "validation", "test"), "The split to evaluate, every example once.")
flags.DEFINE_enum("checkpoint", "best", evaluation.CHECKPOINTS, "best (validation accuracy) or last checkpoint.")
flags.DEFINE_string("data_dir", None, "Shards to evaluate on; default: the run's --data_dir.")
flags.DEFINE_integer("batch", 64, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_integer("gallery_size", 24, "Misclassified faces shown per direction.", lower_bound=0)
flags.DEFINE_integer("min_subgroup", 20, "Smallest attribute subgroup reported.", lower_bound=1)

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isdir(FLAGS.run_dir) and "://" not in FLAGS.run_dir:
        print(f"evaluate: error: {FLAGS.run_dir} is not a directory; pass --run_dir=runs/<arch>-<time>.",
              file=sys.stderr)
        sys.exit(2)
    try:
        report = evaluation.evaluate_run(FLAGS.run_dir, FLAGS.split, FLAGS.checkpoint, FLAGS.data_dir, FLAGS.batch,
                                         FLAGS.gallery_size, FLAGS.min_subgroup)
    except (evaluation.EvaluationError, DataError, FileNotFoundError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = evaluation.report_dir(FLAGS.run_dir, FLAGS.split, FLAGS.checkpoint)
    print(plots.report_markdown(report).split("## Most confident errors")[0].rstrip())
    print(f"\nreport.json, report.md, confusion_matrix.png, curves.png and the error galleries are in {out}")


def run() -> None:
    flags.mark_flag_as_required("run_dir")
    app.run(main)


if __name__ == "__main__":  # python -m celeba_gender.cli.evaluate
    run()
