"""study.py: flags of StudyConfig -> celeba_gender.study.grid.run_study() -> STUDY/study.md and friends."""

from __future__ import annotations

import os

from celeba_gender.cli import config_flags, runner, tf_startup
from celeba_gender.study.config import StudyConfig

config_flags.define(StudyConfig, __name__)


def main(argv: list[str]) -> None:
    config, _ = config_flags.build(StudyConfig)
    with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice
        from celeba_gender.study import grid
    grid.run_study(config, echo=lambda line: print(line, flush=True))
    with open(os.path.join(config.directory, "study.md")) as f:
        print("\n" + f.read())
    print(f"tables and plot in {config.directory}/ (study.md, study.csv, study_runs.csv, study.png); "
          f"compare the runs: tensorboard --logdir={config.directory}/runs")


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "study", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.study
    run()
