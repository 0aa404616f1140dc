"""SIGTERM and Ctrl-C as a request to stop at the next step, read by the training loop between steps.

Clusters preempt a job with SIGTERM and a grace period (Slurm's --signal, Kubernetes'
terminationGracePeriodSeconds, spot VMs) before SIGKILL. Instead of dying at once, a run then finishes the
step in progress, checkpoints it, records why it stopped and exits; rerunning the same command resumes at
that step (epochs.EpochLoop does the stopping; under MultiWorkerMirroredStrategy every worker stops after the
same step).

The handlers are installed when the strategy exists: creating MultiWorkerMirroredStrategy starts TensorFlow's
coordination service, whose preemption notifier installs a SIGTERM handler of its own that would otherwise
swallow the signal.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from celeba_gender.rundir.directory import INTERRUPTED, PREEMPTED


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
