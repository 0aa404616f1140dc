"""The epoch loop of one run: training steps in logging windows, validation, checkpoints and history.

An epoch is ``steps_per_epoch`` steps (one exact pass over the training split), run ``steps_per_execution``
steps per call and reported every ``log_every_steps`` steps: to TensorBoard on the global-step axis (loss,
accuracy, learning rate, images/s and input-wait fraction of the window) and to a :class:`Monitor` (the
command line prints it). At each epoch end the model is validated (same axis), checkpointed (and kept as the
best when the validation figure ``best_metric`` improved: accuracy, or balanced accuracy, the mean over the
attributes for a multi-attribute model), and a row is appended to ``history.csv``. The validation loss is the
training loss on the validation split, weighted as training weighs it (class weights, the attributes'
positive weights), so that the two losses can be compared.

Stopping early: ``should_stop()`` is asked before every call; when it returns a reason ("preempted" after a
SIGTERM, "interrupted" after Ctrl-C), the call carries this process's vote, and when any replica of any
worker voted, every worker checkpoints the same step and raises :class:`celeba_gender.train.step.Stopped` (saving is
collective under MultiWorkerMirroredStrategy, so all must stop together). Validation is not interrupted (it
is short next to an epoch); a stop asked during it takes effect at the next step.

A restart resumes at that step: the training iterator starts at that global step (the rest of the interrupted
pass, in its order: pipeline.train_dataset's ``start_step``), the steps' random draws are keyed by the step
(loop.py) or restored (Dropout's), and the checkpoint holds the epoch's running sums, so the epoch still has
exactly ``steps_per_epoch`` steps and its history row covers all of them. Under ``--deterministic`` the run
ends with exactly the weights of a run never stopped.

Under loss scaling a step whose gradients are not finite applies no update. The learning-rate schedule follows
the updates applied (``optimizer.iterations``, Keras' rule: a skipped step neither spends warm-up nor decays
the rate), so the logged learning rate is the schedule at the updates applied, and the skipped steps are
logged (``skipped_steps``: TensorBoard and history.csv; TensorBoard also gets the ``loss_scale``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from celeba_gender.core import fileio
from celeba_gender.core.plotting import figure_png
from celeba_gender.evaluate import figures
from celeba_gender.rundir import directory
from celeba_gender.train import step, optimizers
from celeba_gender.tasks.base import BEST_METRICS
from celeba_gender.train.checkpoints import Checkpoints, RunState
from celeba_gender.core.errors import UserError
from celeba_gender.train.distributed_input import Feed
from celeba_gender.rundir.tensorboard import Summaries

HISTORY = "history.csv"


class Diverged(UserError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Window:
    """What the steps since the last report did."""

    epoch: int  # 0-based
    epochs: int
    step: int  # steps done in this epoch
    steps_per_epoch: int
    global_step: int
    loss: float
    accuracy: float
    learning_rate: float
    images_per_sec: float
    input_wait_fraction: float


class Monitor:
    """Receives a run's progress. The library's default reports nothing; cli/console.py prints."""

    def started(self, header: dict) -> None:
        """Once, before the first step: what is trained, on what, how (see trainer.describe), and the validation
        figure that picks the best epoch (``best_metric``)."""

    def window(self, window: Window) -> None:
        """Every ``log_every_steps`` steps and at the end of each epoch's training steps."""

    def epoch_done(self, row: dict, improved: bool) -> None:
        """After each epoch's validation: its history row."""

    def note(self, text: str) -> None:
        """Anything else worth a line (resuming, stopping...)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When things happen, in steps."""

    epochs: int
    steps_per_execution: int = 1
    log_every_steps: int = 100
    checkpoint_steps: int = 0  # 0: at epoch ends only
    profile_steps: tuple[int, int] = (0, 0)


