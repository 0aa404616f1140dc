"""The figures of a split's predictions, from numpy arrays alone: one attribute's classes (accuracy with its
confidence interval, balanced accuracy, per-class report, ROC-AUC, log loss, confusion matrix) and several
attributes' binary decisions (each attribute's accuracy, balanced accuracy, ROC-AUC, majority baseline and
positive rate, at 0.5 or at thresholds chosen on another split). Training's validation and evaluate.py's reports
compute the same figures here.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_THRESHOLD = 0.5
# What a threshold can be chosen to maximise (train.py's --best_metric, resolved).
THRESHOLD_METRICS = ("accuracy", "balanced_accuracy")


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (better than the normal one near 0 and 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def class_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy (with its 95% CI), balanced accuracy, per-class report, ROC-AUC, log loss, confusion matrix."""
    from sklearn import metrics as skm  # imported when figures are computed: it takes a second
    preds = probs.argmax(-1)
    ids = list(range(len(class_names)))
    correct = int((preds == labels).sum())
    report = skm.classification_report(labels, preds, labels=ids, target_names=class_names, output_dict=True,
                                       zero_division=0)
    two_classes = len(np.unique(labels)) == 2
    return {
        "count": int(len(labels)),
        "accuracy": correct / max(len(labels), 1),
        "accuracy_ci95": list(wilson_interval(correct, len(labels))),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, preds)) if len(labels) else float("nan"),
        "roc_auc": float(skm.roc_auc_score(labels, probs[:, 1])) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(labels, np.clip(probs, 1e-7, 1), labels=ids)) if len(labels) else float("nan"),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in class_names},
        "confusion_matrix": skm.confusion_matrix(labels, preds, labels=ids).tolist(),
        "class_names": list(class_names),
    }


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
    from sklearn import metrics as skm  # imported when figures are computed: it takes a second
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
    from sklearn import metrics as skm  # imported when figures are computed: it takes a second
    return {"accuracy": float((y == predicted).mean()) if len(y) else math.nan,
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)) if two else math.nan}
