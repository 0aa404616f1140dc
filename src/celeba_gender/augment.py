"""The source study's data augmentation, as Keras 3 layers: one fused projective transform per batch.

The seed notebooks augmented with::

    ImageDataGenerator(rotation_range=15, shear_range=0.1, zoom_range=0.2, width_shift_range=0.1,
                       height_shift_range=0.1, horizontal_flip=True, rescale=1/255)   # target 218x178

Read from ``keras/src/legacy/preprocessing/image.py`` (``get_random_transform`` and
``apply_affine_transform``), that draws, per image:

- ``theta ~ U(-15, 15)`` **degrees** of rotation;
- ``tx ~ U(-0.1, 0.1) * height`` and ``ty ~ U(-0.1, 0.1) * width`` pixels of shift;
- ``shear ~ U(-0.1, 0.1)`` **degrees** (almost no shear: Keras' ``RandomShear(0.1)`` would be a shear *factor*
  of 0.1, about 5.7 degrees, a different meaning);
- ``zx, zy ~ U(0.8, 1.2)`` independently (the matrix maps output to input coordinates, so > 1 zooms out);
- a horizontal flip with p = 0.5, applied *after* the affine warp;

and warps with ``M = R(theta) @ T(tx, ty) @ Shear(shear) @ Zoom(zx, zy)`` about a pivot, bilinear (scipy
``order=1``), ``fill_mode='nearest'``. ``rescale`` is *not* applied here: images stay in [0, 255] and each
architecture's own ``preprocess_input`` runs later, inside the model (the seed's ``rescale=1/255`` for every
backbone was one of its mistakes).

Two quirks of ImageDataGenerator, visible only on non-square images such as CelebA's 218x178; the engine
turns about the true centre by default, and ``AugmentConfig(idg_quirks=True)`` reproduces ImageDataGenerator
pixel for pixel (tested):

1. ``transform_matrix_offset_center(matrix, h, w)`` puts the pivot at ``(x, y) = (h/2 - 0.5, w/2 - 0.5)``
   but the matrix acts on (column, row) coordinates, so for 218x178 rotation and zoom turn about
   (col 108.5, row 88.5) instead of the centre (col 88.5, row 108.5): a pivot 28 px off centre, which adds
   up to ~7 px of extra shift at 15 degrees and up to 4 px at 20 % zoom.
2. ``tx`` (scaled by the *height*) moves the image horizontally and ``ty`` (scaled by the *width*)
   vertically: the horizontal shift reaches 21.8 px (10 % of 218) and the vertical 17.8 px (10 % of 178).

``idg_quirks=False`` (the default) turns about the true centre and shifts vertically by up to ``height_shift * height`` and
horizontally by up to ``width_shift * width``: the geometry the seed meant, and what Keras' own
``RandomRotation`` / ``RandomTranslation`` / ``RandomZoom`` layers (:func:`stacked_reference`) do. On square
images both settings are the same distribution.

Why one fused transform: every Keras ``Random*`` layer resamples the whole batch (one
``ImageProjectiveTransformV3`` each), so five stacked layers do five full-image bilinear passes and blur the
image five times. Composing the five matrices first and warping once does one pass. On the 2-core CPU this
project was measured on (SEED.md), ImageDataGenerator ran ~355-511 images/s, stacked Keras layers
~410-530/s and one fused transform ~1,000-1,430/s; benchmarks/README.md has this engine's latest figures. ``ImageProjectiveTransformV3`` has no XLA kernel, so the layers here must run
outside any jit-compiled function (they declare ``supports_jit = False``; the training step calls them before
its compiled part, or tf.data runs them on the host).

MixUp and CutMix need the labels, so they cannot live inside the model: :func:`mix_batch` is for the
training step (or a tf.data map) to call.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

_PACKAGE = "celeba_gender"
_FILL_MODES = ("nearest", "constant", "reflect", "wrap")
_INTERPOLATIONS = ("bilinear", "nearest")
# Added to a seed's first word per replica, so that MirroredStrategy replicas draw different transforms.
_REPLICA_SEED_STRIDE = 1_000_003


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are the seed study's ImageDataGenerator.

    Attributes:
        rotation_deg: rotation range in degrees, theta ~ U(-rotation_deg, rotation_deg).
        shear_deg: shear range in degrees (ImageDataGenerator's meaning, not a Keras shear factor).
        zoom: zoom range, zx and zy ~ U(1 - zoom, 1 + zoom) independently (> 1 zooms out).
        width_shift: fraction of the width (or pixels if >= 1), ImageDataGenerator's ``width_shift_range``.
        height_shift: fraction of the height (or pixels if >= 1), its ``height_shift_range``.
        horizontal_flip: flip left-right with probability 0.5, after the affine warp.
        fill_mode: 'nearest' (the seed's), 'constant' (zeros), 'reflect' or 'wrap'.
        interpolation: 'bilinear' (the seed's scipy order=1) or 'nearest'.
        idg_quirks: reproduce ImageDataGenerator's off-centre pivot and swapped shift axes on non-square
            images (see the module docstring); False = transform about the true centre.
        randaugment: add ``keras.layers.RandAugment(value_range=(0, 255))`` after the geometric warp.
        random_erasing: probability of ``keras.layers.RandomErasing`` per image (0 = off).
        mixup: Beta(alpha, alpha) parameter of MixUp in :func:`mix_batch` (0 = off).
        cutmix: Beta(alpha, alpha) parameter of CutMix in :func:`mix_batch` (0 = off).
    """

    rotation_deg: float = 15.0
    shear_deg: float = 0.1
    zoom: float = 0.2
    width_shift: float = 0.1
    height_shift: float = 0.1
    horizontal_flip: bool = True
    fill_mode: str = "nearest"
    interpolation: str = "bilinear"
    idg_quirks: bool = False
    randaugment: bool = False
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        if self.fill_mode not in _FILL_MODES:
            raise ValueError(f"fill_mode must be one of {_FILL_MODES}, got {self.fill_mode!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0.0 <= self.zoom < 1.0:
            raise ValueError(f"zoom must be in [0, 1), got {self.zoom}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability, got {self.random_erasing}")
        for name in ("rotation_deg", "shear_deg", "width_shift", "height_shift", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for Keras ``get_config``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; ignores unknown keys so older saved models still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in names})


