"""The epoch loop of one run: training steps in logging windows, validation, checkpoints and history.

An epoch is ``steps_per_epoch`` steps (one exact pass over the training split), run ``steps_per_execution``
steps per call and reported every ``log_every_steps`` steps: to TensorBoard on the global-step axis (loss,
accuracy, learning rate, images/s and input-wait fraction of the window) and to a :class:`Monitor` (the
command line prints it). At each epoch end the model is validated (same axis), checkpointed (and kept as the
best when the validation figure ``best_metric`` improved: accuracy or balanced accuracy, as the task computes
them), and a row is appended to ``history.csv``. The validation loss is the task's training loss on the
validation split, weighted as training weighs it, so that the two losses can be compared.

Stopping early: ``should_stop()`` is asked before every call; when it returns a reason ("preempted" after a
SIGTERM, "interrupted" after Ctrl-C), the call carries this process's vote, and when any replica of any
worker voted, every worker checkpoints the same step and raises :class:`celeba_gender.train.stopping.Stopped` (saving is
collective under MultiWorkerMirroredStrategy, so all must stop together). Validation is not interrupted (it
is short next to an epoch); a stop asked during it takes effect at the next step.

A restart resumes at that step: the training iterator starts at that global step (the rest of the interrupted
pass, in its order: pipeline.train_dataset's ``start_step``), the steps' random draws are keyed by the step
(step.py) or restored (Dropout's), and the checkpoint holds the epoch's running sums, so the epoch still has
exactly ``steps_per_epoch`` steps and its history row covers all of them. Under ``--deterministic`` the run
ends with exactly the weights of a run never stopped.

Under loss scaling a step whose gradients are not finite applies no update. The learning-rate schedule follows
the updates applied (``optimizer.iterations``, Keras' rule: a skipped step neither spends warm-up nor decays
the rate), so the logged learning rate is the schedule at the updates applied, and the skipped steps are
logged (``skipped_steps``: TensorBoard and history.csv; TensorBoard also gets the ``loss_scale``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from celeba_gender.core.errors import UserError
from celeba_gender.core.plotting import confusion_matrix_figure, figure_png
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.rundir.tensorboard import Summaries
from celeba_gender.train import optimizers, step, stopping
from celeba_gender.train.checkpoints import Checkpoints, RunState
from celeba_gender.train.config import Schedule
from celeba_gender.train.distributed_input import DistributedInput
from celeba_gender.train.monitor import Monitor, Window


class Diverged(UserError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class LoopParts:
    """What the epoch loop drives: the compiled step, the run's input, the counters and their checkpoints, the
    run directory (history.csv) and its TensorBoard writers, and the host augmentation (a tf.data map function,
    or None)."""

    step: step.TrainStep
    data: DistributedInput
    state: RunState
    checkpoints: Checkpoints
    run: RunDirectory
    summaries: Summaries
    host_augment: Callable | None = None


class EpochLoop:
    """Runs the remaining epochs of a run (see the module docstring)."""

    def __init__(self, parts: LoopParts, schedule: Schedule, monitor: Monitor | None = None,
                 should_stop: Callable[[], str | None] = lambda: None):
        """``should_stop()``: the reason to stop now, or None (stopping.StopSignals)."""
        self.parts, self.schedule = parts, schedule
        self.step, self.data, self.state, self.checkpoints = parts.step, parts.data, parts.state, parts.checkpoints
        self.summaries, self.rundir = parts.summaries, parts.run
        self.monitor = monitor or Monitor()
        self.should_stop = should_stop
        self._iterator = None

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch

    def run(self) -> None:
        """Trains from the state's epoch and step to the last epoch; raises Stopped or Diverged."""
        self._iterator = self.data.train(self.parts.host_augment, self.state.global_step(self.steps_per_epoch))
        self.rundir.trim_history(int(self.state.epoch.numpy()))
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
            vote = stopping.vote(self.should_stop())
            start = time.perf_counter()
            stats = self.step.train(self._iterator, n, vote, global_step)
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
            reason = stopping.reason_of(float(stats["stop_votes"]))
            if reason:
                self.state.keep_sums(epoch_totals, train_seconds)
                self._stop(reason, epoch, done, global_step)
            if s.checkpoint_steps and global_step % s.checkpoint_steps < n and done < spe:
                self.step.sync_non_trainable()
                self.state.keep_sums(epoch_totals, train_seconds)
                self.checkpoints.save(global_step)
        self.summaries.profile((epoch + 1) * spe, *s.profile_steps)
        m = step.summarize(epoch_totals) if epoch_totals else {"loss": math.nan, "accuracy": math.nan,
                                                               "auc": math.nan, "count": 0}
        applied = optimizers.updates_applied(self.step.optimizer)
        return {"epoch": epoch + 1, "global_step": (epoch + 1) * spe, "loss": round(m["loss"], 6),
                "accuracy": round(m["accuracy"], 6), "auc": round(m["auc"], 6),
                "lr": float(f"{optimizers.learning_rate(self.step.optimizer, applied):.6g}"),
                "skipped_steps": (epoch + 1) * spe - applied,
                "images_per_sec": round(m["count"] / max(train_seconds, 1e-9), 1),
                "input_wait_fraction": round(float(epoch_totals["input_wait"]) / max(train_seconds, 1e-9), 4)
                if epoch_totals else 0.0, "train_seconds": round(train_seconds, 2)}

    def _report(self, epoch: int, done: int, global_step: int, totals: dict, seconds: float) -> None:
        m = step.summarize(totals)
        applied = optimizers.updates_applied(self.step.optimizer)
        window = Window(epoch=epoch, epochs=self.schedule.epochs, step=done, steps_per_epoch=self.steps_per_epoch,
                        global_step=global_step, loss=m["loss"], accuracy=m["accuracy"],
                        learning_rate=optimizers.learning_rate(self.step.optimizer, applied),
                        images_per_sec=m["count"] / max(seconds, 1e-9),
                        input_wait_fraction=float(totals["input_wait"]) / max(seconds, 1e-9))
        scalars = {"loss": window.loss, "accuracy": window.accuracy, "learning_rate": window.learning_rate,
                   "images_per_sec": window.images_per_sec, "input_wait_fraction": window.input_wait_fraction}
        scale = optimizers.loss_scale(self.step.optimizer)
        if scale is not None:
            scalars.update({"skipped_steps": global_step - applied, "loss_scale": scale})
        self.summaries.scalars("train", global_step, scalars)
        self.monitor.window(window)

    def _stop(self, reason: str, epoch: int, done: int, global_step: int) -> None:
        self.step.sync_non_trainable()
        path = self.checkpoints.save(global_step)
        self.summaries.flush()
        raise stopping.Stopped(reason, epoch, done, path)

    def _end_epoch(self, epoch: int, row: dict) -> None:
        self.step.sync_non_trainable()
        task = self.step.task
        probs, labels = self.step.predict(self.data.evaluation("validation"))
        metrics = task.metrics(probs, labels)  # decisions at 0.5: thresholds are chosen once training ends
        val = {"loss": task.loss(probs, labels), **task.validation_figures(metrics)}
        self.state.epoch.assign(epoch + 1)
        self.state.step.assign(0)
        # state.best holds the best figure of best_metric so far.
        improved = val[self.schedule.best_metric] > float(self.state.best.numpy())
        if improved:
            self.state.best.assign(val[self.schedule.best_metric])
        global_step = (epoch + 1) * self.steps_per_epoch
        row.update({f"val_{k}": round(v, 6) for k, v in val.items()})
        self.rundir.append_history(row)  # before the checkpoint: a restart trims rows its checkpoint lacks
        self.checkpoints.save(global_step, best=improved)
        self.summaries.scalars("train", global_step, {"auc": row["auc"]})
        self.summaries.scalars("validation", global_step, {**val, **task.validation_scalars(metrics)})
        if "confusion_matrix" in metrics:
            figure = confusion_matrix_figure(np.asarray(metrics["confusion_matrix"]), list(task.outputs),
                                             f"validation, epoch {epoch + 1}")
            self.summaries.figure("validation", "confusion_matrix", global_step, figure_png(figure))
        self.monitor.epoch_done(row, improved)


def _add(totals: dict | None, stats: dict) -> dict:
    # Restored totals have no stop_votes.
    return dict(stats) if totals is None else {k: totals[k] + stats[k] if k in totals else stats[k] for k in stats}
