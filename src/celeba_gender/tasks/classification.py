"""One attribute's classes, one softmax: the shards' own label (``image/class/label``), 0 = ``Female`` and
1 = ``Male`` for the default attribute (``not_<Name>`` / ``<Name>`` for others).

Labels are int32 class ids [B]; padding examples carry -1. The loss is the cross-entropy of the softmax output,
each example weighed by its class's weight when the classes are balanced by weight (``--class_weights``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from celeba_gender.shards import schema
from celeba_gender.tasks import metrics
from celeba_gender.tasks.base import Task, TaskError, check_smoothing


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """``outputs``: the class names in label order; ``attribute``: the CelebA attribute they are the classes of;
    ``class_weights``: each class's weight in the loss (None: all 1)."""

    kind = "classification"
    activation = "softmax"
    attribute: str = "Male"
    class_weights: tuple[float, ...] | None = None

    def for_shards(self, manifest: dict, where: str = "these shards") -> Classification:
        found = list(manifest.get("class_names", []))
        if found != list(self.outputs):
            raise TaskError(f"this run was trained for {self.attribute} (classes {', '.join(self.outputs)}), but "
                            f"{where} were converted for {manifest.get('attribute')} (classes {', '.join(found)}): "
                            f"give shards converted with --attribute={self.attribute}")
        return self

    def weighted(self, statistics) -> Classification:
        """Each class weighing total / (classes x its count) of the training split: both count equally."""
        return dataclasses.replace(self, class_weights=balanced_class_weights(statistics.training_class_counts()))

    @property
    def weights_loss(self) -> bool:
        return self.class_weights is not None

    # --- the input pipeline

    @property
    def record_keys(self) -> tuple[str, ...]:
        return (schema.LABEL,)

    def labels(self, parsed: dict):
        import tensorflow as tf

        return tf.cast(parsed[schema.LABEL], tf.int32)

    # --- the training step

    def targets(self, labels):
        import tensorflow as tf

        return tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), self.num_outputs, dtype=tf.float32)

    def smooth(self, targets, label_smoothing: float):
        check_smoothing(label_smoothing)
        # Affine, and every row sums to 1, so smoothing a mixed row equals mixing smoothed one-hot rows.
        return targets * (1.0 - label_smoothing) + label_smoothing / self.num_outputs if label_smoothing else targets

    def per_example_loss(self, targets, probs):
        import tensorflow as tf

        probs = tf.clip_by_value(tf.cast(probs, tf.float32), 1e-7, 1.0)
        return -tf.reduce_sum(targets * tf.math.log(probs), axis=-1)  # cross-entropy of the softmax output

    def example_weights(self, labels):
        if self.class_weights is None:
            return None
        import tensorflow as tf

        return tf.gather(tf.constant(self.class_weights, tf.float32), tf.cast(labels, tf.int32))

    @property
    def score_rows(self) -> int:
        return 1  # P(class 1): the attribute itself

    def step_figures(self, probs, labels) -> tuple:
        import tensorflow as tf

        probs = tf.cast(probs, tf.float32)
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels), tf.float32)
        return correct, probs[:, -1:], tf.equal(labels, self.num_outputs - 1)[:, None]

    # --- predictions of a split

    def empty_labels(self) -> np.ndarray:
        return np.zeros((0,), np.int32)

    def loss(self, probs: np.ndarray, labels: np.ndarray) -> float:
        labels = np.asarray(labels, np.int64)
        per_example = -np.log(np.clip(np.asarray(probs, np.float64)[np.arange(len(labels)), labels], 1e-7, 1.0))
        if self.class_weights is not None:
            per_example = per_example * np.asarray(self.class_weights)[labels]
        return float(per_example.mean()) if len(per_example) else float("nan")

    def metrics(self, probs: np.ndarray, labels: np.ndarray) -> dict:
        return metrics.class_metrics(probs, labels, list(self.outputs))

    def validation_figures(self, metrics: dict) -> dict[str, float]:
        return {"accuracy": metrics["accuracy"], "auc": metrics["roc_auc"],
                "balanced_accuracy": metrics["balanced_accuracy"]}

    # --- decisions and serving

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs).argmax(-1)

    def serving_outputs(self, probs) -> dict:
        import tensorflow as tf

        probs = tf.cast(probs, tf.float32)
        class_id = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_id": class_id,
                "class_name": tf.gather(tf.constant(list(self.outputs)), class_id)}

    def describe(self, probs: np.ndarray) -> tuple[str, float | None]:
        k = int(np.argmax(probs))
        return self.outputs[k], float(probs[k])

    def explained_output(self, probs: np.ndarray, output: str | None = None) -> tuple[int, float]:
        return int(np.argmax(probs)), 1.0  # the class predicted


def balanced_class_weights(class_counts: tuple[int, ...]) -> tuple[float, ...]:
    """Weights that make each class count equally: total / (classes x class count)."""
    total = sum(class_counts)
    return tuple(total / (len(class_counts) * max(c, 1)) for c in class_counts)