def _as_config(config: AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig:
    if config is None:
        return AugmentConfig()
    if isinstance(config, AugmentConfig):
        return config
    return AugmentConfig.from_dict(config)


# --------------------------------------------------------------------------------------------------------------
# Randomness: everything is drawn with stateless ops from one [2] int64 seed, so a given seed reproduces.


def _seed_tensor(seed) -> tf.Tensor:
    """A [2] int64 stateless seed from None (fresh each call), an int, a SeedGenerator or a [2] tensor."""
    if seed is None:
        # A stateful draw: a new seed every time the op runs (each tf.data batch, each step).
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def _split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
    """``num`` independent [2] seeds, as rows of a [num, 2] tensor."""
    return tf.random.experimental.stateless_split(seed, num=num)


def _with_replica(seed: tf.Tensor) -> tf.Tensor:
    """Fold the replica id in, so MirroredStrategy replicas sharing one SeedGenerator still differ."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: one stream
        return seed
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
    return seed + tf.stack([replica * _REPLICA_SEED_STRIDE, tf.constant(0, tf.int64)])


# --------------------------------------------------------------------------------------------------------------
# Parameters and matrices.


def _shift_pixels(fraction_or_pixels: float, size) -> tf.Tensor:
    """ImageDataGenerator's rule: a range < 1 is a fraction of the side, otherwise pixels."""
    if fraction_or_pixels < 1:
        return fraction_or_pixels * tf.cast(size, tf.float32)
    return tf.constant(float(fraction_or_pixels), tf.float32)


def sample_params(batch_size, height, width, config: AugmentConfig | None = None, seed=None) -> dict[str, tf.Tensor]:
    """Draw ImageDataGenerator's random parameters for a batch, under its names.

    Returns a dict of float32 [B] tensors ``theta`` (degrees), ``tx`` (pixels, ``height_shift`` x height),
    ``ty`` (pixels, ``width_shift`` x width), ``shear`` (degrees), ``zx``, ``zy`` and ``flip_horizontal``
    (0/1), each uniform over the same range as ``ImageDataGenerator.get_random_transform``. ``seed``: None
    (fresh), an int, a ``keras.random.SeedGenerator`` or a [2] integer tensor.
    """
    config = _as_config(config)
    u = tf.random.stateless_uniform(tf.stack([batch_size, 7]), seed=_seed_tensor(seed), dtype=tf.float32)

    def symmetric(column: int, limit) -> tf.Tensor:
        return (2.0 * u[:, column] - 1.0) * limit

    zero = tf.zeros_like(u[:, 0])
    flip = tf.cast(u[:, 6] < 0.5, tf.float32) if config.horizontal_flip else zero
    return {
        "theta": symmetric(0, config.rotation_deg),
        "tx": symmetric(1, _shift_pixels(config.height_shift, height)),
        "ty": symmetric(2, _shift_pixels(config.width_shift, width)),
        "shear": symmetric(3, config.shear_deg),
        "zx": 1.0 + symmetric(4, config.zoom),
        "zy": 1.0 + symmetric(5, config.zoom),
        "flip_horizontal": flip,
    }


def transforms_from_params(params: Mapping[str, Any], height, width, idg_quirks: bool = False) -> tf.Tensor:
    """Compose ImageDataGenerator's parameters into [B, 8] projective transforms (output -> input coords).

    The layout is ``ImageProjectiveTransformV3`` / ``keras.ops.image.affine_transform``'s
    ``[a0, a1, a2, b0, b1, b2, 0, 0]``: output pixel (x=col, y=row) reads input
    ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``. It is ImageDataGenerator's ``R @ T @ Shear @ Zoom`` about its
    pivot, then the left-right flip (``M @ F``, since the flip is applied to the warped image). Missing keys
    mean "no such transform" (theta 0, zoom 1, ...), as in ``ImageDataGenerator.apply_transform``.
    """
    defaults = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0, "flip_horizontal": 0.0}
    # Broadcast every given parameter (scalars or [B]) to one [B] batch; all scalars make a batch of one.
    ones = tf.ones([1], tf.float32)
    for name in defaults:
        if name in params:
            ones = ones * tf.ones_like(tf.reshape(tf.cast(params[name], tf.float32), [-1]))

    def get(name):
        return tf.cast(params.get(name, defaults[name]), tf.float32) * ones

    theta, tx, ty, shear = get("theta"), get("tx"), get("ty"), get("shear")
    zx, zy, flip = get("zx"), get("zy"), get("flip_horizontal")
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)

    rad = theta * (math.pi / 180.0)
    rad_shear = shear * (math.pi / 180.0)
    cos, sin = tf.cos(rad), tf.sin(rad)
    # Linear part of R @ Shear @ Zoom, with Shear = [[1, -sin(s)], [0, cos(s)]] as ImageDataGenerator has it.
    a00, a01 = cos * zx, -tf.sin(rad + rad_shear) * zy
    a10, a11 = sin * zx, tf.cos(rad + rad_shear) * zy
    if idg_quirks:
        # ImageDataGenerator: tx moves along x (columns), pivot at (h/2 - 0.5, w/2 - 0.5) in (x, y).
        dx, dy = tx, ty
        ox, oy = h / 2.0 - 0.5, w / 2.0 - 0.5
    else:
        # The intended geometry: height shift is vertical, pivot at the image centre.
        dx, dy = ty, tx
        ox, oy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # Offset of C @ R @ T @ Shear @ Zoom @ C^-1: R @ (dx, dy) + o - A @ o.
    b0 = cos * dx - sin * dy + ox - a00 * ox - a01 * oy
    b1 = sin * dx + cos * dy + oy - a10 * ox - a11 * oy
    # Flip after the warp: output column x reads the warped image at w - 1 - x, i.e. M @ [[-1, 0, w-1], ...].
    sign = 1.0 - 2.0 * flip
    b0 = b0 + flip * a00 * (w - 1.0)
    b1 = b1 + flip * a10 * (w - 1.0)
    a00, a10 = a00 * sign, a10 * sign
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def sample_transforms(batch_size, height, width, config: AugmentConfig | None = None, seed=None) -> tf.Tensor:
    """[B, 8] random transforms (output -> input coords) with ImageDataGenerator's distribution.

    Flip, rotation, shear, zoom and shift are composed exactly as ImageDataGenerator composes them (see
    :func:`transforms_from_params`); ``seed`` as in :func:`sample_params`.
    """
    config = _as_config(config)
    params = sample_params(batch_size, height, width, config, seed)
    return transforms_from_params(params, height, width, config.idg_quirks)


