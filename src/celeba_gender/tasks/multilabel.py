"""Several CelebA attributes in one model (``train.py --attributes=all``): the metrics of each attribute, their
means, and the figures published by systems users compare against.

Each attribute is a binary decision: present when its sigmoid output reaches the attribute's threshold. Training
and validation decide at 0.5; a finished run's thresholds are chosen per attribute on the validation split
(:func:`choose_thresholds`), since a rare attribute's probabilities may rank the faces well (a high ROC-AUC)
and yet never reach 0.5. Beside its accuracy, every attribute gets its majority baseline (the accuracy of
always answering the more frequent value: CelebA's rare attributes make a high accuracy easy, e.g. 98% for
Bald) and its balanced accuracy (the mean of the true positive and true negative rates), which a majority
guess cannot inflate.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from celeba_gender.shards.attributes import ATTRIBUTE_NAMES

DEFAULT_THRESHOLD = 0.5
# What a threshold can be chosen to maximise (train.py's --best_metric, resolved).
THRESHOLD_METRICS = ("accuracy", "balanced_accuracy")

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


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, metric: str = "accuracy") -> tuple[float, ...]:
    """Per attribute, the decision threshold (present when probability >= threshold) that maximises ``metric``
    (accuracy or balanced_accuracy) on these predictions: meant for the validation split, never the split the
    thresholds are then judged on.

    Every threshold between two neighbouring probabilities gives the same decisions; of the best such ranges
    the one nearest 0.5 wins, and within it 0.5 itself, else its middle. An attribute with one value only on
    these predictions keeps 0.5 for balanced accuracy (undefined there). Thresholds are float32 numbers, so
    numpy, the SavedModel and labels.json compare alike."""
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"metric must be one of {THRESHOLD_METRICS}, got {metric!r}")
    probs = np.asarray(probs, np.float32)
    truth = np.asarray(labels) > 0.5
    return tuple(_best_threshold(probs[:, j], truth[:, j], metric) for j in range(probs.shape[1]))


def _best_threshold(p: np.ndarray, y: np.ndarray, metric: str) -> float:
    n, pos = len(y), int(y.sum())
    neg = n - pos
    if n == 0 or (metric == "balanced_accuracy" and (pos == 0 or neg == 0)):
        return DEFAULT_THRESHOLD
    order = np.argsort(-p, kind="stable")
    scores, ys = p[order].astype(np.float64), y[order]
    # Cut k: the k highest probabilities are called present. Only cuts between distinct values are possible.
    ends = np.flatnonzero(np.diff(scores) != 0) + 1
    cuts = np.concatenate([[0], ends, [n]])
    tp = np.concatenate([[0], np.cumsum(ys)])[cuts]
    fp = cuts - tp
    tn = neg - fp
    if metric == "accuracy":
        value = (tp + tn) / n
    else:
        value = (tp / pos + tn / neg) / 2
    # The thresholds of cut k lie in (scores[k], scores[k - 1]] (open above for k = 0, down to 0 for k = n).
    upper = np.where(cuts > 0, scores[np.maximum(cuts - 1, 0)], np.inf)
    lower = np.where(cuts < n, scores[np.minimum(cuts, n - 1)], -np.inf)
    candidates = np.array([_inside(lo, hi) for lo, hi in zip(lower, upper)])
    best = np.flatnonzero(np.isclose(value, value.max(), rtol=0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def _inside(lo: float, hi: float) -> float:
    """A float32 threshold t with lo < t <= hi: 0.5 when it is one, else the middle of the range (a range open
    below or above is taken down to 0 or up to 1)."""
    if lo < DEFAULT_THRESHOLD <= hi:
        return DEFAULT_THRESHOLD
    if np.isinf(hi):
        t = (lo + 1.0) / 2 if lo < 1.0 else lo
    elif np.isinf(lo):
        t = hi / 2 if hi > 0 else hi
    else:
        t = (lo + hi) / 2
    t32 = np.float32(t)
    if t32 <= lo:  # rounded down onto the value below (or the range is above 1): the next float32 up
        t32 = np.nextafter(np.float32(lo), np.float32(np.inf))
    return float(t32)


def attribute_metrics(probs: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...],
                      thresholds: tuple[float, ...] | None = None) -> dict:
    """Per attribute: accuracy, balanced accuracy, ROC-AUC (nan when the split has one value), majority
    baseline, positive rate; and their means over the attributes. Decisions at 0.5, or with ``thresholds``
    (one per attribute) at those, and then each attribute's ``threshold`` and its figures at 0.5
    (``accuracy_at_0.5``, ``balanced_accuracy_at_0.5``) and their means too."""
    tuned = thresholds is not None
    cut = np.asarray(thresholds if tuned else [DEFAULT_THRESHOLD] * len(names), np.float32)
    truth = labels.astype(bool)
    per = {}
    for j, name in enumerate(names):
        y = truth[:, j]
        rate = float(y.mean()) if len(y) else math.nan
        two = 0 < y.sum() < len(y)
        m = {**_decision_figures(y, probs[:, j] >= cut[j], two),
             "roc_auc": float(skm.roc_auc_score(y, probs[:, j])) if two else math.nan,
             "majority_accuracy": max(rate, 1 - rate), "positive_rate": rate}
        if tuned:
            half = _decision_figures(y, probs[:, j] >= DEFAULT_THRESHOLD, two)
            m.update({"threshold": float(cut[j]), "accuracy_at_0.5": half["accuracy"],
                      "balanced_accuracy_at_0.5": half["balanced_accuracy"]})
        per[name] = m
    keys = ["accuracy", "balanced_accuracy", "roc_auc", "majority_accuracy"]
    if tuned:
        keys += ["accuracy_at_0.5", "balanced_accuracy_at_0.5"]
    mean = {k: float(np.nanmean([m[k] for m in per.values()])) if per else math.nan for k in keys}
    return {"count": int(len(labels)), "attributes": per, **{f"mean_{k}": v for k, v in mean.items()},
            "log_loss": binary_cross_entropy(probs, labels) if len(labels) else math.nan}


def _decision_figures(y: np.ndarray, predicted: np.ndarray, two: bool) -> dict:
    return {"accuracy": float((y == predicted).mean()) if len(y) else math.nan,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)) if two else math.nan}


def markdown_table(report: dict, sort: str = "gap") -> str:
    """The per-attribute table of a report: engine's accuracy, majority baseline and the gap between them,
    balanced accuracy, AUC, and the published figures; with chosen thresholds also each threshold and the
    accuracy and balanced accuracy at 0.5 beside the tuned ones. ``sort="gap"`` puts the attributes the model
    learned least beyond the majority guess first (``"name"``: CelebA's order)."""
    rows = list(report["attributes"].items())
    tuned = bool(rows) and "threshold" in rows[0][1]
    if sort == "gap":
        rows.sort(key=lambda kv: kv[1]["accuracy"] - kv[1]["majority_accuracy"])
    systems = list(PUBLISHED)
    at_half = ("threshold", "accuracy at 0.5", "balanced at 0.5") if tuned else ()
    header = ["attribute", *at_half[:1], "accuracy", *at_half[1:2], "majority", "gap", "balanced accuracy",
              *at_half[2:], "ROC-AUC", "positive rate", *systems]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in rows:
        cited = [published(s, name) for s in systems]
        cells = [name, *([_num(m["threshold"])] if tuned else []), _pct(m["accuracy"]),
                 *([_pct(m["accuracy_at_0.5"])] if tuned else []), _pct(m["majority_accuracy"]),
                 f"{100 * (m['accuracy'] - m['majority_accuracy']):+.1f} pt", _pct(m["balanced_accuracy"]),
                 *([_pct(m["balanced_accuracy_at_0.5"])] if tuned else []), _num(m["roc_auc"]),
                 _pct(m["positive_rate"]), *(f"{c:.2f}%" if c is not None else "" for c in cited)]
        lines.append("| " + " | ".join(cells) + " |")
    means = [np.mean(PUBLISHED[s]) for s in systems]
    r = report
    cells = ["**mean**", *([""] if tuned else []), f"**{_pct(r['mean_accuracy'])}**",
             *([_pct(r["mean_accuracy_at_0.5"])] if tuned else []), _pct(r["mean_majority_accuracy"]),
             f"{100 * (r['mean_accuracy'] - r['mean_majority_accuracy']):+.1f} pt", _pct(r["mean_balanced_accuracy"]),
             *([_pct(r["mean_balanced_accuracy_at_0.5"])] if tuned else []), _num(r["mean_roc_auc"]), "",
             *(f"{m:.2f}%" for m in means)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _num(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.4f}"
