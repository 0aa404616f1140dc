"""The training step: compiled train and eval calls under ``strategy.run``, for every strategy.

Why not ``Model.fit``: Keras 3's fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), and
one loop for the default, Mirrored and MultiWorkerMirrored strategies is simpler than two.

Each replica: [augmentation, on the accelerator, outside XLA] -> the task's targets, mixing, the task's label
smoothing -> forward/backward (optionally one XLA cluster, ``jit_compile``) -> the optimizer (Keras' TF
optimizer all-reduces gradients across replicas). The loss is the task's per-example loss times its example
weights, averaged over the *global* batch (``tf.nn.compute_average_loss``), so summing replicas gives the batch
mean. ``steps_per_execution`` steps run inside one ``tf.function`` call (an in-graph loop). With
``StepConfig.seed`` the augmentation and the mixing of each step draw from (seed, global step, replica)
(:func:`celeba_gender.inputs.geometry.step_seed`), so a restarted run draws what a run never stopped draws.

Figures are sums reduced across replicas (loss, correct, count, and score histograms of positives and negatives
for AUC, one row per output the task scores), so they are exact under any strategy without relying on
metric-variable synchronisation. What the labels are is the task's business (tasks.base.Task): this module
never asks which kind it is.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.inputs import geometry
from celeba_gender.inputs.augment import mix
from celeba_gender.inputs.config import AugmentConfig
from celeba_gender.tasks.base import AUC_BINS, Task


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the step needs to know beyond the model, the optimizer and the task."""

    global_batch: int
    steps_per_execution: int = 1
    jit_compile: bool = False
    label_smoothing: float = 0.0
    # tf.timestamp() is refused under op determinism, so the input-wait measurement is then off.
    measure_input_wait: bool = True
    # Its mixup / cutmix alphas are read (augment.mix); None or both 0: no mixing.
    mixing: AugmentConfig | None = None
    # Each step's augmentation and mixing draw from (seed, global step); None: the augmentation layer's own
    # generator and unseeded mixing (a restart then draws anew).
    seed: int | None = None

    @classmethod
    def of(cls, config) -> StepConfig:
        """The step's settings of a run (train.config.TrainConfig)."""
        return cls(config.batch, config.steps_per_execution, config.jit_compile, config.label_smoothing,
                   measure_input_wait=not config.deterministic, mixing=config.augment, seed=config.seed)


def histogram_auc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """ROC AUC from score histograms of positives and negatives (ties within a bin count half)."""
    pos, neg = pos_hist.sum(), neg_hist.sum()
    if pos == 0 or neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg_hist) - neg_hist  # negatives in lower bins
    return float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (pos * neg))


def summarize(stats: dict) -> dict:
    """Turns summed statistics into mean loss, accuracy and AUC (the mean over the scored outputs)."""
    count = max(float(stats["count"]), 1.0)
    pos, neg = np.atleast_2d(stats["pos_hist"]), np.atleast_2d(stats["neg_hist"])
    aucs = [histogram_auc(p, n) for p, n in zip(pos, neg)]
    auc = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
    return {"loss": float(stats["loss_sum"]) / count, "accuracy": float(stats["correct"]) / count, "auc": auc,
            "count": int(stats["count"])}


def zero_stats(score_rows: int = 1) -> dict[str, np.ndarray]:
    """The summed statistics of no steps, with the dtypes and shapes :meth:`TrainStep.train` returns (less
    ``stop_votes``): what an epoch's running sums start from (and what a checkpoint keeps of them)."""
    return {"loss_sum": np.float32(0), "correct": np.float32(0), "count": np.float32(0),
            "pos_hist": np.zeros([score_rows, AUC_BINS], np.float32),
            "neg_hist": np.zeros([score_rows, AUC_BINS], np.float32), "input_wait": np.float64(0)}


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the step trains: the model, its optimizer, the task, and the augmentation layer that runs first in
    each replica (on the accelerator, outside the XLA cluster; None: none there)."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    task: Task
    augment: keras.layers.Layer | None = None


class TrainStep:
    """Compiled train and eval calls for one model, optimizer, task and strategy."""

    def __init__(self, strategy: tf.distribute.Strategy, parts: Parts, config: StepConfig):
        self.strategy, self.config = strategy, config
        self.model, self.optimizer, self.task, self.augment = parts.model, parts.optimizer, parts.task, parts.augment
        forward_backward = self._forward_backward
        self._compiled = tf.function(forward_backward, jit_compile=True) if config.jit_compile else forward_backward
        self._train = tf.function(self._train_many)
        self._eval = tf.function(self._eval_batch)
        self._sync = tf.function(lambda: self.strategy.run(self._sync_replica))

    # --- one replica -----------------------------------------------------------------------------------

    def _forward_backward(self, images, targets, weights):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            per_example = self.task.per_example_loss(targets, probs)
            loss = tf.nn.compute_average_loss(per_example, sample_weight=weights,
                                              global_batch_size=self.config.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, variables)
        return probs, per_example, grads

    def _stats(self, probs, labels, per_example):
        correct, scores, positive = self.task.step_figures(probs, labels)
        rows = self.task.score_rows
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
        weights = self.task.example_weights(labels)
        augment_seed = mix_seed = None
        if self.config.seed is not None:
            augment_seed = geometry.step_seed(self.config.seed, step, 0)  # the Augmenter folds the replica in
            mix_seed = geometry.replica_seed(geometry.step_seed(self.config.seed, step, 1))
        if self.augment is not None:  # on the accelerator, outside any XLA cluster
            images = self.augment(images, training=True) if augment_seed is None else \
                self.augment(images, training=True, seed=augment_seed)
        images, targets = mix(images, self.task.targets(labels), self.config.mixing, seed=mix_seed)
        targets = self.task.smooth(targets, self.config.label_smoothing)
        probs, per_example, grads = self._compiled(images, targets, weights)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        # The reported loss is the one minimised: weighted when the task weighs its examples.
        return self._stats(probs, labels, per_example if weights is None else per_example * weights)

    # --- across replicas -------------------------------------------------------------------------------

    def _train_many(self, iterator, steps, stop_vote, first_step):
        """``steps`` train steps in one call, the first being global step ``first_step``; returns summed stats, the
        seconds spent waiting for input, and the sum over replicas of ``stop_vote`` (so every worker learns after
        the same call that one wants to stop)."""
        total = {k: tf.constant(v) for k, v in zero_stats(self.task.score_rows).items()}
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

        ``stop_vote``: this process's wish to stop (stopping.vote); ``stats["stop_votes"]`` is their sum over
        every replica of every worker, the same number on all of them, so all workers stop after the same step
        (their checkpoint saving is collective). ``first_step``: the global step of the first of these steps
        (what the per-step draws are keyed by)."""
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

    def _eval_batch(self, batch):
        probs, labels = self.strategy.run(self._replica_eval_step, args=(batch,))
        return self.strategy.gather(probs, axis=0), self.strategy.gather(labels, axis=0)

    def predict(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, outputs] and the task's labels for every example of a (distributed) eval dataset;
        padding examples (see pipeline.eval_dataset) are dropped."""
        probs = [np.zeros((0, self.task.num_outputs), np.float32)]
        labels = [self.task.empty_labels()]
        for batch in dataset:
            p, y = (t.numpy() for t in self._eval(batch))
            keep = self.task.real(y)
            probs.append(p[keep])
            labels.append(y[keep])
        return np.concatenate(probs), np.concatenate(labels).astype(labels[0].dtype)