class EpochLoop:
    """Runs the remaining epochs of a run (see the module docstring)."""

    def __init__(self, train_loop: step.TrainLoop, feed: Feed, state: RunState, checkpoints: Checkpoints,
                 summaries: Summaries, schedule: Schedule, run_dir: str, monitor: Monitor | None = None,
                 host_augment: Callable | None = None, should_stop: Callable[[], str | None] = lambda: None,
                 best_metric: str = "accuracy"):
        """``best_metric``: the validation figure that picks the best checkpoint (accuracy or balanced_accuracy)."""
        if best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {BEST_METRICS}, got {best_metric!r}")
        self.best_metric = best_metric
        self.loop, self.feed, self.state, self.checkpoints = train_loop, feed, state, checkpoints
        self.summaries, self.schedule, self.run_dir = summaries, schedule, run_dir
        self.monitor = monitor or Monitor()
        self.should_stop = should_stop
        self._host_augment = host_augment
        self._iterator = None

    @property
    def steps_per_epoch(self) -> int:
        return self.feed.steps_per_epoch

    def run(self) -> None:
        """Trains from the state's epoch and step to the last epoch; raises Stopped or Diverged."""
        self._iterator = self.feed.train(self._host_augment, self.state.global_step(self.steps_per_epoch))
        if self.checkpoints.chief:
            trim_history(self.run_dir, int(self.state.epoch.numpy()))
        for epoch in range(int(self.state.epoch.numpy()), self.schedule.epochs):
            row = self._train_steps(epoch)
            self._end_epoch(epoch, row)

    def _train_steps(self, epoch: int) -> dict:
        """The rest of an epoch's training steps; returns the epoch's training figures."""
        s, spe = self.schedule, self.steps_per_epoch
        done = int(self.state.step.numpy())
        epoch_totals, train_seconds = self.state.restored_sums()  # of earlier processes' steps of this epoch
        window_totals, window_seconds = None, 0.0
        while done < spe:
            global_step = epoch * spe + done
            # Calls end at window boundaries, so windows have their nominal size.
            until_log = s.log_every_steps - global_step % s.log_every_steps
            n = min(s.steps_per_execution, spe - done, until_log)
            self.summaries.profile(global_step, *s.profile_steps)
            vote = _VOTES.get(self.should_stop(), 0.0)
            start = time.perf_counter()
            stats = self.loop.train(self._iterator, n, vote, global_step)
            seconds = time.perf_counter() - start
            if not math.isfinite(float(stats["loss_sum"])):
                raise Diverged(f"the training loss became {float(stats['loss_sum'])} at epoch {epoch + 1}, step "
                               f"{done + n}: stopped. The last good checkpoint is kept in {self.checkpoints.dir}. "
                               "Lower --lr, or use --precision=float32.")
            done += n
            global_step += n
            self.state.step.assign(done)
            train_seconds += seconds
            window_seconds += seconds
            epoch_totals = _add(epoch_totals, stats)
            window_totals = _add(window_totals, stats)
            if global_step % s.log_every_steps == 0 or done == spe:
                self._report(epoch, done, global_step, window_totals, window_seconds)
                window_totals, window_seconds = None, 0.0
            reason = _reason(float(stats["stop_votes"]))
            if reason:
                self.state.keep_sums(epoch_totals, train_seconds)
                self._stop(reason, epoch, done, global_step)
            if s.checkpoint_steps and global_step % s.checkpoint_steps < n and done < spe:
                self.loop.sync_non_trainable()
                self.state.keep_sums(epoch_totals, train_seconds)
                self.checkpoints.save(global_step)
        self.summaries.profile((epoch + 1) * spe, *s.profile_steps)
        m = step.summarize(epoch_totals) if epoch_totals else {"loss": math.nan, "accuracy": math.nan,
                                                               "auc": math.nan, "count": 0}
        applied = optimizers.updates_applied(self.loop.optimizer)
        return {"epoch": epoch + 1, "global_step": (epoch + 1) * spe, "loss": round(m["loss"], 6),
                "accuracy": round(m["accuracy"], 6), "auc": round(m["auc"], 6),
                "lr": float(f"{optimizers.learning_rate(self.loop.optimizer, applied):.6g}"),
                "skipped_steps": (epoch + 1) * spe - applied,
                "images_per_sec": round(m["count"] / max(train_seconds, 1e-9), 1),
                "input_wait_fraction": round(float(epoch_totals["input_wait"]) / max(train_seconds, 1e-9), 4)
                if epoch_totals else 0.0, "train_seconds": round(train_seconds, 2)}

    def _report(self, epoch: int, done: int, global_step: int, totals: dict, seconds: float) -> None:
        m = step.summarize(totals)
        applied = optimizers.updates_applied(self.loop.optimizer)
        window = Window(epoch, self.schedule.epochs, done, self.steps_per_epoch, global_step, m["loss"],
                        m["accuracy"], optimizers.learning_rate(self.loop.optimizer, applied),
                        m["count"] / max(seconds, 1e-9), float(totals["input_wait"]) / max(seconds, 1e-9))
        scalars = {"loss": window.loss, "accuracy": window.accuracy, "learning_rate": window.learning_rate,
                   "images_per_sec": window.images_per_sec, "input_wait_fraction": window.input_wait_fraction}
        scale = optimizers.loss_scale(self.loop.optimizer)
        if scale is not None:
            scalars.update({"skipped_steps": global_step - applied, "loss_scale": scale})
        self.summaries.scalars("train", global_step, scalars)
        self.monitor.window(window)

    def _stop(self, reason: str, epoch: int, done: int, global_step: int) -> None:
        self.loop.sync_non_trainable()
        path = self.checkpoints.save(global_step)
        self.summaries.flush()
        raise step.Stopped(reason, epoch, done, path)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        self.loop.sync_non_trainable()
        probs, labels = self.loop.predict(self.feed.evaluation("validation"))
        loss = self.loop.evaluation_loss(probs, labels, self.feed.class_weights())  # training's, weighted alike
        if self.feed.multi_label:  # accuracy and AUC are the means over the attributes (decisions at 0.5)
            metrics = metrics.attribute_metrics(probs, labels, self.feed.outputs)
            val = {"loss": loss, "accuracy": metrics["mean_accuracy"], "auc": metrics["mean_roc_auc"],
                   "balanced_accuracy": metrics["mean_balanced_accuracy"]}
        else:
            metrics = metrics.class_metrics(probs, labels, self.feed.class_names)
            val = {"loss": loss, "accuracy": metrics["accuracy"], "auc": metrics["roc_auc"],
                   "balanced_accuracy": metrics["balanced_accuracy"]}
        self.state.epoch.assign(epoch + 1)
        self.state.step.assign(0)
        # state.best holds the best figure of best_metric so far (its checkpoint name says accuracy: older runs).
        improved = val[self.best_metric] > float(self.state.best.numpy())
        if improved:
            self.state.best.assign(val[self.best_metric])
        global_step = (epoch + 1) * self.steps_per_epoch
        row.update({f"val_{k}": round(v, 6) for k, v in val.items()})
        if self.checkpoints.chief:  # before the checkpoint: a restart trims rows its checkpoint does not cover
            append_history(self.run_dir, row)
        self.checkpoints.save(global_step, best=improved)
        self.summaries.scalars("train", global_step, {"auc": row["auc"]})
        self.summaries.scalars("validation", global_step, val)
        if self.feed.multi_label:
            for name, m in metrics["attributes"].items():
                self.summaries.scalars("validation", global_step, {f"attributes/{name}/accuracy": m["accuracy"],
                                                                   f"attributes/{name}/auc": m["roc_auc"]})
        else:
            matrix = figures.confusion_matrix_figure(np.asarray(metrics["confusion_matrix"]), self.feed.class_names,
                                                     f"validation, epoch {epoch + 1}")
            self.summaries.figure("validation", "confusion_matrix", global_step, figure_png(matrix))
        self.monitor.epoch_done(row, improved)


