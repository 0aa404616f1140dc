"""Figures published for CelebA's attributes by the systems users compare against, shown beside this engine's in
the multi-attribute report."""

from __future__ import annotations

from celeba_gender.shards.attributes import ATTRIBUTE_NAMES

# Published test accuracies (%) on CelebA's official test split, in ATTRIBUTE_NAMES order.
# LNets+ANet: Liu, Luo, Wang, Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015 (arXiv:1411.7766),
# Table 1, read from the paper's text; their mean is the published 87.3.
# MCNN-AUX: Hand, Chellappa, "Attributes for Improved Attributes: A Multi-Task Network Utilizing Implicit and
# Explicit Relationships for Facial Attribute Classification", AAAI 2017 (arXiv:1604.07360), Table 2; their
# mean is the published 91.29, and Male, Young, Pale_Skin, Black_Hair and Narrow_Eyes agree with a later
# paper's comparison table.
PUBLISHED = {
    "LNets+ANet": (91, 79, 81, 79, 98, 95, 68, 78, 88, 95, 84, 80, 90, 91, 92, 99, 95, 97, 90, 87, 98, 92, 95, 81,
                   95, 66, 91, 72, 89, 90, 96, 92, 73, 80, 82, 99, 93, 71, 93, 87),
    "MCNN-AUX": (94.51, 83.42, 83.06, 84.92, 98.90, 96.05, 71.47, 84.53, 89.78, 96.01, 96.17, 89.15, 92.84, 95.67,
                 96.32, 99.63, 97.24, 98.20, 91.55, 87.58, 98.17, 93.74, 96.88, 87.23, 96.05, 75.84, 97.05, 77.47,
                 93.81, 95.16, 97.85, 92.73, 83.58, 83.91, 90.43, 99.05, 94.11, 86.63, 96.51, 88.48),
}


def published(system: str, attribute: str) -> float | None:
    """A system's published accuracy (%) for a CelebA attribute, None for a name CelebA does not have."""
    if attribute not in ATTRIBUTE_NAMES:
        return None
    return float(PUBLISHED[system][ATTRIBUTE_NAMES.index(attribute)])
