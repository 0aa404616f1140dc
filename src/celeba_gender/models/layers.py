"""Layers every model shares: each arch's own input preprocessing, and the classification heads.

Both are built from Keras' own layers only, so an exported ``model.keras`` loads with plain
``keras.models.load_model(path)`` in a Python that has never imported this package.
"""

from __future__ import annotations

import keras
import numpy as np

from celeba_gender.models.registry import HEADS

# keras.applications' preprocess_input modes, as constants (ImageNet statistics, RGB order).
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESS_MODES = ("tf", "torch", "caffe", "rescale", "none")


def preprocessing(mode: str, name: str = "preprocess") -> keras.layers.Layer:
    """An arch's own ``preprocess_input`` as one built-in layer: RGB values in [0, 255] in, what it expects out.

    Modes (keras.applications' names): ``tf`` -> [-1, 1] (ResNetV2, InceptionV3); ``torch`` -> ImageNet
    mean/std (DenseNet); ``caffe`` -> BGR minus ImageNet means (VGG16: a fixed, frozen 1x1 convolution swaps
    the channels and subtracts the means); ``rescale`` -> [0, 1] (AlexNet, as the source rescaled); ``none``
    (EfficientNetV2 preprocesses itself). Computed in float32 whatever the precision policy.
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"Unknown preprocessing mode {mode!r}; choose from {PREPROCESS_MODES}.")
    common = {"name": name, "dtype": "float32"}
    if mode == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, **common)
    if mode == "rescale":
        return keras.layers.Rescaling(1 / 255.0, **common)
    if mode == "torch":  # (x / 255 - mean) / std, per channel
        return keras.layers.Rescaling([1 / (255.0 * s) for s in _TORCH_STD],
                                      offset=[-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)], **common)
    if mode == "caffe":
        layer = keras.layers.Conv2D(3, 1, trainable=False, **common)
        layer.build((None, None, None, 3))
        swap = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)  # output channel j reads input 2 - j
        layer.set_weights([swap, -np.asarray(_CAFFE_BGR_MEAN, "float32")])
        return layer
    return keras.layers.Identity(**common)


def classification_head(features, head: str, outputs: int = 2, dropout: float = 0.2, activation: str = "softmax"):
    """Backbone feature maps -> ``outputs`` probabilities: a softmax over classes, or one sigmoid per output
    (``activation="sigmoid"``: independent attributes). Float32 even under mixed precision.

    ``source``: global average pooling, then the source study's Dense 1024 -> 256 -> 64 -> 32 (ReLU, dropout
    ``dropout`` after each) -> classes. ``linear``: global average pooling, dropout, one Dense layer.
    ``fc4096``: AlexNet's classifier: flatten, then 4096 -> 4096 (ReLU, dropout 0.5 after each) -> classes.
    """
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}; choose from {HEADS}.")
    if head == "fc4096":
        x = keras.layers.Flatten(name="flatten")(features)
        for i in (1, 2):
            x = keras.layers.Dense(4096, activation="relu", name=f"fc{i}")(x)
            x = keras.layers.Dropout(0.5, name=f"fc{i}_dropout")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
        if head == "source":
            for units in (1024, 256, 64, 32):
                x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{units}")(x)
                x = keras.layers.Dropout(dropout, name=f"head_dropout_{units}")(x)
        else:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(outputs, name="logits")(x)
    return keras.layers.Activation(activation, dtype="float32", name="probabilities")(logits)