def apply_transforms(images, transforms, fill_mode: str = "nearest", interpolation: str = "bilinear") -> tf.Tensor:
    """Warp an NHWC batch with one [B, 8] transform per image in a single op; returns float32.

    One ``ImageProjectiveTransformV3`` call (via ``keras.ops.image.affine_transform``): no XLA kernel, so
    keep it out of jit-compiled functions.
    """
    images = tf.cast(images, tf.float32)
    return keras.ops.image.affine_transform(images, tf.cast(transforms, tf.float32), interpolation=interpolation,
                                            fill_mode=fill_mode, fill_value=0.0, data_format="channels_last")


def _image_dims(images: tf.Tensor):
    """(batch, height, width), static ints where known, else scalar tensors."""
    dynamic = tf.shape(images)
    static = images.shape
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in range(3))


def _is_training(training) -> bool:
    # Keras 3 passes a Python bool (or None when nobody said: inference, like Dropout's default here).
    return bool(training) if training is not None else False


# --------------------------------------------------------------------------------------------------------------
# Layers.


class _Float32ImageLayer(keras.layers.Layer):
    """Images in, float32 images of the same shape out: augmented by :meth:`_augment` in training, only cast
    to float32 at inference (``training`` False or None)."""

    def call(self, images, training=None):
        images = tf.cast(images, tf.float32)
        return self._augment(images) if _is_training(training) else images

    def _augment(self, images: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(inputs.shape, dtype="float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SeedAugment(_Float32ImageLayer):
    """The seed's ImageDataGenerator augmentation as ONE projective warp per batch (the fast path).

    ``call(images, training=None)``: in training, draws one matrix per image (:func:`sample_transforms`) and
    warps the whole NHWC batch with a single ``ImageProjectiveTransformV3``; returns float32 in [0, 255]
    (for [0, 255] input). At inference (``training`` False or None) returns the images cast to float32,
    unchanged. Accepts uint8 or float input and any static or dynamic batch size. Randomness comes from a
    ``keras.random.SeedGenerator(seed)``, so a given seed reproduces; MirroredStrategy replicas get
    different draws. Not jit-compilable (``supports_jit = False``).
    """

    def __init__(self, config: AugmentConfig | Mapping[str, Any] | None = None, seed: int | None = None, **kwargs):
        kwargs.setdefault("autocast", False)  # the warp is float32 whatever the policy; don't recast input
        super().__init__(**kwargs)
        self.config = _as_config(config)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False

    def _augment(self, images):
        batch, height, width = _image_dims(images)
        seed = _with_replica(self.seed_generator.next())
        transforms = sample_transforms(batch, height, width, self.config, seed)
        return apply_transforms(images, transforms, self.config.fill_mode, self.config.interpolation)

    def get_config(self):
        config = super().get_config()
        config.update({"config": self.config.to_dict(), "seed": self.seed})
        return config


def _keras_shear_factor(shear_deg: float) -> float:
    """ImageDataGenerator's shear matrix entry for its largest angle.

    Its matrix has ``-sin(shear)`` above the diagonal (and ``cos(shear)`` ~ 1 below it); Keras'
    ``RandomShear(x_factor=f)`` puts a factor ~ U(-f, f) there. sin and tan agree to 1e-9 at 0.1 degree.
    """
    return math.sin(math.radians(shear_deg))


def stacked_reference(config: AugmentConfig | None = None, seed: int | None = None) -> keras.Sequential:
    """The readable reference: Keras' own Random* layers, parameterised to draw ImageDataGenerator's ranges.

    Checked against the Keras 3.15 sources: ``RandomRotation(f)`` draws ``U(-f, f) * 360`` degrees, so
    ``f = 15 / 360``; ``RandomTranslation(h, w)`` shifts by ``U(-h, h) * height`` rows and ``U(-w, w) * width``
    columns; ``RandomShear(x_factor=f)`` puts ``U(-f, f)`` (times a random sign) above the diagonal, so ``f =
    sin(0.1 deg)`` (and it shears about the top-left corner, not the centre: < 0.2 px of difference here);
    ``RandomZoom(height_factor=(-z, z), width_factor=(-z, z))`` draws zoom ``1 + U(-z, z)`` per axis,
    independently, output -> input (> 1 zooms out), as ImageDataGenerator. Layer order = matrix order
    (rotate, shift, shear, zoom), then the flip. The layers warp about the true centre with the intended shift
    axes, i.e. the same distribution as ``SeedAugment`` with ``idg_quirks=False`` (and with either setting on
    square images), but each layer resamples the image (five bilinear passes): slower and blurrier.

    The Random* layers augment whenever called with ``training`` unset; :func:`make_augmenter` wraps them so
    that they run only in training.
    """
    config = _as_config(config)
    # float32 whatever the global policy: under mixed_bfloat16 the warps would otherwise round to 8 bits.
    common = {"fill_mode": config.fill_mode, "interpolation": config.interpolation, "dtype": "float32"}
    seeds = [None] * 5 if seed is None else [seed + i for i in range(5)]  # distinct streams per layer
    layers = []
    if config.rotation_deg:
        layers.append(keras.layers.RandomRotation(config.rotation_deg / 360.0, seed=seeds[0], **common))
    if config.height_shift or config.width_shift:
        if config.height_shift >= 1 or config.width_shift >= 1:
            raise ValueError("stacked_reference takes fractional shifts only")
        layers.append(keras.layers.RandomTranslation(config.height_shift, config.width_shift, seed=seeds[1],
                                                     **common))
    if config.shear_deg:
        layers.append(keras.layers.RandomShear(x_factor=_keras_shear_factor(config.shear_deg), y_factor=0.0,
                                               seed=seeds[2], **common))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(height_factor=(-config.zoom, config.zoom),
                                              width_factor=(-config.zoom, config.zoom), seed=seeds[3], **common))
    if config.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seeds[4], dtype="float32"))
    return keras.Sequential(layers, name="stacked_reference")


