"""Backbones trained from scratch: the source's AlexNet, and small CNNs for CPU demos and smoke tests."""

from __future__ import annotations

import keras
from keras import layers


# Our own small CNNs train for a few hundred steps on a CPU demo: with Keras' default BatchNormalization
# momentum (0.99) the moving variance is still mostly its initial 1.0 after 300 steps, and a model that
# is fine in training mode predicts one class in inference mode. 0.9 converges in ~40 steps.
BN_MOMENTUM = 0.9


def _bn(name: str, **kwargs):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name, **kwargs)


def _conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1, name: str = ""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = _bn(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def alexnet(input_shape: tuple[int, int, int]) -> keras.Model:
    """The source study's AlexNet feature extractor (SEED.md): conv 96 11x11/4, BN, pool; 256 11x11, BN;
    384 3x3, BN; 384 3x3, BN; 256 3x3, BN, pool. Its classifier (flatten, 4096, 4096) is the fc4096 head."""
    inputs = keras.Input(input_shape, name="alexnet_input")
    x = layers.Conv2D(96, 11, strides=4, activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.MaxPooling2D(2, strides=2, name="pool1")(x)
    x = layers.Conv2D(256, 11, padding="same", activation="relu", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    for i, filters in ((3, 384), (4, 384), (5, 256)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
    x = layers.MaxPooling2D(2, strides=2, name="pool5")(x)
    return keras.Model(inputs, x, name="alexnet")


def tiny(input_shape: tuple[int, int, int]) -> keras.Model:
    """Two strided convolutions: seconds per epoch on a CPU. For smoke tests, not for accuracy."""
    inputs = keras.Input(input_shape, name="tiny_input")
    x = _conv_bn_relu(inputs, 8, strides=2, name="block1")
    x = _conv_bn_relu(x, 16, strides=2, name="block2")
    return keras.Model(inputs, x, name="tiny")


def plain4(input_shape: tuple[int, int, int]) -> keras.Model:
    """The reference the small CNN is measured against: 4 x (conv 3x3, BN, ReLU, max-pool), 32-64-128-256."""
    inputs = keras.Input(input_shape, name="plain4_input")
    x = inputs
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = _conv_bn_relu(x, filters, name=f"block{i}")
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="plain4")


def _residual(x, filters: int, strides: int, name: str):
    """A pre-activation-free ResNet basic block with a projection shortcut when the shape changes."""
    shortcut = x
    y = _conv_bn_relu(x, filters, strides=strides, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_b_conv")(y)
    y = _bn(f"{name}_b_bn", gamma_initializer="zeros")(y)  # the block starts as its shortcut
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, kernel_initializer="he_normal",
                                 name=f"{name}_proj_conv")(x)
        shortcut = _bn(f"{name}_proj_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def small(input_shape: tuple[int, int, int]) -> keras.Model:
    """A small residual CNN for CPU demos at half resolution (109x89): a strided stem, then four stages of
    basic residual blocks (32-64-128-256 channels, each halving the resolution), ~1.2 M parameters.

    Why residual: at the same widths as the plain 4-block CNN it trains faster and deeper (twice the
    convolutions) with identity-initialised blocks; see benchmarks/README.md for the comparison.
    """
    inputs = keras.Input(input_shape, name="small_input")
    x = _conv_bn_relu(inputs, 32, strides=1, name="stem")
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = _residual(x, filters, strides=2, name=f"stage{i}")
    return keras.Model(inputs, x, name="small")
