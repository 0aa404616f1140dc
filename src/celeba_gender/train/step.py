"""The training loop: one train step and one eval step under ``strategy.run``, for every strategy.

Why not ``Model.fit``: Keras 3's fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), and
one loop for the default, Mirrored and MultiWorkerMirrored strategies is simpler than two.

Each replica: [augmentation, on the accelerator, outside XLA] -> forward/backward (optionally one XLA
cluster, ``jit_compile``) -> the optimizer (Keras' TF optimizer all-reduces gradients across replicas).
The loss is averaged over the *global* batch (``tf.nn.compute_average_loss``), so summing replicas gives
the batch mean. ``steps_per_execution`` steps run inside one ``tf.function`` call (an in-graph loop).
With ``LoopConfig.seed`` the augmentation and the mixing of each step draw from (seed, global step, replica)
(:func:`celeba_gender.inputs.geometry.step_seed`), so a restarted run draws what a run never stopped draws.

Metrics are sums reduced across replicas (loss, correct, count, and score histograms of positives and negatives
for AUC), so they are exact under any strategy without relying on metric-variable synchronisation.

Two kinds of model: one softmax over the classes of one attribute (integer labels [B]), or ``multi_label``: one
sigmoid per attribute (0/1 labels [B, K]) with binary cross-entropy averaged over the attributes, optionally
weighting each attribute's positives (``positive_weights``). Accuracy is then the mean over the attributes and
the AUC histograms are kept per attribute.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.inputs import geometry
from celeba_gender.inputs.augment import training_targets
from celeba_gender.inputs.config import AugmentConfig

AUC_BINS = 200  # score histogram resolution for the training AUC (validation AUC is exact)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What the step needs to know beyond the model and optimizer."""

    global_batch: int
    steps_per_execution: int = 1
    jit_compile: bool = False
    label_smoothing: float = 0.0
    num_classes: int = 2
    # tf.timestamp() is refused under op determinism, so the input-wait measurement is then off.
    measure_input_wait: bool = True
    # Its mixup / cutmix alphas are read (augment.training_targets); None or both 0: no mixing.
    mixing: AugmentConfig | None = None
    multi_label: bool = False  # num_classes sigmoid outputs (one per attribute) instead of one softmax
    positive_weights: tuple[float, ...] | None = None  # multi_label: per-attribute weight of the positives
    # Each step's augmentation and mixing draw from (seed, global step); None: the augmentation layer's own
    # generator and unseeded mixing (a restart then draws anew).
    seed: int | None = None

    @property
    def score_rows(self) -> int:
        """Rows of the AUC histograms: one per attribute, or one (P(class 1)) for a softmax."""
        return self.num_classes if self.multi_label else 1


class Stopped(Exception):
    """Training stopped at a step on request (a signal); a checkpoint of that step was saved (when
    ``checkpoint`` is set)."""

    def __init__(self, reason: str, epoch: int | None = None, step: int | None = None, checkpoint: str | None = None):
        where = f" at epoch {epoch + 1}, step {step}" if epoch is not None else ""
        saved = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"{reason}{where}{saved}")
        self.reason, self.epoch, self.step, self.checkpoint = reason, epoch, step, checkpoint


def histogram_auc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """ROC AUC from score histograms of positives and negatives (ties within a bin count half)."""
    pos, neg = pos_hist.sum(), neg_hist.sum()
    if pos == 0 or neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg_hist) - neg_hist  # negatives in lower bins
    return float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (pos * neg))


def summarize(stats: dict) -> dict:
    """Turns summed statistics into mean loss, accuracy and AUC (the mean over attributes for multi-label)."""
    count = max(float(stats["count"]), 1.0)
    pos, neg = np.atleast_2d(stats["pos_hist"]), np.atleast_2d(stats["neg_hist"])
    aucs = [histogram_auc(p, n) for p, n in zip(pos, neg)]
    auc = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
    return {"loss": float(stats["loss_sum"]) / count, "accuracy": float(stats["correct"]) / count, "auc": auc,
            "count": int(stats["count"])}


def zero_stats(score_rows: int = 1) -> dict[str, np.ndarray]:
    """The summed statistics of no steps, with the dtypes and shapes :meth:`TrainLoop.train` returns (less
    ``stop_votes``): what an epoch's running sums start from (and what a checkpoint keeps of them)."""
    return {"loss_sum": np.float32(0), "correct": np.float32(0), "count": np.float32(0),
            "pos_hist": np.zeros([score_rows, AUC_BINS], np.float32),
            "neg_hist": np.zeros([score_rows, AUC_BINS], np.float32), "input_wait": np.float64(0)}


