"""What the labels are, and what follows from it for choosing the best checkpoint."""

from __future__ import annotations

# The validation figures that can pick the best checkpoint (and an attribute's decision threshold).
BEST_METRICS = ("accuracy", "balanced_accuracy")


def best_metric(train: dict) -> str:
    """The validation figure a run (its recorded ``train`` settings) picks its best checkpoint and, with
    attributes, each attribute's decision threshold by: its ``best_metric``, where ``auto`` (and runs recorded
    before the setting existed) means balanced accuracy when the loss was weighted (``class_weights``,
    ``attribute_weights=balanced``), else accuracy."""
    chosen = train.get("best_metric", "auto")
    if chosen != "auto":
        return chosen
    weighted = bool(train.get("class_weights")) or train.get("attribute_weights", "none") != "none"
    return "balanced_accuracy" if weighted else "accuracy"
