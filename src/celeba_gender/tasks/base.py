"""What the labels are: the one object the rest of the engine asks about them.

A :class:`Task` is chosen once per run (:mod:`celeba_gender.tasks.kinds`) and then owns everything that differs
between kinds of labels: which record fields they come from and how padding examples are marked (the input
pipeline asks), the model's output activation (the model builder asks), the targets, label smoothing and the
per-example loss (the training step asks), the per-step figures reduced across replicas (accuracy and the AUC
histograms), the metrics of a split's predictions (validation and evaluation ask), the decisions and the export
signature (serving asks), and its record in ``config.json`` and ``labels.json``. Two kinds exist:
:class:`~celeba_gender.tasks.classification.Classification` (one attribute's classes, one softmax) and
:class:`~celeba_gender.tasks.multi_attribute.MultiAttribute` (one sigmoid per attribute). A third kind (say, age
regression) is one more subclass and one line in ``kinds.py``.

Tasks are frozen dataclasses; TensorFlow is imported by the methods that build ops (they run inside the
training step's and the pipeline's traced functions), so that configs and commands can name tasks without it.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import numpy as np

from celeba_gender.core.errors import UserError

# The validation figures that can pick the best checkpoint (and an attribute's decision threshold).
BEST_METRICS = ("accuracy", "balanced_accuracy")
PADDING = -1  # the label value of padding examples (evaluation pads batches to a common size)
AUC_BINS = 200  # score histogram resolution of the training step's AUC (validation's AUC is exact)


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


def check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


class TaskError(UserError, ValueError):
    """Labels that cannot be had from these shards or this record; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
    """One kind of labels (see the module docstring). ``outputs``: the names of the model's outputs, in order."""

    kind: ClassVar[str]
    activation: ClassVar[str]  # the output layer's: "softmax" or "sigmoid"
    outputs: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    # --- the record ------------------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """What config.json ("task") and export/labels.json keep of it (kinds.from_record reads it back)."""
        record = {"kind": self.kind}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            record[field.name] = list(value) if isinstance(value, tuple) else value
        return record

    @abc.abstractmethod
    def for_shards(self, manifest: dict, where: str = "these shards") -> Task:
        """The same task reading its labels from shards described by ``manifest`` (their attribute columns may
        lie elsewhere); TaskError, naming the shards as ``where`` says, when they do not hold them."""

    def shard_warnings(self, manifest: dict) -> list[str]:
        """What about these shards may not suit this task (the run prints each as a warning)."""
        return []

    @abc.abstractmethod
    def weighted(self, statistics) -> Task:
        """This task weighing its loss from the training split's statistics (``statistics``: an object with
        ``training_class_counts()`` and ``positive_rates(columns)``, the run's input)."""

    @property
    def weights_loss(self) -> bool:
        """Whether its loss weighs examples (then balanced accuracy is what the weighting serves)."""
        return False

    # --- the input pipeline ----------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def record_keys(self) -> tuple[str, ...]:
        """The schema keys the labels are parsed from."""

    @abc.abstractmethod
    def labels(self, parsed: dict):
        """A batch of parsed records -> its labels tensor (see the subclass for dtype and shape)."""

    def cache_key(self) -> list:
        """What of this task shapes a cached example's labels (a file cache is keyed by it)."""
        return [self.kind, list(self.outputs)]

    # --- the training step (TensorFlow ops) --------------------------------------------------------------------

    @abc.abstractmethod
    def targets(self, labels):
        """float32 targets [B, outputs] of a batch's labels (before mixing and smoothing)."""

    @abc.abstractmethod
    def smooth(self, targets, label_smoothing: float):
        """Label smoothing of (possibly mixed) targets."""

    @abc.abstractmethod
    def per_example_loss(self, targets, probs):
        """The loss of each example [B] (what the step minimises, before example weights)."""

    def example_weights(self, labels):
        """Each example's weight in the loss [B], or None when all weigh 1."""
        return None

    @property
    @abc.abstractmethod
    def score_rows(self) -> int:
        """Rows of the step's AUC histograms (one per scored output)."""

    @abc.abstractmethod
    def step_figures(self, probs, labels) -> tuple:
        """(correct [B] in [0, 1], scores [B, score_rows], positive [B, score_rows] booleans) of a batch: the
        step sums them across replicas into accuracy and AUC histograms."""

    # --- predictions of a split (numpy) ------------------------------------------------------------------------

    def real(self, labels: np.ndarray) -> np.ndarray:
        """Which rows of gathered labels are examples, not padding."""
        labels = np.asarray(labels)
        return (labels.reshape(len(labels), -1)[:, 0] if len(labels) else labels) != PADDING

    @abc.abstractmethod
    def empty_labels(self) -> np.ndarray:
        """Labels of no examples, with the right dtype and trailing shape."""

    @abc.abstractmethod
    def loss(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """The mean training loss of these predictions, weighted as training weighs it."""

    @abc.abstractmethod
    def metrics(self, probs: np.ndarray, labels: np.ndarray) -> dict:
        """Every figure of these predictions (tasks.metrics)."""

    @abc.abstractmethod
    def validation_figures(self, metrics: dict) -> dict[str, float]:
        """{accuracy, auc, balanced_accuracy} of :meth:`metrics`' result: what the epoch line, history.csv and
        the best checkpoint use."""

    def validation_scalars(self, metrics: dict) -> dict[str, float]:
        """Further TensorBoard scalars of a validation (per output), beside :meth:`validation_figures`."""
        return {}

    # --- decisions and serving ---------------------------------------------------------------------------------

    @property
    def tunes_decisions(self) -> bool:
        """Whether a finished run chooses its decisions on the validation split (:meth:`tuned`)."""
        return False

    def tuned(self, probs: np.ndarray, labels: np.ndarray, metric: str) -> Task:
        """This task deciding as chosen on these (validation) predictions to maximise ``metric``."""
        return self

    @abc.abstractmethod
    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The decisions of a batch of probabilities, comparable with its labels (class ids, or 0/1 per
        attribute)."""

    @abc.abstractmethod
    def serving_outputs(self, probs) -> dict:
        """The SavedModel's outputs for a batch of probabilities (TensorFlow ops)."""

    @abc.abstractmethod
    def describe(self, probs: np.ndarray) -> tuple[str, float | None]:
        """One example's decision for a person: (label text, its probability or None)."""

    @abc.abstractmethod
    def explained_output(self, probs: np.ndarray, output: str | None = None) -> tuple[int, float]:
        """(output index, sign) a Grad-CAM of one example explains: the evidence for the decision made."""
