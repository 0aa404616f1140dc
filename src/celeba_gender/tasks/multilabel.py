"""Several CelebA attributes in one model (``train.py --attributes=all``): the metrics of each attribute, their
means, and the figures published by systems users compare against.

Each attribute is a binary decision (sigmoid output > 0.5). Beside its accuracy, every attribute gets its
majority baseline (the accuracy of always answering the more frequent value: CelebA's rare attributes make a
high accuracy easy, e.g. 98% for Bald) and its balanced accuracy (the mean of the true positive and true
negative rates), which a majority guess cannot inflate.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

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


def resolve(requested: tuple[str, ...], available: list[str]) -> tuple[str, ...]:
    """``("all",)`` -> every available attribute; otherwise the names, checked (ValueError naming the unknown
    ones and what exists)."""
    if tuple(requested) == ("all",):
        return tuple(available)
    unknown = [a for a in requested if a not in available]
    if unknown:
        raise ValueError(f"--attributes: {', '.join(unknown)} not among the shards' attributes "
                         f"({', '.join(available)}); or use --attributes=all.")
    if len(set(requested)) != len(requested):
        raise ValueError("--attributes names an attribute twice.")
    return tuple(requested)


def binary_cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy over examples and attributes."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def attribute_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...]) -> dict:
    """Per attribute: accuracy, balanced accuracy, ROC-AUC (nan when the split has one value), majority
    baseline, positive rate; and their means over the attributes."""
    predicted = probs >= 0.5
    truth = labels.astype(bool)
    per = {}
    for j, name in enumerate(names):
        y, p = truth[:, j], predicted[:, j]
        rate = float(y.mean()) if len(y) else math.nan
        two = 0 < y.sum() < len(y)
        per[name] = {
            "accuracy": float((y == p).mean()) if len(y) else math.nan,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, p)) if two else math.nan,
            "roc_auc": float(skm.roc_auc_score(y, probs[:, j])) if two else math.nan,
            "majority_accuracy": max(rate, 1 - rate),
            "positive_rate": rate,
        }
    mean = {k: float(np.nanmean([m[k] for m in per.values()])) if per else math.nan
            for k in ("accuracy", "balanced_accuracy", "roc_auc", "majority_accuracy")}
    return {"count": int(len(labels)), "attributes": per, "mean_accuracy": mean["accuracy"],
            "mean_balanced_accuracy": mean["balanced_accuracy"], "mean_roc_auc": mean["roc_auc"],
            "mean_majority_accuracy": mean["majority_accuracy"],
            "log_loss": binary_cross_entropy(probs, labels) if len(labels) else math.nan}


def markdown_table(report: dict, sort: str = "gap") -> str:
    """The per-attribute table of a report: engine's accuracy, majority baseline and the gap between them,
    balanced accuracy, AUC, and the published figures; ``sort="gap"`` puts the attributes the model learned
    least beyond the majority guess first (``"name"``: CelebA's order)."""
    rows = list(report["attributes"].items())
    if sort == "gap":
        rows.sort(key=lambda kv: kv[1]["accuracy"] - kv[1]["majority_accuracy"])
    systems = list(PUBLISHED)
    lines = ["| attribute | accuracy | majority | gap | balanced accuracy | ROC-AUC | positive rate | "
             + " | ".join(systems) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(systems)]
    for name, m in rows:
        cited = [published(s, name) for s in systems]
        lines.append(f"| {name} | {_pct(m['accuracy'])} | {_pct(m['majority_accuracy'])} | "
                     f"{100 * (m['accuracy'] - m['majority_accuracy']):+.1f} pt | {_pct(m['balanced_accuracy'])} | "
                     f"{_num(m['roc_auc'])} | {_pct(m['positive_rate'])} | "
                     + " | ".join(f"{c:.2f}%" if c is not None else "" for c in cited) + " |")
    means = [np.mean(PUBLISHED[s]) for s in systems]
    lines.append(f"| **mean** | **{_pct(report['mean_accuracy'])}** | {_pct(report['mean_majority_accuracy'])} | "
                 f"{100 * (report['mean_accuracy'] - report['mean_majority_accuracy']):+.1f} pt | "
                 f"{_pct(report['mean_balanced_accuracy'])} | {_num(report['mean_roc_auc'])} | | "
                 + " | ".join(f"{m:.2f}%" for m in means) + " |")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _num(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.4f}"
