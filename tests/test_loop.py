"""celeba_gender.train.step: the targets the training step builds, and the losses it and validation report."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from celeba_gender.train import step  # noqa: E402
from celeba_gender.inputs.config import AugmentConfig  # noqa: E402
from celeba_gender.tasks.classification import Classification  # noqa: E402
from celeba_gender.tasks.multi_attribute import MultiAttribute  # noqa: E402

CLASSES = Classification(("Female", "Male"))


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
    train_step = step.TrainStep(strategy, step.Parts(_constant_model(probs), keras.optimizers.SGD(0.0), CLASSES),
                                step.StepConfig(batch, label_smoothing=eps, measure_input_wait=False, mixing=mixing))
    ds = tf.data.Dataset.from_tensors((np.zeros((batch, 4, 4, 3), np.uint8), np.zeros(batch, np.int32))).repeat()
    stats = step.summarize(train_step.train(iter(strategy.distribute_datasets_from_function(lambda _: ds)), 1))
    smoothed = -((1 - eps / 2) * math.log(probs[0]) + eps / 2 * math.log(probs[1]))
    assert stats["loss"] == pytest.approx(smoothed, rel=1e-5)  # one-hot targets would give -log(0.9) = 0.105


def _sigmoid_model(probs) -> keras.Model:
    """Predicts the independent probabilities ``probs`` (one sigmoid each) for every image."""
    inputs = keras.Input((4, 4, 3))
    logits = np.log(np.asarray(probs) / (1 - np.asarray(probs)))
    dense = keras.layers.Dense(len(probs), activation="sigmoid", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(logits))
    return keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))


def _one_step_loss(model, task, batch) -> float:
    strategy = tf.distribute.get_strategy()
    train_step = step.TrainStep(strategy, step.Parts(model, keras.optimizers.SGD(0.0), task),
                                step.StepConfig(len(batch[1]), measure_input_wait=False))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    stats = train_step.train(iter(strategy.distribute_datasets_from_function(lambda _: ds)), 1)
    return step.summarize(stats)["loss"]


@pytest.mark.parametrize("kind", ["class-weights", "positive-weights"])
def test_training_and_validation_losses_weigh_alike(kind):
    """Issue item 10: with weights, the training loss was weighted and the validation loss was not (1.057 vs
    0.686 for one model state). The same predictions must give the same loss in both places, weighted."""
    images = np.zeros((8, 4, 4, 3), np.uint8)
    if kind == "class-weights":
        probs, labels, class_weights = (0.8, 0.2), np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int32), (0.6, 2.0)
        weights = np.asarray(class_weights, np.float32)[labels]
        task = Classification(("Female", "Male"), class_weights=class_weights)
        trained = _one_step_loss(_constant_model(probs), task, (images, labels))
        predicted = np.tile(np.asarray(probs, np.float32), (8, 1))
        expected = float(np.mean(-weights * np.log(predicted[np.arange(8), labels])))
        validate = lambda: task.loss(predicted, labels)  # noqa: E731
    else:
        probs, positive_weights = (0.3, 0.6), (5.0, 1.0)
        labels = np.array([[1, 0], [0, 1], [0, 0], [0, 1]] * 2, np.float32)
        task = MultiAttribute(("Smiling", "Eyeglasses"), columns=(0, 1), positive_weights=positive_weights)
        trained = _one_step_loss(_sigmoid_model(probs), task, (images, labels))
        p = np.tile(np.asarray(probs), (8, 1))
        expected = float(np.mean(-(np.asarray(positive_weights) * labels * np.log(p)
                                   + (1 - labels) * np.log(1 - p)).mean(axis=1)))
        validate = lambda: task.loss(p.astype(np.float32), labels)  # noqa: E731
    assert trained == pytest.approx(expected, rel=1e-5)
    assert validate() == pytest.approx(expected, rel=1e-5)