# A process's stop vote (loop.TrainLoop.train) by reason: the sum over replicas still tells which reason any
# replica had, preemption first (a SIGTERM's grace period is the tighter deadline).
_VOTES = {directory.PREEMPTED: 1.0, directory.INTERRUPTED: 1e-6}


def _reason(votes: float) -> str | None:
    if votes >= 1.0:
        return directory.PREEMPTED
    return directory.INTERRUPTED if votes > 0 else None


def _add(totals: dict | None, stats: dict) -> dict:
    # Restored totals have no stop_votes.
    return dict(stats) if totals is None else {k: totals[k] + stats[k] if k in totals else stats[k] for k in stats}


def trim_history(run_dir: str, epochs_done: int) -> None:
    """Drops history.csv's rows of epochs the restored checkpoint does not cover (a process stopped between
    writing an epoch's row and its checkpoint), so that a restart writes each epoch once."""
    path = fileio.join(run_dir, HISTORY)
    if not fileio.exists(path):
        return
    rows = list(csv.DictReader(io.StringIO(fileio.read_text(path))))
    kept = [r for r in rows if int(r["epoch"]) <= epochs_done]
    if len(kept) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(kept)
    with fileio.disk_space_for("history.csv", run_dir):
        fileio.write_text(path, buffer.getvalue())


def append_history(run_dir: str, row: dict) -> None:
    """Appends one epoch's row to ``history.csv`` (with a header when the file is new)."""
    path = fileio.join(run_dir, HISTORY)
    new = not fileio.exists(path)
    with fileio.disk_space_for("history.csv", run_dir), tf.io.gfile.GFile(path, "a") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
