"""The training-time augmentation: the source's ImageDataGenerator as ONE Keras layer, and MixUp / CutMix.

- :class:`Augmenter`, the layer: the source's geometry as one fused projective warp per batch (the pure functions
  of :mod:`celeba_gender.inputs.geometry`, which also explains ImageDataGenerator's distribution and quirks), then
  RandAugment and random erasing when configured. Active in training only; returns float32.
- :func:`host_augment_fn`: that layer as a tf.data map function (``--augment_on=host``).
- :func:`mix`: MixUp / CutMix of a batch and its targets. They need the labels, so they cannot live inside
  the model; the training step calls this between the task's targets and its label smoothing.

Why one fused transform: every Keras ``Random*`` layer resamples the whole batch (one
``ImageProjectiveTransformV3`` each), so five stacked layers do five full-image bilinear passes and blur the
image five times. Composing the five matrices first and warping once does one pass. On the 2-core CPU this
project was first measured on, ImageDataGenerator ran ~355-511 images/s, stacked Keras layers
~410-530/s and one fused transform ~1,000-1,430/s; benchmarks/README.md has this engine's latest figures.
The stacked layers remain, for tests and benchmarks only, in :mod:`celeba_gender.inputs.augment_reference`.
``ImageProjectiveTransformV3`` has no XLA kernel, so the layer must run outside any jit-compiled function (it
declares ``supports_jit = False``; the training step calls it before its compiled part, or tf.data runs it on
the host).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from celeba_gender.inputs import geometry
from celeba_gender.inputs.config import AugmentConfig

_PACKAGE = "celeba_gender"


def _as_config(config: AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig:
    if config is None:
        return AugmentConfig()
    if isinstance(config, AugmentConfig):
        return config
    return AugmentConfig.from_dict(config)


def _offset(seed: int | None, by: int) -> int | None:
    return None if seed is None else seed + by


# --------------------------------------------------------------------------------------------------------------
# The layer.


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Augmenter(keras.layers.Layer):
    """The model's augmentation block: the source's geometry as one fused warp, then optional RandAugment and
    random erasing.

    ``call(images, training=None, seed=None)``: in training, draws one matrix per image
    (:func:`geometry.sample_transforms`) and warps the whole NHWC batch with a single
    ``ImageProjectiveTransformV3``, then applies the optional policies; returns float32 in [0, 255] (for
    [0, 255] input). At inference (``training`` False or None) returns the images cast to float32, unchanged.
    Accepts uint8 or float input and any static or dynamic batch size. The warp draws from ``seed`` (a [2]
    stateless seed, e.g. :func:`geometry.step_seed`: what training passes) or else from a
    ``keras.random.SeedGenerator(seed)``, so a given seed reproduces; MirroredStrategy replicas get different
    draws. RandAugment and random erasing are Keras layers that draw from their own SeedGenerators (whose
    states a checkpoint can hold). Not jit-compilable (``supports_jit = False``). Serialisable, so a ``.keras``
    model holding it loads.
    """

    def __init__(self, config: AugmentConfig | Mapping[str, Any] | None = None, seed: int | None = None,
                 **kwargs):
        # Models saved before the stacked kind left the engine carry kind='fused' (the only kind it used).
        kwargs.pop("kind", None)
        kwargs.setdefault("autocast", False)  # the warp is float32 whatever the policy; don't recast input
        super().__init__(**kwargs)
        self.config = _as_config(config)
        self.seed = seed
        self.supports_jit = False
        # Created first: with seed=None, SeedGenerators take their seeds from Python's global random state
        # in creation order, and this order is the one the engine has always had.
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Offsets keep the policies' random streams apart from the warp's when a seed is given.
        self.randaugment = (keras.layers.RandAugment(value_range=(0, 255), seed=_offset(seed, 101), dtype="float32")
                            if self.config.randaugment else None)
        # RandomErasing's float `factor` p means "probability ~ U(-p, p)" (it erases ~p/4 of the time); the
        # pair (p, p) pins the probability to p.
        self.eraser = (keras.layers.RandomErasing(factor=(self.config.random_erasing, self.config.random_erasing),
                                                  value_range=(0, 255), seed=_offset(seed, 202), dtype="float32")
                       if self.config.random_erasing > 0 else None)

    def build(self, input_shape):
        # Build the policies now, so a functional model (and its .keras file) sees them built.
        for layer in (self.randaugment, self.eraser):
            if layer is not None and not layer.built:
                layer.build(input_shape)
        self.built = True

    def call(self, images, training=None, seed=None):
        images = tf.cast(images, tf.float32)
        if not training:  # Keras 3 passes a Python bool, or None when nobody said: inference, as Dropout
            return images
        images = self._warp(images, seed)
        for policy in (self.randaugment, self.eraser):
            if policy is not None:
                images = tf.cast(policy(images, training=True), tf.float32)
        return images

    def _warp(self, images: tf.Tensor, seed=None) -> tf.Tensor:
        batch, height, width = geometry.image_dims(images)
        seed = geometry.replica_seed(self.seed_generator.next() if seed is None else geometry.seed_tensor(seed))
        transforms = geometry.sample_transforms(batch, height, width, self.config, seed)
        return geometry.apply_transforms(images, transforms, self.config.fill_mode, self.config.interpolation)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=None, seed=None):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"config": self.config.to_dict(), "seed": self.seed})
        return config


def host_augment_fn(layer: keras.layers.Layer, seed: int | None = None) -> Callable:
    """A tf.data map function (after ``.batch``) that augments the images with ``layer`` and passes the rest.

    Returns ``fn(images, labels, *rest, step=None, worker=0) -> (layer(images, training=True), labels, *rest)``,
    for ``ds.map(fn)`` or ``pipeline.train_dataset(config, host_augment=fn)`` (which passes each batch's global
    step). With ``seed`` and a ``step`` the warp draws from :func:`geometry.step_seed` (seed, step, worker): the
    same draws whatever order parallel map calls run in, and after a restart (``worker``: the input pipeline of
    a multi-worker job). Otherwise each call draws from the layer's own state. The caller builds ``layer`` once
    (an :class:`Augmenter`, or any layer with its call signature) eagerly, outside any traced function and
    outside a distribution strategy's scope: its random state is a variable, which a tf.data function may update
    but not create. Two layers give two independent streams.
    """
    def augment_batch(images, labels, *rest, step=None, worker=0):
        if seed is None or step is None:
            return (layer(images, training=True), labels, *rest)
        return (layer(images, training=True, seed=geometry.step_seed(seed, step, worker=worker)), labels, *rest)
    return augment_batch


# --------------------------------------------------------------------------------------------------------------
# Mixing: MixUp / CutMix of images and their targets.


def _beta(shape, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) from two stateless gammas."""
    seeds = geometry.split_seed(seed, 2)
    g1 = tf.random.stateless_gamma(shape, seed=seeds[0], alpha=alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma(shape, seed=seeds[1], alpha=alpha, dtype=tf.float32)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _permutation(batch, seed: tf.Tensor) -> tf.Tensor:
    """A random permutation of range(batch): argsort of stateless uniforms."""
    return tf.argsort(tf.random.stateless_uniform(tf.reshape(batch, [1]), seed=seed))


def _mixup(images, targets, alpha: float, perm, seed):
    """Keras MixUp's rule: per image, lam ~ Beta(alpha, alpha); x = lam x + (1-lam) x[perm], same for y."""
    lam = _beta(tf.shape(images)[:1], alpha, seed)
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.gather(images, perm)
    return mixed, lam[:, None] * targets + (1.0 - lam[:, None]) * tf.gather(targets, perm)


def _cutmix(images, targets, alpha: float, perm, seed):
    """CutMix: paste a box of area ~(1 - lam) of image perm[i] into image i; targets by the true pasted area."""
    seeds = geometry.split_seed(seed, 2)
    batch, height, width = geometry.image_dims(images)
    lam = _beta(tf.reshape(batch, [1]), alpha, seeds[0])
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ratio = tf.sqrt(1.0 - lam)
    centre = tf.random.stateless_uniform(tf.stack([batch, 2]), seed=seeds[1])
    cy, cx = centre[:, 0] * h, centre[:, 1] * w
    y0 = tf.clip_by_value(tf.round(cy - ratio * h / 2), 0.0, h)
    y1 = tf.clip_by_value(tf.round(cy + ratio * h / 2), 0.0, h)
    x0 = tf.clip_by_value(tf.round(cx - ratio * w / 2), 0.0, w)
    x1 = tf.clip_by_value(tf.round(cx + ratio * w / 2), 0.0, w)
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])  # [B, H]
    in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])  # [B, W]
    box = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    mixed = tf.where(box, tf.gather(images, perm), images)
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, kept[:, None] * targets + (1.0 - kept[:, None]) * tf.gather(targets, perm)


