"""Each architecture's recommended training recipe: what ``python train.py --arch=X`` trains with when no
flag (on the command line or in a flagfile) says otherwise. The image size comes from the registry's
``default_size``; everything not named here keeps the option's declared default (batch 128, the source's
augmentation, automatic precision and strategy...).

Why these values. The five transfer-learning backbones fine-tune all their layers from ImageNet weights with AdamW,
a cosine schedule after one warm-up epoch and label smoothing 0.1 for 10 epochs: the standard fine-tuning recipe of
TF Model Garden and timm, where the source study used Adam at 1e-5 for 5 epochs with the last 5 layers frozen or not
by mistake. Every recipe warms the rate up linearly for a tenth of the run, at most one epoch. The learning rates
are per backbone: VGG16's activations are not normalised, so it gets half; EfficientNetV2-B0, the smallest, twice.
AlexNet trains from scratch (no ImageNet weights exist for the source's variant), without label smoothing, at a
higher rate. The small CNNs are sized for a CPU: half-resolution faces and a high rate. None of the GPU recipes
could be run on the development machines (no GPU, no ImageNet weights); the README says what was measured.
"""

from __future__ import annotations

_FINE_TUNE = {"epochs": 10, "optimizer": "adamw", "weight_decay": 1e-4, "lr_schedule": "cosine",
              "label_smoothing": 0.1, "trainable_layers": -1}
_CPU_CNN = {"batch": 64, "epochs": 8, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4, "lr_schedule": "cosine",
            "label_smoothing": 0.0}

_RECIPES: dict[str, dict] = {
    "alexnet": {**_FINE_TUNE, "lr": 3e-4, "label_smoothing": 0.0},
    "resnet50v2": {**_FINE_TUNE, "lr": 1e-4},
    "inceptionv3": {**_FINE_TUNE, "lr": 1e-4},
    "vgg16": {**_FINE_TUNE, "lr": 5e-5},
    "densenet201": {**_FINE_TUNE, "lr": 1e-4},
    "efficientnetv2b0": {**_FINE_TUNE, "lr": 2e-4},
    "small": dict(_CPU_CNN),
    "plain4": dict(_CPU_CNN),
    "tiny": {**_CPU_CNN, "batch": 32, "epochs": 2},
}


def recipe(arch: str, epochs: int | None = None) -> dict:
    """``arch``'s recipe (option name -> value) for a run of ``epochs`` epochs (default: the recipe's own)."""
    out = dict(_RECIPES[arch])
    out["warmup_epochs"] = min(1.0, (epochs or out["epochs"]) / 10)
    return out