class TrainLoop:
    """Compiled train and eval functions for one model, optimizer and strategy."""

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 config: LoopConfig, augment: keras.layers.Layer | None = None):
        """``augment(images, training=True)`` runs first in each replica (device placement), then
        ``augment.training_targets`` (mixup/cutmix from ``config.mixing``, label smoothing); both stay outside
        the XLA cluster."""
        self.strategy, self.model, self.optimizer, self.config = strategy, model, optimizer, config
        self.augment = augment
        forward_backward = self._forward_backward
        self._compiled = tf.function(forward_backward, jit_compile=True) if config.jit_compile else forward_backward
        self._train = tf.function(self._train_many)
        self._eval = tf.function(self._eval_batch)
        self._sync = tf.function(lambda: self.strategy.run(self._sync_replica))

    # --- one replica -----------------------------------------------------------------------------------

    def _per_example_loss(self, targets, probs):
        if self.config.multi_label:  # binary cross-entropy of each sigmoid, averaged over the attributes
            p = tf.clip_by_value(tf.cast(probs, tf.float32), 1e-7, 1.0 - 1e-7)
            positive = targets * tf.math.log(p)
            if self.config.positive_weights is not None:
                positive *= tf.constant(self.config.positive_weights, tf.float32)
            return -tf.reduce_mean(positive + (1.0 - targets) * tf.math.log(1.0 - p), axis=-1)
        probs = tf.clip_by_value(tf.cast(probs, tf.float32), 1e-7, 1.0)
        return -tf.reduce_sum(targets * tf.math.log(probs), axis=-1)  # cross-entropy of the softmax output

    def _forward_backward(self, images, targets, weights):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            per_example = self._per_example_loss(targets, probs)
            loss = tf.nn.compute_average_loss(per_example, sample_weight=weights,
                                              global_batch_size=self.config.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, variables)
        return probs, per_example, grads

    def _stats(self, probs, labels, per_example):
        probs = tf.cast(probs, tf.float32)
        if self.config.multi_label:
            truth = labels > 0.5
            correct = tf.reduce_mean(tf.cast(tf.equal(probs >= 0.5, truth), tf.float32), axis=-1)
            scores, positive = probs, truth  # [B, K]
        else:
            correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels), tf.float32)
            scores, positive = probs[:, -1:], tf.equal(labels, self.config.num_classes - 1)[:, None]  # P(class 1)
        rows = self.config.score_rows
        # Histogram cell of each score: row * AUC_BINS + bin, counted separately for positives and negatives.
        cells = tf.clip_by_value(tf.cast(scores * AUC_BINS, tf.int32), 0, AUC_BINS - 1) + \
            tf.range(rows)[None, :] * AUC_BINS

        def histogram(mask):
            counts = tf.math.bincount(tf.boolean_mask(cells, mask), minlength=rows * AUC_BINS,
                                      maxlength=rows * AUC_BINS, dtype=tf.float32)
            return tf.reshape(counts, [rows, AUC_BINS])

        return {"loss_sum": tf.reduce_sum(per_example), "correct": tf.reduce_sum(correct),
                "count": tf.cast(tf.shape(labels)[0], tf.float32), "pos_hist": histogram(positive),
                "neg_hist": histogram(~positive)}

    def _replica_train_step(self, batch, step):
        images, labels = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 else None
        augment_seed = mix_seed = None
        if self.config.seed is not None:
            augment_seed = geometry.step_seed(self.config.seed, step, 0)  # the Augmenter folds the replica in
            mix_seed = geometry.replica_seed(geometry.step_seed(self.config.seed, step, 1))
        if self.augment is not None:  # on the accelerator, outside any XLA cluster
            images = self.augment(images, training=True) if augment_seed is None else \
                self.augment(images, training=True, seed=augment_seed)
        images, targets = training_targets(images, labels, self.config.num_classes, self.config.label_smoothing,
                                           self.config.mixing, seed=mix_seed, multi_label=self.config.multi_label)
        probs, per_example, grads = self._compiled(images, targets, weights)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        # The reported loss is the one minimised: class-weighted when the batch carries weights.
        return self._stats(probs, labels, per_example if weights is None else per_example * weights)

    # --- across replicas -------------------------------------------------------------------------------

    def _train_many(self, iterator, steps, stop_vote, first_step):
        """``steps`` train steps in one call, the first being global step ``first_step``; returns summed stats, the
        seconds spent waiting for input, and the sum over replicas of ``stop_vote`` (so every worker learns after
        the same call that one wants to stop)."""
        total = {k: tf.constant(v) for k, v in zero_stats(self.config.score_rows).items()}
        for i in tf.range(steps):
            if self.config.measure_input_wait:
                start = tf.timestamp()
                with tf.control_dependencies([start]):
                    batch = next(iterator)
                with tf.control_dependencies(tf.nest.flatten(batch, expand_composites=True)):
                    waited = tf.timestamp() - start
            else:
                batch, waited = next(iterator), tf.constant(0.0, tf.float64)
            step = first_step + tf.cast(i, tf.int64)
            per_replica = self.strategy.run(self._replica_train_step, args=(batch, step))
            reduced = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                       for k, v in per_replica.items()}
            total = {k: total[k] + (waited if k == "input_wait" else reduced[k]) for k in total}
        votes = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: tf.identity(stop_vote)),
                                     axis=None)
        return {**total, "stop_votes": votes}

    def train(self, iterator, steps: int, stop_vote: float = 0.0, first_step: int = 0) -> dict:
        """Runs ``steps`` training steps from a distributed iterator; returns numpy stats.

        ``stop_vote``: this process's wish to stop (1.0 preempted, 0.001 interrupted, 0 none); ``stats
        ["stop_votes"]`` is their sum over every replica of every worker, the same number on all of them, so
        all workers stop after the same step (their checkpoint saving is collective). ``first_step``: the global
        step of the first of these steps (what the per-step draws are keyed by)."""
        out = self._train(iterator, tf.constant(steps, tf.int32), tf.constant(stop_vote, tf.float32),
                          tf.constant(first_step, tf.int64))
        return {k: v.numpy() for k, v in out.items()}

    def _replica_eval_step(self, batch):
        images, labels = batch[0], batch[1]
        probs = tf.cast(self.model(tf.cast(images, tf.float32), training=False), tf.float32)
        return probs, labels

    def _sync_replica(self):
        context = tf.distribute.get_replica_context()
        for v in self.model.non_trainable_variables:
            if "float" in str(v.dtype):
                v.assign(context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.identity(v.value)))

    def sync_non_trainable(self) -> None:
        """Averages the non-trainable variables (BatchNorm's moving statistics) over all replicas.

        Each replica updates its own copy of the moving statistics from its own batches (Keras 3 creates them
        without cross-replica aggregation), so replicas and workers drift apart. Averaging them before each
        evaluation and checkpoint makes every worker hold the same model (what a read with MEAN
        aggregation would give).
        """
        if self.strategy.num_replicas_in_sync > 1:
            self._sync()

    def evaluation_loss(self, probs: np.ndarray, labels: np.ndarray,
                        class_weights: tuple[float, ...] | None = None) -> float:
        """The training loss of predictions (e.g. the validation split's, from :meth:`predict`): the step's own
        per-example loss, with the attributes' ``positive_weights`` and, when training weighs the classes, each
        example weighed by its class's weight, so that training and validation losses are one figure. No label
        smoothing or mixing: those change the targets, not what is measured."""
        if self.config.multi_label:
            targets = tf.constant(labels, tf.float32)
        else:
            targets = tf.one_hot(np.asarray(labels, np.int32), self.config.num_classes, dtype=tf.float32)
        per_example = self._per_example_loss(targets, tf.constant(probs, tf.float32)).numpy()
        if class_weights is not None and not self.config.multi_label:
            per_example = per_example * np.asarray(class_weights)[np.asarray(labels, np.int64)]
        return float(per_example.mean()) if len(per_example) else float("nan")

    def _eval_batch(self, batch):
        probs, labels = self.strategy.run(self._replica_eval_step, args=(batch,))
        return self.strategy.gather(probs, axis=0), self.strategy.gather(labels, axis=0)

    def predict(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, outputs] and labels ([N], or [N, attributes] for multi-label) for every example of a
        (distributed) eval dataset; padding examples (label -1, see pipeline.eval_dataset) are dropped."""
        k = self.config.num_classes
        probs = [np.zeros((0, k), np.float32)]
        labels = [np.zeros((0, k) if self.config.multi_label else (0,), np.float32)]
        for batch in dataset:
            p, y = (t.numpy() for t in self._eval(batch))
            keep = (y[:, 0] if y.ndim > 1 else y) >= 0
            probs.append(p[keep])
            labels.append(y[keep])
        return np.concatenate(probs), np.concatenate(labels).astype(np.float32 if self.config.multi_label else np.int32)
