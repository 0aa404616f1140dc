"""Keras models from the registry's specs: the backbone (with ImageNet or local weights), the arch's own
preprocessing and the head, as one model with float32 outputs.

    model = build_model(ModelConfig(arch="inceptionv3", weights="none"))
"""

from __future__ import annotations

import dataclasses
import math
import os

import keras

from celeba_gender.models import imagenet_weights, scratch
from celeba_gender.models.layers import classification_head, preprocessing
from celeba_gender.models.registry import HEAD_CHOICES, HEADS, ArchError, ArchSpec, ModelConfig, get, image_size


def _backbone(spec: ArchSpec, shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    kind, name = spec.builder
    if kind == "applications":
        return getattr(keras.applications, name)(include_top=False, weights=weights, input_shape=shape)
    model = getattr(scratch, name)(shape)
    if weights not in (None, "none"):
        model.load_weights(weights)  # a PATH: weights saved from this backbone
    return model


def _resolve_weights(spec: ArchSpec, weights: str) -> str | None:
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        if spec.imagenet is None:
            raise ArchError(f"{spec.name} has no ImageNet weights (it trains from scratch): use --weights=none.")
        imagenet_weights.check_file(spec.name, *spec.imagenet)
        return "imagenet"
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise ArchError(f"--weights={weights}: no such file. Give 'imagenet', 'none' or the path of a weights "
                        "file for this backbone (e.g. a downloaded *_notop.h5).")
    return path


def build_backbone(spec: ArchSpec, size: tuple[int, int], weights: str) -> keras.Model:
    """The arch's feature extractor, with ImageNet/local weights when asked."""
    resolved = _resolve_weights(spec, weights)
    try:
        return _backbone(spec, (*size, 3), resolved)
    except Exception as e:  # noqa: BLE001 - Keras raises plain Exception on a failed download
        if resolved == "imagenet" and ("URL fetch failure" in str(e) or isinstance(e, OSError)):
            raise ArchError(imagenet_weights.missing_message(spec.name, *spec.imagenet, e)) from None
        if resolved not in (None, "imagenet"):
            raise ArchError(f"--weights={weights} does not fit {spec.name}'s backbone: {e}") from None
        raise


def set_trainable_layers(backbone: keras.Model, n: int) -> None:
    """The last ``n`` backbone layers train, the others are frozen (BatchNorm then runs in inference mode,
    Keras 3's rule for non-trainable BatchNormalization); ``n = -1`` trains them all."""
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    if n < -1:
        raise ArchError(f"--trainable_layers={n}: give -1 (all) or a number of layers >= 0.")
    cut = 0 if n == -1 else max(len(layers) - n, 0)
    backbone.trainable = True
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut


@dataclasses.dataclass(frozen=True)
class Model:
    """``network``: float or uint8 RGB in [0, 255] -> probabilities (the arch's preprocessing, the backbone, the
    head: what is trained, checkpointed and exported); ``backbone``: the feature extractor inside it."""

    network: keras.Model
    backbone: keras.Model
    spec: ArchSpec
    image_size: tuple[int, int]


def build_model(config: ModelConfig) -> Model:
    """Builds an arch with its preprocessing, head and float32 softmax (build it inside a strategy scope)."""
    spec = get(config.arch)
    size = image_size(config)
    head = spec.default_head if config.head == "auto" else config.head
    if head not in HEADS:
        raise ArchError(f"--head={config.head}: choose one of {', '.join(HEAD_CHOICES)}.")
    backbone = build_backbone(spec, size, config.weights)
    set_trainable_layers(backbone, config.trainable_layers)
    inputs = keras.Input((*size, 3), dtype="float32", name="image")
    x = preprocessing(spec.preprocess)(inputs)
    outputs = classification_head(backbone(x), head, config.outputs, config.dropout, config.activation)
    network = keras.Model(inputs, outputs, name=spec.name)
    return Model(network, backbone, spec, size)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return trainable, sum(math.prod(w.shape) for w in model.weights) - trainable
