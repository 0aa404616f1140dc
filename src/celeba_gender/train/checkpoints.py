"""A run's checkpoints: the latest few and the best one, numbered by global step, for every strategy.

What a checkpoint holds: the model, the optimizer (with its step counter and slots) and :class:`RunState`
(epochs finished, steps done in the current epoch, best validation accuracy), so a restart continues at the
exact step where the previous process stopped.

Under MultiWorkerMirroredStrategy every worker must take part in saving (saving may run collectives), but only
the chief's files are the run's: the chief writes into ``RUN/checkpoints/`` and the other workers into
temporary directories that are deleted at the end (TensorFlow's multi-worker rule). Every worker restores the
chief's files.
"""

from __future__ import annotations

import shutil
import tempfile

import tensorflow as tf

from celeba_gender.core import fileio
from celeba_gender.rundir import directory



class RunState:
    """The counters a checkpoint records besides the model and optimizer (create them in the strategy scope)."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done_in_epoch")
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_validation_accuracy")

    def global_step(self, steps_per_epoch: int) -> int:
        return int(self.epoch.numpy()) * steps_per_epoch + int(self.step.numpy())

    def trackables(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best": self.best}


class Checkpoints:
    """Saves and restores one run's model, optimizer and :class:`RunState`."""

    def __init__(self, run_dir: str, chief: bool, model, optimizer, state: RunState, keep: int = 3):
        self.chief_dir = directory.checkpoint_dir(run_dir)
        self.chief = chief
        self.dir = self.chief_dir if chief else tempfile.mkdtemp(prefix="ckpt-worker-")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.trackables())
        self._latest = tf.train.CheckpointManager(self.checkpoint, self.dir, max_to_keep=keep, checkpoint_name="ckpt")
        self._best = tf.train.CheckpointManager(self.checkpoint, fileio.join(self.dir, "best"), max_to_keep=1,
                                                checkpoint_name="best")

    def restore_latest(self) -> str | None:
        """Restores the chief's latest checkpoint (on every worker); returns its path, None when there is none."""
        path = tf.train.latest_checkpoint(self.chief_dir)
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def restore_best(self) -> str | None:
        """Restores the best validation checkpoint (model weights are what matter); None when there is none."""
        path = tf.train.latest_checkpoint(fileio.join(self.chief_dir, "best"))
        if path:
            self.checkpoint.restore(path).expect_partial()
        return path

    def save(self, global_step: int, best: bool = False) -> str:
        """Saves as number ``global_step`` (and as the best one too when ``best``); returns the latest path."""
        with fileio.disk_space_for(f"checkpoint {global_step}", self.dir,
                                    intact="The previous checkpoints are intact."):
            # The best one first: the latest checkpoint records the best accuracy so far, so once it is written
            # a restart will not save this step as the best again. Were the best save to fail after it (a full
            # disk), the run would resume believing it had a best checkpoint it does not have.
            if best:
                self._best.save(checkpoint_number=global_step)
            path = self._latest.save(checkpoint_number=global_step)
        return path

    def finish(self) -> None:
        """Deletes a non-chief worker's temporary checkpoints (the chief's are the run's)."""
        if not self.chief:
            shutil.rmtree(self.dir, ignore_errors=True)

