"""What a run tells whoever watches it: the protocol the epoch loop reports to (the command line prints it,
cli/console.py), and the figures of one logging window."""

from __future__ import annotations

import dataclasses


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
        """Once, before the first step: what is trained, on what, how, and the validation figure that picks the
        best epoch (``best_metric``)."""

    def window(self, window: Window) -> None:
        """Every ``log_every_steps`` steps and at the end of each epoch's training steps."""

    def epoch_done(self, row: dict, improved: bool) -> None:
        """After each epoch's validation: its history row."""

    def note(self, text: str) -> None:
        """Anything else worth a line (resuming, stopping...)."""