def _mix(images, targets, config: AugmentConfig, seed):
    """MixUp and/or CutMix of float32 images and soft targets (both on: each image gets one, p = 0.5)."""
    seeds = geometry.split_seed(geometry.seed_tensor(seed), 4)
    perm = _permutation(tf.shape(images)[0], seeds[0])
    if config.cutmix <= 0:
        return _mixup(images, targets, config.mixup, perm, seeds[1])
    if config.mixup <= 0:
        return _cutmix(images, targets, config.cutmix, perm, seeds[2])
    mix_x, mix_y = _mixup(images, targets, config.mixup, perm, seeds[1])
    cut_x, cut_y = _cutmix(images, targets, config.cutmix, perm, seeds[2])
    use_mix = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seeds[3]) < 0.5
    return (tf.where(use_mix[:, None, None, None], mix_x, cut_x), tf.where(use_mix[:, None], mix_y, cut_y))


def mix(images, targets, config: AugmentConfig | None = None, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp (``config.mixup`` > 0) and/or CutMix (``config.cutmix`` > 0) of a batch: float32 images and soft
    targets [B, K] (the task's: one-hot classes, or one 0/1 target per attribute) -> the same, mixed.

    Each image is mixed with a partner from a random permutation of the batch, and its target row becomes the
    same convex combination of the two rows (CutMix: by the box's true area). With both on, each image gets one of
    the two at random (p = 0.5 each). With both off the images are only cast. Label smoothing, the task's, comes
    after (tasks.base.Task.smooth); for a softmax smoothing is affine and rows sum to 1, so smoothing a mixed row
    equals mixing smoothed rows.

    ``seed`` (for the mixing): None (fresh every call), an int (the same mix every call: for tests), a
    ``keras.random.SeedGenerator`` or a [2] tensor (e.g. per step).
    """
    config = _as_config(config)
    images = tf.cast(images, tf.float32)
    targets = tf.cast(targets, tf.float32)
    if config.mixup > 0 or config.cutmix > 0:
        images, targets = _mix(images, targets, config, seed)
    return images, targets
