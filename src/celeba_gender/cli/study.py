"""Flags of study.py -> StudyConfig -> celeba_gender.study.run_study()."""

from __future__ import annotations

import os
import sys

from absl import app, flags

from celeba_gender import archs, study

flags.DEFINE_string("name", None, "Study name (its directory is studies/<name> unless --study_dir). Required.")
flags.DEFINE_list("archs", None, f"Architectures to compare (of {', '.join(archs.ARCH_NAMES)}). Required.")
flags.DEFINE_enum("vary", "epochs", study.VARY, "The setting that varies: epochs, dataset_size (via the "
                  "converter's --limit), batch, or none (compare archs only).")
flags.DEFINE_list("values", [], "Values of the varied setting, e.g. 5,10,15.")
flags.DEFINE_integer("repeats", 1, "Seeds per cell (--seed, --seed+1, ...); tables show mean ± std.", lower_bound=1)
flags.DEFINE_integer("seed", 42, "First seed.")
flags.DEFINE_string("study_dir", "", "Where runs, logs and tables go; default studies/<name>.")
flags.DEFINE_string("train_flagfile", "", "train.py flagfile for every run; {arch} is replaced by the arch.")
flags.DEFINE_string("data_dir", "tfrecords", "Shards of every run (unless --vary=dataset_size).")
flags.DEFINE_string("convert_flagfile", "", "make_tfrecords.py flagfile for --vary=dataset_size "
                    "(--limit and --out_dir are added per size).")

FLAGS = flags.FLAGS


def config_from_flags() -> study.StudyConfig:
    unknown = [a for a in FLAGS.archs if a not in archs.ARCH_NAMES]
    if unknown:
        raise study.StudyError(f"--archs: unknown {', '.join(unknown)}; choose from {', '.join(archs.ARCH_NAMES)}.")
    try:
        values = tuple(int(v) for v in FLAGS.values)
    except ValueError:
        raise study.StudyError(f"--values={','.join(FLAGS.values)}: give whole numbers, e.g. 5,10,15.") from None
    if FLAGS.vary != "none" and not values:
        raise study.StudyError(f"--vary={FLAGS.vary} needs --values, e.g. --values=5,10,15.")
    return study.StudyConfig(name=FLAGS.name, archs=tuple(FLAGS.archs), vary=FLAGS.vary, values=values,
                             repeats=FLAGS.repeats, seed=FLAGS.seed, study_dir=FLAGS.study_dir,
                             train_flagfile=FLAGS.train_flagfile, data_dir=FLAGS.data_dir,
                             convert_flagfile=FLAGS.convert_flagfile)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
        study.run_study(config, echo=lambda line: print(line, flush=True))
    except study.StudyError as e:
        print(f"study: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nstudy: interrupted; run the same command again to continue.", file=sys.stderr)
        sys.exit(130)
    with open(os.path.join(config.directory, "study.md")) as f:
        print("\n" + f.read())
    print(f"tables and plot in {config.directory}/ (study.md, study.csv, study_runs.csv, study.png); "
          f"compare the runs: tensorboard --logdir={config.directory}/runs")


def run() -> None:
    flags.mark_flags_as_required(["name", "archs"])
    app.run(main)


if __name__ == "__main__":  # python -m celeba_gender.cli.study
    run()
