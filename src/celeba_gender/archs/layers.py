"""Layers every model shares: each arch's own input preprocessing, and the classification heads.

They are registered Keras layers (not Lambdas), so a saved ``model.keras`` loads without custom code
and without ``safe_mode=False``.
"""

from __future__ import annotations

import keras
from keras import ops

# keras.applications' preprocess_input modes, as constants (ImageNet statistics, RGB order).
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESS_MODES = ("tf", "torch", "caffe", "rescale", "none")


@keras.saving.register_keras_serializable(package="celeba_gender")
class Preprocess(keras.layers.Layer):
    """An arch's own ``preprocess_input`` inside the model: RGB values in [0, 255] in, what it expects out.

    Modes (keras.applications' names): ``tf`` -> [-1, 1] (ResNetV2, InceptionV3); ``torch`` -> ImageNet
    mean/std (DenseNet); ``caffe`` -> BGR minus ImageNet means (VGG16); ``rescale`` -> [0, 1] (AlexNet, as
    the source rescaled); ``none`` (EfficientNetV2 preprocesses itself).
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r}; choose from {PREPROCESS_MODES}.")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, self.compute_dtype)
        if self.mode == "rescale":
            return x / 255.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


HEADS = ("seed", "linear", "fc4096")


def classification_head(features, head: str, num_classes: int = 2, dropout: float = 0.2):
    """Backbone feature maps -> class probabilities. The softmax is float32 even under mixed precision.

    ``seed``: global average pooling, then the source study's Dense 1024 -> 256 -> 64 -> 32 (ReLU, dropout
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
        if head == "seed":
            for units in (1024, 256, 64, 32):
                x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{units}")(x)
                x = keras.layers.Dropout(dropout, name=f"head_dropout_{units}")(x)
        else:
            x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
