"""A run's checkpoints: the latest few and the best one, numbered by global step, for every strategy.

What a checkpoint holds: the model, the optimizer (with its step counter and slots) and :class:`RunState` (epochs
finished, steps done in the current epoch, best validation figure of ``--best_metric``, the running sums of the
epoch in progress, and the states of the Keras random generators: Dropout's, the augmentation policies'), so a
restart continues at the exact step where the previous process stopped, with the same random draws. (Keras 3 does
not put a layer's SeedGenerator state into a ``tf.train.Checkpoint`` of the model: :func:`random_states` finds
them.)

Under MultiWorkerMirroredStrategy every worker must take part in saving (saving may run collectives), but only
the chief's files are the run's: the chief writes into ``RUN/checkpoints/`` and the other workers into
temporary directories that are deleted at the end (TensorFlow's multi-worker rule). Every worker restores the
chief's files.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from celeba_gender.core import fileio
from celeba_gender.rundir.directory import RunDirectory

class RunState:
    """The counters a checkpoint records besides the model and optimizer (create them in the strategy scope).

    ``epoch_sums``: the running sums of an epoch's training statistics, as zeros of their dtypes and shapes
    (``step.zero_stats``); with the epoch's training seconds they are saved with every mid-epoch checkpoint, so
    that the epoch's row of history.csv covers the steps of every process that trained it. ``random_states``:
    variables to save with them (:func:`random_states`).
    """

    def __init__(self, epoch_sums: dict[str, np.ndarray] | None = None, random_states: Sequence = ()):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done_in_epoch")
        # The best validation figure of --best_metric so far.
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_validation_figure")
        template = {**(epoch_sums or {}), "train_seconds": np.float64(0)}
        self.sums = {k: tf.Variable(v, trainable=False, name=f"epoch_{k}") for k, v in template.items()}
        self.random_states = list(random_states)

    def global_step(self, steps_per_epoch: int) -> int:
        return int(self.epoch.numpy()) * steps_per_epoch + int(self.step.numpy())

    def keep_sums(self, totals: dict | None, seconds: float) -> None:
        """Records the epoch's sums so far (before a mid-epoch checkpoint)."""
        for k, v in self.sums.items():
            v.assign(seconds if k == "train_seconds" else totals[k] if totals else np.zeros_like(v.numpy()))

    def restored_sums(self) -> tuple[dict | None, float]:
        """(sums of the steps done in this epoch, their seconds) as a checkpoint recorded them; (None, 0.0) at an
        epoch's start, or from a checkpoint written before they were recorded."""
        values = {k: v.numpy() for k, v in self.sums.items()}
        seconds = float(values.pop("train_seconds"))
        if int(self.step.numpy()) == 0 or not any(np.any(v) for v in values.values()):
            return None, 0.0
        return values, seconds

    def trackables(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best": self.best,
                _RESUME: tf.train.Checkpoint(sums=self.sums, random=self.random_states)}


# Checkpoints written before the epoch sums and random states were recorded lack this node.
_RESUME = "resume"


def random_states(*layers) -> list:
    """The random-generator states of Keras layers (their ``keras.random.SeedGenerator`` objects, e.g. Dropout's):
    Keras 3 lists them in ``variables`` but not in ``weights``, and a checkpoint of the model omits them."""
    states = []
    for layer in layers:
        if layer is not None:
            weights = {id(w) for w in layer.weights}
            states += [v for v in layer.variables if id(v) not in weights]
    return states


class Checkpoints:
    """Saves and restores one run's model, optimizer and :class:`RunState`."""

    def __init__(self, run: RunDirectory, model, optimizer, state: RunState, keep: int = 3):
        """``run``: whose checkpoints (the chief's, written by its writer; the other workers save alongside, into
        a temporary directory)."""
        self.chief_dir = run.checkpoint_dir
        self.chief = run.writer
        self.dir = self.chief_dir if self.chief else tempfile.mkdtemp(prefix="ckpt-worker-")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.trackables())
        self._without_resume = tf.train.Checkpoint(model=model, optimizer=optimizer, **{
            k: v for k, v in state.trackables().items() if k != _RESUME})
        self._latest = tf.train.CheckpointManager(self.checkpoint, self.dir, max_to_keep=keep, checkpoint_name="ckpt")
        self._best = tf.train.CheckpointManager(self.checkpoint, fileio.join(self.dir, "best"), max_to_keep=1,
                                                checkpoint_name="best")

    def restore_latest(self) -> str | None:
        """Restores the chief's latest checkpoint (on every worker); returns its path, None when there is none."""
        path = tf.train.latest_checkpoint(self.chief_dir)
        if path:
            keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
            recorded = any(k.startswith(_RESUME + "/") for k in keys)
            # An older checkpoint resumes too: its epoch's row then covers the steps after the restart only.
            (self.checkpoint if recorded else self._without_resume).restore(path).assert_existing_objects_matched()
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

