"""Several CelebA attributes in one model (``train.py --attributes=all``): one sigmoid per attribute.

Labels are float32 0/1 [B, K], the chosen columns of each record's attribute vector; padding examples carry -1
in every column. The loss is each sigmoid's binary cross-entropy, averaged over the attributes, each attribute's
positives weighed by ``positive_weights`` when rare attributes are balanced (``--attribute_weights=balanced``).

An attribute is present when its probability reaches its decision threshold. Training and validation decide at
0.5; a finished run chooses each attribute's threshold on the validation split (:func:`metrics.choose_thresholds`)
and keeps them here (``thresholds``), since a rare attribute's probabilities may rank the faces well (a high
ROC-AUC) and yet never reach 0.5. The export, the test evaluation and predict.py then decide at them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from celeba_gender.shards import schema
from celeba_gender.tasks import metrics
from celeba_gender.tasks.base import Task, TaskError, check_smoothing


@dataclasses.dataclass(frozen=True)
class MultiAttribute(Task):
    """``outputs``: the attribute names; ``columns``: where each is in the shards' attribute vector;
    ``positive_weights``: each attribute's weight of its positives (None: 1); ``thresholds``: each attribute's
    decision threshold (None: 0.5), chosen to maximise ``threshold_metric`` on the validation split."""

    kind = "attributes"
    activation = "sigmoid"
    columns: tuple[int, ...] = ()
    positive_weights: tuple[float, ...] | None = None
    thresholds: tuple[float, ...] | None = None
    threshold_metric: str = "accuracy"

    def __post_init__(self):
        for name in ("columns", "positive_weights", "thresholds"):
            value = getattr(self, name)
            if value is not None and name != "columns" and len(value) != len(self.outputs):
                raise TaskError(f"{len(value)} {name} for {len(self.outputs)} attributes")

    @property
    def decision_thresholds(self) -> np.ndarray:
        """float32 [K]: the chosen thresholds, or 0.5 each (float32, so numpy and the SavedModel decide alike)."""
        values = self.thresholds if self.thresholds is not None else (metrics.DEFAULT_THRESHOLD,) * self.num_outputs
        return np.asarray(values, np.float32)

    def for_shards(self, manifest: dict, where: str = "these shards") -> MultiAttribute:
        names = list(manifest.get("attribute_names", []))
        missing = [a for a in self.outputs if a not in names]
        if missing:
            raise TaskError(f"{where} do not hold {', '.join(missing)}, which this run predicts: give shards that "
                            "hold every attribute of the run")
        return dataclasses.replace(self, columns=tuple(names.index(a) for a in self.outputs))

    def shard_warnings(self, manifest: dict) -> list[str]:
        if manifest.get("options", {}).get("balance"):
            return [f"these shards were balanced on {manifest['attribute']} (make_tfrecords.py's default), which "
                    "skews the other attributes' rates; for --attributes convert with --nobalance"]
        return []

    def weighted(self, statistics) -> MultiAttribute:
        """Each attribute's positives weighing negatives / positives of the training split
        (:func:`balanced_positive_weights`)."""
        return dataclasses.replace(self, positive_weights=balanced_positive_weights(
            statistics.positive_rates(self.columns)))

    @property
    def weights_loss(self) -> bool:
        return self.positive_weights is not None

    # --- the input pipeline

    @property
    def record_keys(self) -> tuple[str, ...]:
        return (schema.ATTRIBUTES,)

    def labels(self, parsed: dict):
        import tensorflow as tf

        return tf.cast(tf.gather(parsed[schema.ATTRIBUTES], list(self.columns), axis=1), tf.float32)

    def cache_key(self) -> list:
        return [self.kind, list(self.outputs), list(self.columns)]

    # --- the training step

    def targets(self, labels):
        import tensorflow as tf

        return tf.cast(labels, tf.float32)  # already one 0/1 target per attribute

    def smooth(self, targets, label_smoothing: float):
        check_smoothing(label_smoothing)
        # The binary case of the softmax rule: each target is pulled towards 1/2.
        return targets * (1.0 - label_smoothing) + label_smoothing / 2 if label_smoothing else targets

    def per_example_loss(self, targets, probs):
        import tensorflow as tf

        p = tf.clip_by_value(tf.cast(probs, tf.float32), 1e-7, 1.0 - 1e-7)
        positive = targets * tf.math.log(p)
        if self.positive_weights is not None:
            positive *= tf.constant(self.positive_weights, tf.float32)
        return -tf.reduce_mean(positive + (1.0 - targets) * tf.math.log(1.0 - p), axis=-1)

    @property
    def score_rows(self) -> int:
        return self.num_outputs  # one AUC histogram per attribute

    def step_figures(self, probs, labels) -> tuple:
        import tensorflow as tf

        probs = tf.cast(probs, tf.float32)
        truth = labels > 0.5
        correct = tf.reduce_mean(tf.cast(tf.equal(probs >= 0.5, truth), tf.float32), axis=-1)
        return correct, probs, truth

    # --- predictions of a split

    def empty_labels(self) -> np.ndarray:
        return np.zeros((0, self.num_outputs), np.float32)

    def loss(self, probs: np.ndarray, labels: np.ndarray) -> float:
        if not len(labels):
            return float("nan")
        p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
        y = np.asarray(labels, np.float64)
        weights = np.asarray(self.positive_weights if self.positive_weights is not None else 1.0)
        return float(-(weights * y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1).mean())

    def metrics(self, probs: np.ndarray, labels: np.ndarray) -> dict:
        """Per attribute and their means; decisions at the thresholds when chosen (with the figures at 0.5
        beside them), else at 0.5."""
        return metrics.attribute_metrics(probs, labels, list(self.outputs), self.thresholds)

    def validation_figures(self, metrics: dict) -> dict[str, float]:
        return {"accuracy": metrics["mean_accuracy"], "auc": metrics["mean_roc_auc"],
                "balanced_accuracy": metrics["mean_balanced_accuracy"]}

    def validation_scalars(self, metrics: dict) -> dict[str, float]:
        out = {}
        for name, m in metrics["attributes"].items():
            out.update({f"attributes/{name}/accuracy": m["accuracy"], f"attributes/{name}/auc": m["roc_auc"]})
        return out

    @property
    def tunes_decisions(self) -> bool:
        return True

    def tuned(self, probs: np.ndarray, labels: np.ndarray, metric: str) -> MultiAttribute:
        """This task deciding at thresholds chosen to maximise ``metric`` on these (validation) predictions."""
        return dataclasses.replace(self, thresholds=metrics.choose_thresholds(probs, labels, metric),
                                   threshold_metric=metric)

    # --- decisions and serving

    def present(self, probs: np.ndarray) -> np.ndarray:
        """bool [N, K]: which attributes each example has, at the decision thresholds."""
        return np.asarray(probs, np.float32) >= self.decision_thresholds

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return self.present(probs).astype(np.float32)

    def serving_outputs(self, probs) -> dict:
        import tensorflow as tf

        probs = tf.cast(probs, tf.float32)
        return {"probabilities": probs, "present": probs >= tf.constant(self.decision_thresholds, tf.float32)}

    def describe(self, probs: np.ndarray) -> tuple[str, float | None]:
        present = self.present(np.asarray(probs)[None])[0]
        return ",".join(n for n, p in zip(self.outputs, present) if p), None

    def default_explained(self) -> str:
        """The attribute Grad-CAM explains unless asked: Male when predicted, else the first."""
        return "Male" if "Male" in self.outputs else self.outputs[0]

    def explained_output(self, probs: np.ndarray, output: str | None = None) -> tuple[int, float]:
        j = self.outputs.index(output or self.default_explained())
        # The evidence for the value decided: for "present", towards it; for "absent", against it.
        return j, 1.0 if self.present(np.asarray(probs)[None])[0, j] else -1.0


def balanced_positive_weights(positive_rates: tuple[float, ...]) -> tuple[float, ...]:
    """negatives / positives of each attribute, so its positives weigh as much as its negatives; capped at 100
    for attributes with almost no positives, whose weights would otherwise swamp the loss."""
    return tuple(min((1 - r) / max(r, 1e-6), 100.0) for r in positive_rates)
