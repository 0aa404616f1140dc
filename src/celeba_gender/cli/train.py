"""train.py: the flags of TrainConfig (with the arch's recipe under them) -> celeba_gender.train.trainer.train().

Where each setting comes from, lowest precedence first: its declared default, the arch's recipe
(models/recipes.py), a --flagfile, the command line. The run header and flags.txt say which.

Signals: SIGTERM (a cluster preempting the job) and the first Ctrl-C stop the run at the next step with a
checkpoint of that step; the same command resumes there. Exit codes: 0 done, 2 a user error (one line), 143
stopped by SIGTERM ("preempted"), 130 stopped by Ctrl-C ("interrupted"); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import sys

from absl import flags

from celeba_gender.cli import config_flags, runner, tf_startup
from celeba_gender.models import imagenet_weights, registry
from celeba_gender.train import config as train_config

config_flags.define(train_config.TrainConfig, __name__)


def build_config() -> tuple[train_config.TrainConfig, dict]:
    """The config and each setting's source for the parsed flags (the arch's recipe under any flag)."""
    arch, epochs = flags.FLAGS.arch, flags.FLAGS["epochs"]
    recipe = registry.get(arch).recipe(epochs.value if epochs.present else None) if arch else None
    return config_flags.build(train_config.TrainConfig, recipe=recipe)


def main(argv: list[str]) -> None:
    config, sources = build_config()  # bad settings are refused before TensorFlow is imported
    # Likewise missing ImageNet weights: offline, the user is told at once which file to copy where.
    imagenet_weights.fetch_for(config.arch, registry.get(config.arch).imagenet, config.model_config().weights)
    with tf_startup.quiet_import():  # TensorFlow's start-up lines once, not twice
        from celeba_gender.cli import console
        from celeba_gender.train import trainer
        from celeba_gender.train.stopping import StopSignals, Stopped
        tf_startup.find_devices()
    stop = StopSignals(announce=lambda text: print(f"\ntrain: {text}", file=sys.stderr, flush=True))
    monitor = console.ConsoleMonitor(config.progress)
    try:
        result = trainer.train(config, sources, monitor, stop)
    except Stopped as stopped:
        monitor.close()
        print(f"train: {stopped}. Run the same command again to resume from there.", file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)
    finally:
        monitor.close()
    print(console.format_summary(result))


def run() -> None:
    """Console-script entry point."""
    runner.run(main, "train", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.train
    run()
