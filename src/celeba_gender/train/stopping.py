"""Stopping a run on request, in one place: the signal, the vote every worker learns, the exception that carries
the checkpoint written, and the command's exit codes.

Clusters preempt a job with SIGTERM and a grace period (Slurm's --signal, Kubernetes'
terminationGracePeriodSeconds, spot VMs) before SIGKILL. Instead of dying at once, a run then finishes the
step in progress, checkpoints it, records why it stopped and exits; rerunning the same command resumes at
that step. Under MultiWorkerMirroredStrategy the signal may reach one worker only, and saving a checkpoint is
collective, so each training call carries this process's :func:`vote` and returns the sum of every replica's
votes: all workers learn after the same call that one wants to stop (:func:`reason_of`), checkpoint the same step
(the epoch loop does) and raise :class:`Stopped`. The command maps the reason to its exit code
(:data:`EXIT_CODES`).

The handlers are installed when the strategy exists: creating MultiWorkerMirroredStrategy starts TensorFlow's
coordination service, whose preemption notifier installs a SIGTERM handler of its own that would otherwise
swallow the signal.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from celeba_gender.rundir.directory import INTERRUPTED, PREEMPTED, StoppedAt

# Exit codes of a stopped train.py: 128 + the signal's number, as a shell reports a process killed by it.
EXIT_CODES = {PREEMPTED: 143, INTERRUPTED: 130}
# A process's vote by reason: their sum over replicas still tells which reason any replica had, preemption first
# (a SIGTERM's grace period is the tighter deadline).
_VOTES = {PREEMPTED: 1.0, INTERRUPTED: 1e-6}


class Stopped(StoppedAt):
    """Training stopped at a step on request (a signal); a checkpoint of that step was saved (when
    ``checkpoint`` is set). The run directory records it (rundir.directory.RunDirectory.running)."""

    def __init__(self, reason: str, epoch: int | None = None, step: int | None = None, checkpoint: str | None = None):
        where = f" at epoch {epoch + 1}, step {step}" if epoch is not None else ""
        saved = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"{reason}{where}{saved}")
        self.reason, self.epoch, self.step, self.checkpoint = reason, epoch, step, checkpoint

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 1)


def vote(reason: str | None) -> float:
    """This process's vote for a training call: 0.0 when it does not want to stop."""
    return _VOTES.get(reason, 0.0)


def reason_of(votes: float) -> str | None:
    """The reason every worker stops for, from the sum of all replicas' votes (None: go on)."""
    if votes >= 1.0:
        return PREEMPTED
    return INTERRUPTED if votes > 0 else None


class StopSignals:
    """Callable: the reason to stop (``"preempted"`` after SIGTERM, ``"interrupted"`` after Ctrl-C) or None.

    A second Ctrl-C raises KeyboardInterrupt at once, for a user who does not want to wait for the step.
    ``announce(text)`` is told when a signal arrives (e.g. to print it).
    """

    def __init__(self, announce: Callable[[str], None] | None = None):
        self.reason: str | None = None
        self._announce = announce

    def install(self) -> None:
        """Takes SIGTERM and SIGINT (call it from the main thread, after the strategy is created)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = PREEMPTED if signum == signal.SIGTERM else INTERRUPTED
        if self._announce is not None:
            name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
            self._announce(f"{name} received: stopping after this step with a checkpoint (Ctrl-C again to stop at "
                           "once).")

    def __call__(self) -> str | None:
        return self.reason


def stop_if_asked(should_stop: Callable[[], str | None]) -> None:
    """Between the closing steps of a run (export, test evaluation): training is done, a rerun only redoes
    these."""
    reason = should_stop()
    if reason:
        raise Stopped(reason)
