"""The readable reference for the source's augmentation: Keras' own stacked ``Random*`` layers.

Used ONLY by the tests (which check that :class:`celeba_gender.inputs.augment.Augmenter`'s fused warp draws from the
same distribution as these layers) and by ``benchmarks/input_pipeline.py`` (which times both); the engine
never imports this module. The stacked layers resample the image once per layer (five bilinear passes), so
they are slower and blurrier than the fused warp; see :mod:`celeba_gender.inputs.augment`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from celeba_gender.inputs.config import AugmentConfig


def _keras_shear_factor(shear_deg: float) -> float:
    """ImageDataGenerator's shear matrix entry for its largest angle.

    Its matrix has ``-sin(shear)`` above the diagonal (and ``cos(shear)`` ~ 1 below it); Keras'
    ``RandomShear(x_factor=f)`` puts a factor ~ U(-f, f) there. sin and tan agree to 1e-9 at 0.1 degree.
    """
    return math.sin(math.radians(shear_deg))


def stacked_reference(config: AugmentConfig | None = None, seed: int | None = None) -> keras.Sequential:
    """Keras' own Random* layers, parameterised to draw ImageDataGenerator's ranges.

    Checked against the Keras 3.15 sources: ``RandomRotation(f)`` draws ``U(-f, f) * 360`` degrees, so
    ``f = 15 / 360``; ``RandomTranslation(h, w)`` shifts by ``U(-h, h) * height`` rows and ``U(-w, w) * width``
    columns; ``RandomShear(x_factor=f)`` puts ``U(-f, f)`` (times a random sign) above the diagonal, so ``f =
    sin(0.1 deg)`` (and it shears about the top-left corner, not the centre: < 0.2 px of difference here);
    ``RandomZoom(height_factor=(-z, z), width_factor=(-z, z))`` draws zoom ``1 + U(-z, z)`` per axis,
    independently, output -> input (> 1 zooms out), as ImageDataGenerator. Layer order = matrix order
    (rotate, shift, shear, zoom), then the flip. The layers warp about the true centre with the intended shift
    axes, i.e. the same distribution as ``Augmenter`` with ``idg_quirks=False`` (and with either setting on
    square images), but each layer resamples the image (five bilinear passes): slower and blurrier.

    The Random* layers augment whenever called with ``training`` unset; :class:`StackedAugmenter` wraps them
    so that they run only in training.
    """
    config = config if config is not None else AugmentConfig()
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


class StackedAugmenter(keras.layers.Layer):
    """:func:`stacked_reference` with ``Augmenter``'s contract: augments only in training (``training`` False
    or None returns the images cast to float32), always returns float32, takes uint8 or float input.

    The geometry only: ``config.randaugment`` and ``config.random_erasing`` are ignored (the comparisons
    this exists for are of the warp). Not registered for saving: no model the engine saves holds it.
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int | None = None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.stacked = stacked_reference(config, seed)
        self.supports_jit = False

    def build(self, input_shape):
        self.stacked.build(input_shape)
        self.built = True

    def call(self, images, training=None):
        images = tf.cast(images, tf.float32)
        if not training:
            return images
        return tf.cast(self.stacked(images, training=True), tf.float32)