def _random_erasing(probability: float, seed: int | None) -> keras.layers.Layer:
    # RandomErasing's float `factor` p means "probability ~ U(-p, p)" (it erases ~p/4 of the time); the pair
    # (p, p) pins the probability to p.
    return keras.layers.RandomErasing(factor=(probability, probability), value_range=(0, 255), seed=seed,
                                      dtype="float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Augmenter(_Float32ImageLayer):
    """The model's augmentation block: geometric warp (fused or stacked) + optional RandAugment / erasing.

    Active only in training (``training`` False or None returns the input cast to float32); always returns
    float32. Built from an :class:`AugmentConfig`, so it saves and loads inside a ``.keras`` model.
    """

    def __init__(self, config: AugmentConfig | Mapping[str, Any] | None = None, kind: str = "fused",
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if kind not in ("fused", "stacked"):
            raise ValueError(f"kind must be 'fused' or 'stacked', got {kind!r}")
        self.config = _as_config(config)
        self.kind = kind
        self.seed = seed
        self.supports_jit = False
        if kind == "fused":
            self.geometric = SeedAugment(self.config, seed=seed, name="seed_augment")
        else:
            self.geometric = stacked_reference(self.config, seed=seed)
        # Offsets keep the policies' random streams apart from the warp's when a seed is given.
        self.randaugment = (keras.layers.RandAugment(value_range=(0, 255), seed=_offset(seed, 101), dtype="float32")
                            if self.config.randaugment else None)
        self.eraser = (_random_erasing(self.config.random_erasing, _offset(seed, 202))
                       if self.config.random_erasing > 0 else None)

    def _policies(self) -> list[keras.layers.Layer]:
        return [layer for layer in (self.geometric, self.randaugment, self.eraser) if layer is not None]

    def build(self, input_shape):
        # Build the sub-layers now, so a functional model (and its .keras file) sees them built.
        for layer in self._policies():
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def _augment(self, images):
        images = tf.cast(self.geometric(images, training=True), tf.float32)
        if self.randaugment is not None:
            images = tf.cast(self.randaugment(images, training=True), tf.float32)
        if self.eraser is not None:
            images = tf.cast(self.eraser(images, training=True), tf.float32)
        return images

    def get_config(self):
        config = super().get_config()
        config.update({"config": self.config.to_dict(), "kind": self.kind, "seed": self.seed})
        return config


def _offset(seed: int | None, by: int) -> int | None:
    return None if seed is None else seed + by


def make_augmenter(config: AugmentConfig | None = None, kind: str = "fused", seed: int | None = None,
                   name: str = "augment") -> keras.layers.Layer:
    """One layer to put in a model: the seed's geometry (``kind`` 'fused' = :class:`SeedAugment`, 'stacked' =
    :func:`stacked_reference`) plus RandAugment / random erasing when the config enables them.

    Active only in training; returns float32. Keep it outside jit-compiled code (no XLA kernel for the warp).
    """
    return Augmenter(_as_config(config), kind=kind, seed=seed, name=name)


# --------------------------------------------------------------------------------------------------------------
# Label-mixing policies (need labels, so they live in the training step or tf.data, not in the model).


def _beta(shape, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) from two stateless gammas."""
    seeds = _split_seed(seed, 2)
    g1 = tf.random.stateless_gamma(shape, seed=seeds[0], alpha=alpha, dtype=tf.float32)
    g2 = tf.random.stateless_gamma(shape, seed=seeds[1], alpha=alpha, dtype=tf.float32)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _permutation(batch, seed: tf.Tensor) -> tf.Tensor:
    """A random permutation of range(batch): argsort of stateless uniforms."""
    return tf.argsort(tf.random.stateless_uniform(tf.reshape(batch, [1]), seed=seed))


def _mixup(images, labels, alpha: float, perm, seed):
    """Keras MixUp's rule: per image, lam ~ Beta(alpha, alpha); x = lam x + (1-lam) x[perm], same for y."""
    lam = _beta(tf.shape(images)[:1], alpha, seed)
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.gather(images, perm)
    return mixed, lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, perm)


def _cutmix(images, labels, alpha: float, perm, seed):
    """CutMix: paste a box of area ~(1 - lam) of image perm[i] into image i; labels by the true pasted area."""
    seeds = _split_seed(seed, 2)
    batch, height, width = _image_dims(images)
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
    return mixed, kept[:, None] * labels + (1.0 - kept[:, None]) * tf.gather(labels, perm)


def mix_batch(images, labels, num_classes: int, config: AugmentConfig | None = None, seed=None):
    """MixUp / CutMix on a batch with integer labels -> (float32 images, float32 soft labels [B, num_classes]).

    ``config.mixup`` / ``config.cutmix`` are the Beta(alpha, alpha) parameters (0 = off). With both on, each
    image gets one of the two at random (p = 0.5 each). With both off: the images cast to float32 and exact
    one-hot labels. Partners are a random permutation of the batch. ``seed``: None (fresh every call), an
    int (the same mix every call: for tests), a ``keras.random.SeedGenerator`` or a [2] tensor (e.g. per step).
    """
    config = _as_config(config)
    images = tf.cast(images, tf.float32)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    soft = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if config.mixup <= 0 and config.cutmix <= 0:
        return images, soft
    seeds = _split_seed(_seed_tensor(seed), 4)
    perm = _permutation(tf.shape(images)[0], seeds[0])
    if config.cutmix <= 0:
        return _mixup(images, soft, config.mixup, perm, seeds[1])
    if config.mixup <= 0:
        return _cutmix(images, soft, config.cutmix, perm, seeds[2])
    mix_x, mix_y = _mixup(images, soft, config.mixup, perm, seeds[1])
    cut_x, cut_y = _cutmix(images, soft, config.cutmix, perm, seeds[2])
    use_mix = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seeds[3]) < 0.5
    return (tf.where(use_mix[:, None, None, None], mix_x, cut_x), tf.where(use_mix[:, None], mix_y, cut_y))


