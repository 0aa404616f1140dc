"""Grad-CAM (Selvaraju et al., 2017): where in an image lies the evidence for one of a model's outputs.

    cam = GradCam(keras.models.load_model("RUN/export/model.keras"), registry.get("small").gradcam_layer)
    heatmaps = cam(images, output_index=1)        # [N, H, W] float32 in [0, 1]; 1 = Male for the gender models

For each image: the feature map A [h, w, channels] of the arch's Grad-CAM layer (the registry's
``ArchSpec.gradcam_layer``, recorded in ``export/labels.json``), the gradient of the chosen output's score with
respect to A, one weight per channel (the spatial mean of its gradient), the ReLU of the weighted sum of the
channels, upsampled (bilinear) to the image's size and divided by its maximum. One departure from the paper: cells
of A that the score cannot see at all (a zero gradient in every channel: the last row or column that a
floor-mode max-pooling after A drops, as VGG16's, AlexNet's and plain4's do at most sizes) are set to 0, where
plain Grad-CAM paints them with whatever the channels hold there (on plain4 that put 73 of 81 peaks in the
dropped column).

The model is taken apart once: the layers before the backbone (the uint8 -> float cast, the arch's
preprocessing), the backbone (a nested model holding the Grad-CAM layer, run as a two-output model: that
layer's map and the backbone's output) and the head layers after it, each run in order. That is every model
this engine builds and exports (a chain around a backbone); any other shape is refused when the recomposition
does not reproduce the model's own output.

``output_index`` is generic: a class of a softmax model, or an attribute of a model ending in one sigmoid per
attribute. The score is the output's logit (the input of a final softmax or sigmoid ``Activation`` layer), as
the paper prescribes: a probability that has saturated at 1.0 in float32 has no gradient left.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


def _split(model: keras.Model, layer: str) -> tuple[list, keras.Model | None, list]:
    """(layers before the backbone, the nested model that holds ``layer``, layers after it), nested chains
    flattened."""
    before, backbone, after = [], None, []
    for sub in model.layers:
        if isinstance(sub, keras.layers.InputLayer):
            continue
        if backbone is None and isinstance(sub, keras.Model):
            if any(inner.name == layer for inner in sub.layers):
                backbone = sub
                continue
            inner_before, inner_backbone, inner_after = _split(sub, layer)
            if inner_backbone is not None:
                before, backbone, after = before + inner_before, inner_backbone, inner_after
                continue
        (after if backbone is not None else before).append(sub)
    return before, backbone, after


class GradCam:
    """Grad-CAM heatmaps of one model at one layer (see the module's docstring)."""

    def __init__(self, model: keras.Model, layer: str):
        before, backbone, after = _split(model, layer)
        if backbone is None:
            raise ValueError(f"No nested backbone of {model.name!r} has a layer named {layer!r}.")
        self.model, self.layer = model, layer
        self._before = before
        self._features = keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.output])
        # Score the logits: drop a final softmax/sigmoid Activation (kept to check the recomposition).
        last = after[-1] if after else None
        self._activation = last if isinstance(last, keras.layers.Activation) else None
        self._head = after[:-1] if self._activation is not None else after
        self.image_size = tuple(int(v) for v in model.input_shape[1:3])
        self._check()

    def _forward(self, images):
        x = images
        for layer in self._before:
            x = layer(x, training=False)
        features, x = self._features(x, training=False)
        for layer in self._head:
            x = layer(x, training=False)
        return features, x

    def _check(self) -> None:
        probe = np.random.default_rng(0).integers(0, 256, (1, *self.image_size, 3)).astype(self.model.input.dtype)
        try:
            _, scores = self._forward(tf.constant(probe))
            ours = np.asarray(self._activation(scores) if self._activation is not None else scores, np.float32)
            same = np.allclose(ours, np.asarray(self.model(probe, training=False), np.float32), atol=1e-4)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError):  # a layer fed what it was never fed
            same = False
        if not same:
            raise ValueError(f"{self.model.name!r} is not a chain of layers around its backbone: Grad-CAM cannot "
                             "take it apart.")

    def __call__(self, images: np.ndarray, output_index: int | Sequence[int], batch: int = 32,
                 sign: float | Sequence[float] = 1.0) -> np.ndarray:
        """Heatmaps [N, H, W] float32 in [0, 1] (finite; all 0 where no part of the map raises the score) of
        ``output_index`` (one index for every image, or one per image) for images [N, H, W, 3] as the model
        takes them. ``sign`` -1 explains the evidence *against* an output: for a sigmoid attribute, what made
        the model say it is absent (a softmax has an output per class instead)."""
        images = np.asarray(images)
        index = np.broadcast_to(np.asarray(output_index, np.int32), (len(images),))
        signs = np.broadcast_to(np.asarray(sign, np.float32), (len(images),))
        out = [self._batch(images[i:i + batch], index[i:i + batch], signs[i:i + batch])
               for i in range(0, len(images), batch)]
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.float32)

    def _batch(self, images: np.ndarray, index: np.ndarray, signs: np.ndarray) -> np.ndarray:
        x = tf.constant(images.astype(self.model.input.dtype, copy=False))
        with tf.GradientTape() as tape:
            features, scores = self._forward(x)
            tape.watch(features)
            score = tf.gather(tf.cast(scores, tf.float32), index, axis=1, batch_dims=1) * signs
        grads = tf.cast(tape.gradient(score, features), tf.float32)
        features = tf.cast(features, tf.float32)  # mixed precision: weigh in float32
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        # Cells whose every channel has a zero gradient are never seen by the score: those a floor-mode pooling
        # drops (13 -> 6 leaves the last row out), which plain Grad-CAM would light up as evidence.
        cam *= tf.cast(tf.reduce_any(grads != 0, axis=-1, keepdims=True), tf.float32)
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        return np.clip(np.nan_to_num(cam.numpy(), nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0).astype(np.float32)


def heatmaps(model: keras.Model, images: np.ndarray, output_index: int | Sequence[int], layer: str) -> np.ndarray:
    """Grad-CAM heatmaps [N, H, W] in [0, 1] of ``output_index`` at ``layer`` (one-off; keep a :class:`GradCam`
    to explain many batches)."""
    return GradCam(model, layer)(images, output_index)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, column) of a heatmap's maximum."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)
