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
    """The source study's AlexNet feature extractor (docs/source_study.md): conv 96 11x11/4, BN, pool; 256 11x11, BN;
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


def _four_stages(input_shape: tuple[int, int, int], name: str, residual: bool) -> keras.Model:
    """4 x (conv 3x3, BN, ReLU, max-pool) with 32-64-128-256 filters, each stage followed by a
    :func:`_separable_residual` block when ``residual``: plain4 and small share everything else."""
    inputs = keras.Input(input_shape, name=f"{name}_input")
    x = inputs
    for i, filters in enumerate((32, 64, 128, 256), start=1):
        x = _conv_bn_relu(x, filters, name=f"block{i}")
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        if residual:
            x = _separable_residual(x, name=f"block{i}_res")
    return keras.Model(inputs, x, name=name)


def plain4(input_shape: tuple[int, int, int]) -> keras.Model:
    """The reference the small CNN is measured against: 4 x (conv 3x3, BN, ReLU, max-pool), 32-64-128-256."""
    return _four_stages(input_shape, "plain4", residual=False)


def _separable_residual(x, name: str):
    """x + BN(pointwise(ReLU(BN(depthwise 3x3(x))))), then ReLU: a cheap residual refinement whose last
    BatchNorm starts at zero, so that the block starts as the identity."""
    channels = x.shape[-1]
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, depthwise_initializer="he_normal",
                               name=f"{name}_dw")(x)
    y = layers.ReLU(name=f"{name}_dw_relu")(_bn(f"{name}_dw_bn")(y))
    y = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_pw")(y)
    y = _bn(f"{name}_pw_bn", gamma_initializer="zeros")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def small(input_shape: tuple[int, int, int]) -> keras.Model:
    """The CPU-demo CNN for half-resolution faces (109x89): plain4's four conv/BN/ReLU/max-pool stages
    (32-64-128-256), each followed by a depthwise-separable residual block.

    Why this shape: the residual blocks start as the identity (their last BatchNorm's scale is 0, and the
    input is non-negative after ReLU and max-pooling), so at initialisation the network computes exactly
    what plain4 computes and training can only add to it; depthwise-separable convolutions add depth for
    about 7% more arithmetic. Measured against plain4 trained the same way in benchmarks/README.md.
    """
    return _four_stages(input_shape, "small", residual=True)