# --------------------------------------------------------------------------------------------------------------
# tf.data (host) placement.

_HOST_LAYERS: dict[tuple, keras.layers.Layer] = {}
_HOST_LAYERS_LOCK = threading.Lock()


def host_augmenter(config: AugmentConfig | None = None, kind: str = "fused", seed: int | None = None):
    """The (cached) augmenter that :func:`augment_batch_on_host` uses for this (config, kind, seed).

    Cached so that tracing a tf.data map function again does not create new random-state variables; built
    under ``tf.init_scope`` so the variables live outside any function graph being traced.
    """
    key = (_as_config(config), kind, seed)
    with _HOST_LAYERS_LOCK:
        layer = _HOST_LAYERS.get(key)
        if layer is None:
            with tf.init_scope():
                layer = make_augmenter(key[0], kind=kind, seed=seed, name=f"host_augment_{len(_HOST_LAYERS)}")
            _HOST_LAYERS[key] = layer
    return layer


def augment_batch_on_host(images, labels, config: AugmentConfig | None = None, kind: str = "fused",
                          seed: int | None = None, layer: keras.layers.Layer | None = None):
    """For ``tf.data`` ``.map`` after ``.batch`` (host placement): augment the images, leave the labels alone.

    Applies :func:`make_augmenter`'s layer (or ``layer`` if given) with ``training=True`` and returns
    ``(float32 images, labels)``. Works in graph mode (tf.data traces the map function).
    """
    layer = layer if layer is not None else host_augmenter(config, kind, seed)
    return layer(images, training=True), labels
