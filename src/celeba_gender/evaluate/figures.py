"""Figures of a report (matplotlib, rendered to PNG): the confusion matrix, training curves, error galleries,
Grad-CAM galleries."""

from __future__ import annotations

import csv
import io

import numpy as np

from celeba_gender.core import fileio
from celeba_gender.core.plotting import confusion_matrix_figure, figure_png, pyplot
from celeba_gender.serve.overlay import overlay


def _write(path: str, png: bytes) -> str:
    fileio.write_bytes(path, png)
    return path


def save_confusion_matrix(report: dict, path: str) -> str:
    title = f"{report['split']} ({report['checkpoint']} checkpoint): accuracy {report['accuracy']:.4f}"
    fig = confusion_matrix_figure(np.asarray(report["confusion_matrix"]), report["class_names"], title)
    return _write(path, figure_png(fig))


def read_history(path: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(fileio.read_text(path))))


def save_curves(history_csv: str, path: str) -> str:
    """Train/validation loss and accuracy per epoch."""
    rows = read_history(history_csv)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [float(r[metric]) for r in rows], "o-", label="train")
        ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _write(path, figure_png(fig))


def save_gallery(errors: list[dict], images: dict, actual: str, predicted: str, path: str, columns: int = 6) -> str:
    """Misclassified faces, most confident first, each captioned with its file name and probability."""
    plt = pyplot()
    n = max(len(errors), 1)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 2.25 + 0.5), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, error in zip(axes.flat, errors):
        image = images.get(error["filename"])
        if image is not None:
            ax.imshow(image)
        ax.set_title(f"{error['filename']}\nP({predicted})={error['probability']:.2f}", fontsize=7)
    if not errors:
        axes.flat[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.suptitle(f"Actual {actual} predicted {predicted} ({len(errors)} shown, most confident first)", fontsize=9)
    fig.tight_layout()
    return _write(path, figure_png(fig))


def save_attribute_accuracy(report: dict, path: str) -> str:
    """Per-attribute accuracy (at each attribute's threshold, and at 0.5 where the report has both) beside the
    majority baseline, sorted by the gap between them."""
    items = sorted(report["attributes"].items(), key=lambda kv: kv[1]["accuracy"] - kv[1]["majority_accuracy"])
    tuned = bool(items) and "accuracy_at_0.5" in items[0][1]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(items) + 1.2), dpi=100)
    y = np.arange(len(items))
    ax.barh(y, [m["accuracy"] for _, m in items], color="tab:blue",
            label="accuracy at its threshold" if tuned else "accuracy")
    if tuned:
        ax.plot([m["accuracy_at_0.5"] for _, m in items], y, ".", color="tab:orange", markersize=5,
                label="accuracy at 0.5")
    ax.plot([m["majority_accuracy"] for _, m in items], y, "|", color="black", markersize=9,
            label="majority baseline")
    ax.set_yticks(y, labels=[name for name, _ in items], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{report['split']} accuracy (mean {report['mean_accuracy']:.3f})")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _write(path, figure_png(fig))


def save_gradcam_gallery(entries: list[dict], images: dict, heatmaps: dict, title: str, path: str,
                         columns: int = 6) -> str:
    """Faces with their Grad-CAM overlays, each captioned with its file name and the explained output's
    probability (``entries``: {"filename", "explained", "probability"})."""
    plt = pyplot()
    n = max(len(entries), 1)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 2.25 + 0.5), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, entry in zip(axes.flat, entries):
        name = entry["filename"]
        if name in images and name in heatmaps:
            ax.imshow(overlay(images[name], heatmaps[name]))
        ax.set_title(f"{name}\nP({entry['explained']})={entry['probability']:.2f}", fontsize=7)
    if not entries:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _write(path, figure_png(fig))
