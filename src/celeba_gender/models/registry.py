"""The architecture registry: name -> ArchSpec (builder, default and minimum image size, preprocessing,
default head, ImageNet weights file). Every caller asks here; nobody else hard-codes a size or a mean.

    model = build_model(ModelConfig(arch="inceptionv3", weights="none"))
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import keras

from celeba_gender.models import applications, recipes, scratch
from celeba_gender.models.layers import HEADS, classification_head, preprocessing
from celeba_gender.shards.attributes import CELEBA_SIZE
from celeba_gender.core.errors import UserError


class ArchError(UserError):
    """A model that cannot be built as asked; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What the engine needs to know about one architecture."""

    name: str
    build: Callable[[tuple[int, int, int], str | None], keras.Model]  # (input shape, weights) -> backbone
    preprocess: str  # a layers.preprocessing mode: the arch's own preprocess_input
    min_size: tuple[int, int]
    default_head: str
    default_size: tuple[int, int] = CELEBA_SIZE
    imagenet: tuple[str, str, str] | None = None  # (no-top file name, URL folder, MD5) when pretrained exists
    description: str = ""
    # Grad-CAM's layer: the name, inside the backbone, of the last spatial feature map before pooling (after its
    # activation), so that gradcam.py never guesses it from the model's structure.
    gradcam_layer: str = ""

    def recipe(self, epochs: int | None = None) -> dict:
        """The recommended training settings for a run of ``epochs`` epochs (option name -> value;
        archs/recipes.py says why)."""
        return recipes.recipe(self.name, epochs)


def _app(constructor):
    return lambda shape, weights: applications.build(constructor, shape, weights)


def _scratch(fn):
    def build(shape, weights):
        if weights not in (None, "none"):
            model = fn(shape)
            model.load_weights(weights)  # a PATH: weights saved from this backbone
            return model
        return fn(shape)
    return build


_A = keras.applications
ARCHS: dict[str, ArchSpec] = {spec.name: spec for spec in (
    ArchSpec("alexnet", _scratch(scratch.alexnet), "rescale", (23, 23), "fc4096",
             description="the source's AlexNet (from scratch), with a softmax where it had a 2-unit sigmoid",
             gradcam_layer="bn5"),
    ArchSpec("resnet50v2", _app(_A.ResNet50V2), "tf", (32, 32), "seed",
             imagenet=("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet/",
                       "fac2f116257151a9d068a22e544a4917"),
             gradcam_layer="post_relu"),
    ArchSpec("inceptionv3", _app(_A.InceptionV3), "tf", (75, 75), "seed",
             imagenet=("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_v3/",
                       "bcbd6486424b2319ff4ef7d526e38f63"), description="the source's 'GoogLeNet'",
             gradcam_layer="mixed10"),
    ArchSpec("vgg16", _app(_A.VGG16), "caffe", (32, 32), "seed",
             imagenet=("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg16/",
                       "6d6bbae143d832006294945121d1f1fc"),
             gradcam_layer="block5_conv3"),
    ArchSpec("densenet201", _app(_A.DenseNet201), "torch", (32, 32), "seed",
             imagenet=("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5", "densenet/",
                       "c13680b51ded0fb44dff2d8f86ac8bb1"),
             gradcam_layer="relu"),
    ArchSpec("efficientnetv2b0", _app(_A.EfficientNetV2B0), "none", (32, 32), "seed",
             imagenet=("efficientnetv2-b0_notop.h5", "efficientnet_v2/", "893217f2bb855e2983157299931e43ff"),
             description="a modern efficient backbone (7 M parameters, ~0.7 GFLOPs at 224x224)",
             gradcam_layer="top_activation"),
    ArchSpec("small", _scratch(scratch.small), "tf", (32, 32), "linear", default_size=(109, 89),
             description="the CPU-demo CNN: plain4 with a depthwise-separable residual block per stage",
             gradcam_layer="block4_res_out"),
    ArchSpec("plain4", _scratch(scratch.plain4), "tf", (16, 16), "linear", default_size=(109, 89),
             description="a plain 4-block CNN: the reference the small CNN is measured against",
             gradcam_layer="block4_relu"),
    ArchSpec("tiny", _scratch(scratch.tiny), "tf", (8, 8), "linear", default_size=(64, 52),
             description="two convolutions, for smoke tests",
             gradcam_layer="block2_relu"),
)}
ARCH_NAMES = tuple(ARCHS)
HEAD_CHOICES = ("auto", *HEADS)


def get(name: str) -> ArchSpec:
    """The spec of ``name``; an unknown name is an ArchError listing the known ones."""
    if name not in ARCHS:
        raise ArchError(f"Unknown arch {name!r}: choose one of {', '.join(ARCH_NAMES)}.")
    return ARCHS[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """How to build one model."""

    arch: str
    image_size: tuple[int, int] | None = None  # None: the arch's default size
    weights: str = "none"  # none | imagenet | a local weights file
    head: str = "auto"  # auto: the arch's default (seed for the transfer-learning backbones)
    trainable_layers: int = -1  # -1: every backbone layer trains; N: only the last N
    num_classes: int = 2  # outputs: classes of one attribute, or attributes when multi_label
    dropout: float = 0.2
    multi_label: bool = False  # one sigmoid per output (several attributes) instead of one softmax


def image_size(config: ModelConfig) -> tuple[int, int]:
    """The input size a model config asks for, checked against the arch's minimum."""
    spec = get(config.arch)
    size = tuple(config.image_size or spec.default_size)
    if size[0] < spec.min_size[0] or size[1] < spec.min_size[1]:
        raise ArchError(f"--image_size={size[0]},{size[1]} is below {spec.name}'s minimum of "
                        f"{spec.min_size[0]}x{spec.min_size[1]} (height x width): use a larger --image_size.")
    return size


def _resolve_weights(spec: ArchSpec, weights: str) -> str | None:
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        if spec.imagenet is None:
            raise ArchError(f"{spec.name} has no ImageNet weights (it trains from scratch): use --weights=none.")
        applications.check_imagenet_file(spec.name, *spec.imagenet)
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
        return spec.build((*size, 3), resolved)
    except Exception as e:  # noqa: BLE001 - Keras raises plain Exception on a failed download
        if resolved == "imagenet" and ("URL fetch failure" in str(e) or isinstance(e, OSError)):
            raise ArchError(applications.missing_weights_message(spec.name, *spec.imagenet, e)) from None
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
    """``core``: float or uint8 RGB in [0, 255] -> probabilities (preprocessing, backbone, head);
    ``backbone``: the feature extractor inside it."""

    core: keras.Model
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
    outputs = classification_head(backbone(x), head, config.num_classes, config.dropout, config.multi_label)
    core = keras.Model(inputs, outputs, name=spec.name)
    return Model(core, backbone, spec, size)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return trainable, sum(math.prod(w.shape) for w in model.weights) - trainable
