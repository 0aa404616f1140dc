"""Test-time augmentation: a prediction averaged over views of the image (evaluate.py and predict.py).

``flip``: the image and its mirror image, whose probabilities are averaged. Faces are close to symmetric and
training flips them at random (the source's ``horizontal_flip=True``), so the mirror is an image the model has
learnt to read, and averaging the two cancels part of the errors that depend on which side is which. It costs
a second forward pass. Every output is averaged alike: the classes of a softmax model, or the attributes of a
model with one sigmoid per attribute.
"""

from __future__ import annotations

import numpy as np

NONE, FLIP = "none", "flip"
MODES = (NONE, FLIP)


def views(images, mode: str) -> list:
    """The views of a batch [N, H, W, 3] that ``mode`` averages over (the batch itself first)."""
    if mode == NONE:
        return [images]
    if mode == FLIP:
        import tensorflow as tf

        return [images, tf.reverse(images, axis=[2])]  # mirror left-right
    raise ValueError(f"Unknown test-time augmentation {mode!r}; choose from {', '.join(MODES)}.")


def predict(model, images, mode: str = NONE) -> np.ndarray:
    """float32 [N, outputs]: ``model``'s outputs on a batch, averaged over ``mode``'s views."""
    outputs = [np.asarray(model(view, training=False), np.float32) for view in views(images, mode)]
    return np.mean(outputs, axis=0) if len(outputs) > 1 else outputs[0]
