"""The source study's geometric augmentation as pure functions: random parameters -> one projective transform
per image -> one warp per batch. No Keras layers and no state here; :mod:`celeba_gender.inputs.augment` wraps
these in the layer that training uses.

The source notebooks augmented with::

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
architecture's own ``preprocess_input`` runs later, inside the model (the source's ``rescale=1/255`` for every
backbone was one of its mistakes).

Two quirks of ImageDataGenerator, visible only on non-square images such as CelebA's 218x178; the engine
turns about the true centre by default, and ``idg_quirks=True`` reproduces ImageDataGenerator pixel for
pixel (tested):

1. ``transform_matrix_offset_center(matrix, h, w)`` puts the pivot at ``(x, y) = (h/2 - 0.5, w/2 - 0.5)``
   but the matrix acts on (column, row) coordinates, so for 218x178 rotation and zoom turn about
   (col 108.5, row 88.5) instead of the centre (col 88.5, row 108.5): a pivot 28 px off centre, which adds
   up to ~7 px of extra shift at 15 degrees and up to 4 px at 20 % zoom.
2. ``tx`` (scaled by the *height*) moves the image horizontally and ``ty`` (scaled by the *width*)
   vertically: the horizontal shift reaches 21.8 px (10 % of 218) and the vertical 17.8 px (10 % of 178).

``idg_quirks=False`` (the default) turns about the true centre and shifts vertically by up to
``height_shift * height`` and horizontally by up to ``width_shift * width``: the geometry the source meant, and
what Keras' own ``RandomRotation`` / ``RandomTranslation`` / ``RandomZoom`` layers do
(:func:`celeba_gender.inputs.augment_reference.stacked_reference`). On square images both settings are the same
distribution.

Randomness: everything is drawn with stateless ops from one [2] int64 seed, so a given seed reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import keras
import tensorflow as tf

# Added to a seed's first word per replica, so that MirroredStrategy replicas draw different transforms.
REPLICA_SEED_STRIDE = 1_000_003


class GeometryRanges(Protocol):
    """The ranges the geometry reads (``augment.AugmentConfig`` has them; see its docstring)."""

    @property
    def rotation_deg(self) -> float: ...
    @property
    def shear_deg(self) -> float: ...
    @property
    def zoom(self) -> float: ...
    @property
    def width_shift(self) -> float: ...
    @property
    def height_shift(self) -> float: ...
    @property
    def horizontal_flip(self) -> bool: ...
    @property
    def idg_quirks(self) -> bool: ...


# --------------------------------------------------------------------------------------------------------------
# Stateless seeds.


def seed_tensor(seed) -> tf.Tensor:
    """A [2] int64 stateless seed from None (fresh each call), an int, a SeedGenerator or a [2] tensor."""
    if seed is None:
        # A stateful draw: a new seed every time the op runs (each tf.data batch, each step).
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
    """``num`` independent [2] seeds, as rows of a [num, 2] tensor."""
    return tf.random.experimental.stateless_split(seed, num=num)


def step_seed(seed: int, step, stream: int = 0, worker: int = 0) -> tf.Tensor:
    """The [2] stateless seed of one training step's ``stream`` of draws (0 augmentation, 1 mixing): a function
    of (seed, global step, stream, worker) alone, so a resumed run draws what a run never stopped draws, and
    parallel tf.data map calls draw the same whatever order they run in. ``worker``: the input pipeline, for
    host augmentation (the replicas of the training step fold their id in with :func:`replica_seed`)."""
    base = tf.constant([seed + worker * REPLICA_SEED_STRIDE, stream], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))


def replica_seed(seed: tf.Tensor) -> tf.Tensor:
    """Fold the replica id in, so MirroredStrategy replicas sharing one SeedGenerator still differ."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: one stream
        return seed
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
    return seed + tf.stack([replica * REPLICA_SEED_STRIDE, tf.constant(0, tf.int64)])


def image_dims(images: tf.Tensor) -> tuple:
    """(batch, height, width) of an NHWC batch: static ints where known, else scalar tensors."""
    dynamic = tf.shape(images)
    static = images.shape
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in range(3))


# --------------------------------------------------------------------------------------------------------------
# Parameters, matrices, the warp.


def _shift_pixels(fraction_or_pixels: float, size) -> tf.Tensor:
    """ImageDataGenerator's rule: a range < 1 is a fraction of the side, otherwise pixels."""
    if fraction_or_pixels < 1:
        return fraction_or_pixels * tf.cast(size, tf.float32)
    return tf.constant(float(fraction_or_pixels), tf.float32)


def sample_params(batch_size, height, width, config: GeometryRanges, seed=None) -> dict[str, tf.Tensor]:
    """Draw ImageDataGenerator's random parameters for a batch, under its names.

    Returns a dict of float32 [B] tensors ``theta`` (degrees), ``tx`` (pixels, ``height_shift`` x height),
    ``ty`` (pixels, ``width_shift`` x width), ``shear`` (degrees), ``zx``, ``zy`` and ``flip_horizontal``
    (0/1), each uniform over the same range as ``ImageDataGenerator.get_random_transform``. ``seed``: None
    (fresh), an int, a ``keras.random.SeedGenerator`` or a [2] integer tensor.
    """
    u = tf.random.stateless_uniform(tf.stack([batch_size, 7]), seed=seed_tensor(seed), dtype=tf.float32)

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


def sample_transforms(batch_size, height, width, config: GeometryRanges, seed=None) -> tf.Tensor:
    """[B, 8] random transforms (output -> input coords) with ImageDataGenerator's distribution.

    Flip, rotation, shear, zoom and shift are composed exactly as ImageDataGenerator composes them (see
    :func:`transforms_from_params`), about the pivot ``config.idg_quirks`` chooses; ``seed`` as in
    :func:`sample_params`.
    """
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
