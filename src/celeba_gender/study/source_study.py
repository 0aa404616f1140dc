"""What the source study published: its test accuracies (a random 52,000-image split of CelebA, 5,802 test
images, Colab T4), by architecture and by the setting its three comparison tables varied. Study tables put
these beside the engine's own figures; docs/source_study.md tells the study's protocol and its problems.
"""

from __future__ import annotations

ARCHS = ("alexnet", "resnet50v2", "inceptionv3", "vgg16", "densenet201")

# setting -> value -> accuracy per arch, in ARCHS order. Every run not varying a setting used 5 epochs,
# 52,000 sampled images and batch 128 (so those columns repeat the headline figures).
_TABLES = {
    "epochs": {5: (.86, .97, .97, .96, .92), 10: (.87, .98, .97, .98, .93), 15: (.88, .98, .97, .93, .93)},
    "dataset_size": {22000: (.76, .96, .95, .95, .91), 52000: (.86, .97, .97, .96, .92),
                     102000: (.89, .98, .98, .97, .93)},
    "batch": {32: (.86, .98, .97, .98, .93), 64: (.87, .97, .97, .98, .92), 128: (.86, .97, .97, .96, .92)},
}
HEADLINE = dict(zip(ARCHS, (.86, .97, .97, .96, .92)))  # 5 epochs, 52,000 images, batch 128


def published(vary: str, value: int | None, arch: str) -> float | None:
    """The source's test accuracy for ``arch`` with ``vary`` set to ``value`` (``vary="none"``: its headline
    figure), or None when it did not report that combination."""
    if arch not in ARCHS:
        return None
    if vary == "none":
        return HEADLINE[arch]
    row = _TABLES.get(vary, {}).get(value)
    return None if row is None else row[ARCHS.index(arch)]
