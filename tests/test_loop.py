"""celeba_gender.train.step: the targets the training step builds."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from celeba_gender.train import step  # noqa: E402
from celeba_gender.inputs.augment import AugmentConfig  # noqa: E402


def _constant_model(probs) -> keras.Model:
    """Predicts ``probs`` for every image: a zero kernel and the log-probabilities as bias."""
    inputs = keras.Input((4, 4, 3))
    dense = keras.layers.Dense(len(probs), activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(np.log(probs)))
    return keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))


@pytest.mark.parametrize("mixing", [None, AugmentConfig(mixup=0.4), AugmentConfig(cutmix=1.0)],
                         ids=["no-mixing", "mixup", "cutmix"])
def test_train_step_smooths_the_mixed_targets(mixing):
    """Bug 1: with mixup/cutmix on, the step replaced the smoothed targets by the mix's one-hot ones.

    Every label is 0, so any mix of the batch still has target (1, 0); smoothed by eps it is (1 - eps/2, eps/2).
    Against a constant prediction p the loss tells which target the step used.
    """
    batch, eps, probs = 8, 0.2, (0.9, 0.1)
    strategy = tf.distribute.get_strategy()
    train_loop = step.TrainLoop(strategy, _constant_model(probs), keras.optimizers.SGD(0.0),
                                step.LoopConfig(batch, label_smoothing=eps, measure_input_wait=False,
                                                mixing=mixing))
    ds = tf.data.Dataset.from_tensors((np.zeros((batch, 4, 4, 3), np.uint8), np.zeros(batch, np.int32))).repeat()
    stats = step.summarize(train_loop.train(iter(strategy.distribute_datasets_from_function(lambda _: ds)), 1))
    smoothed = -((1 - eps / 2) * math.log(probs[0]) + eps / 2 * math.log(probs[1]))
    assert stats["loss"] == pytest.approx(smoothed, rel=1e-5)  # one-hot targets would give -log(0.9) = 0.105
