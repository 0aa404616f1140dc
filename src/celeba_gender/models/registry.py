"""The architecture registry: name -> ArchSpec (builder, default and minimum image size, preprocessing,
default head, ImageNet weights file, Grad-CAM layer). Every caller asks here; nobody else hard-codes a size or a
mean. Plain data, importable without TensorFlow (the commands' flags are declared from it); :mod:`build` turns a
spec into a Keras model.

    spec = get("inceptionv3"); spec.default_size, spec.recipe(epochs=10)
"""

from __future__ import annotations

import dataclasses

from celeba_gender.core.errors import UserError
from celeba_gender.models import recipes
from celeba_gender.shards.attributes import CELEBA_SIZE

# The classifier heads (models/layers.py builds them): the source study's, a linear one, AlexNet's.
HEADS = ("source", "linear", "fc4096")


class ArchError(UserError):
    """A model that cannot be built as asked; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """What the engine needs to know about one architecture."""

    name: str
    # How build.py makes the backbone: ("applications", <keras.applications constructor>) for the pretrained
    # ones, ("scratch", <function of models/scratch.py>) for those trained from scratch.
    builder: tuple[str, str]
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
        models/recipes.py says why)."""
        return recipes.recipe(self.name, epochs)


ARCHS: dict[str, ArchSpec] = {spec.name: spec for spec in (
    ArchSpec("alexnet", ("scratch", "alexnet"), "rescale", (23, 23), "fc4096",
             description="the source's AlexNet (from scratch), with a softmax where it had a 2-unit sigmoid",
             gradcam_layer="bn5"),
    ArchSpec("resnet50v2", ("applications", "ResNet50V2"), "tf", (32, 32), "source",
             imagenet=("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet/",
                       "fac2f116257151a9d068a22e544a4917"),
             gradcam_layer="post_relu"),
    ArchSpec("inceptionv3", ("applications", "InceptionV3"), "tf", (75, 75), "source",
             imagenet=("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_v3/",
                       "bcbd6486424b2319ff4ef7d526e38f63"), description="the source's 'GoogLeNet'",
             gradcam_layer="mixed10"),
    ArchSpec("vgg16", ("applications", "VGG16"), "caffe", (32, 32), "source",
             imagenet=("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg16/",
                       "6d6bbae143d832006294945121d1f1fc"),
             gradcam_layer="block5_conv3"),
    ArchSpec("densenet201", ("applications", "DenseNet201"), "torch", (32, 32), "source",
             imagenet=("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5", "densenet/",
                       "c13680b51ded0fb44dff2d8f86ac8bb1"),
             gradcam_layer="relu"),
    ArchSpec("efficientnetv2b0", ("applications", "EfficientNetV2B0"), "none", (32, 32), "source",
             imagenet=("efficientnetv2-b0_notop.h5", "efficientnet_v2/", "893217f2bb855e2983157299931e43ff"),
             description="a modern efficient backbone (7 M parameters, ~0.7 GFLOPs at 224x224)",
             gradcam_layer="top_activation"),
    ArchSpec("small", ("scratch", "small"), "tf", (32, 32), "linear", default_size=(109, 89),
             description="the CPU-demo CNN: plain4 with a depthwise-separable residual block per stage",
             gradcam_layer="block4_res_out"),
    ArchSpec("plain4", ("scratch", "plain4"), "tf", (16, 16), "linear", default_size=(109, 89),
             description="a plain 4-block CNN: the reference the small CNN is measured against",
             gradcam_layer="block4_relu"),
    ArchSpec("tiny", ("scratch", "tiny"), "tf", (8, 8), "linear", default_size=(64, 52),
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
    head: str = "auto"  # auto: the arch's default (source for the transfer-learning backbones)
    trainable_layers: int = -1  # -1: every backbone layer trains; N: only the last N
    outputs: int = 2  # the task's outputs: classes of one attribute, or attributes
    dropout: float = 0.2
    activation: str = "softmax"  # the task's: softmax over classes, or one sigmoid per attribute

    @classmethod
    def from_record(cls, record: dict) -> ModelConfig:
        """The ModelConfig a run recorded in config.json (``model``), runs of earlier versions included
        (``num_classes``, ``multi_label``, head ``seed``)."""
        values = dict(record)
        if "num_classes" in values:
            values["outputs"] = values.pop("num_classes")
        if "multi_label" in values:
            values["activation"] = "sigmoid" if values.pop("multi_label") else "softmax"
        if values.get("head") == "seed":  # the source study's head, named "seed" in earlier versions
            values["head"] = "source"
        if values.get("image_size"):
            values["image_size"] = tuple(values["image_size"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def image_size(config: ModelConfig) -> tuple[int, int]:
    """The input size a model config asks for, checked against the arch's minimum."""
    spec = get(config.arch)
    size = tuple(config.image_size or spec.default_size)
    if size[0] < spec.min_size[0] or size[1] < spec.min_size[1]:
        raise ArchError(f"--image_size={size[0]},{size[1]} is below {spec.name}'s minimum of "
                        f"{spec.min_size[0]}x{spec.min_size[1]} (height x width): use a larger --image_size.")
    return size
