"""Figures (matplotlib, rendered to PNG): the confusion matrix, training curves, error galleries, Grad-CAM
overlays."""

from __future__ import annotations

import csv
import io

import numpy as np

from celeba_gender import storage


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str = ""):
    """A labelled matplotlib confusion matrix (rows: actual, columns: predicted) with counts and row %."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    totals = matrix.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            share = matrix[i, j] / totals[i, 0]
            ax.text(j, i, f"{matrix[i, j]:,}\n{share:.1%}", ha="center", va="center",
                    color="white" if share > 0.5 else "black", fontsize=10)
    ax.set_xticks(range(len(class_names)), labels=class_names)
    ax.set_yticks(range(len(class_names)), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure (which is closed)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _write(path: str, png: bytes) -> str:
    storage.write_bytes(path, png)
    return path


def save_confusion_matrix(report: dict, path: str) -> str:
    title = f"{report['split']} ({report['checkpoint']} checkpoint): accuracy {report['accuracy']:.4f}"
    fig = confusion_matrix_figure(np.asarray(report["confusion_matrix"]), report["class_names"], title)
    return _write(path, figure_png(fig))


def read_history(path: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(storage.read_text(path))))


def save_curves(history_csv: str, path: str) -> str:
    """Train/validation loss and accuracy per epoch."""
    rows = read_history(history_csv)
    plt = _pyplot()
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
    plt = _pyplot()
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
    plt = _pyplot()
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


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB: ``image`` [H, W, 3] with a Grad-CAM ``heatmap`` [H, W] in [0, 1] laid over it (jet colours,
    weighted by the heat itself so that cold regions keep the face visible)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    weight = alpha * np.clip(heatmap, 0, 1)[..., None] ** 0.5
    mixed = (1 - weight) * (image.astype(np.float32) / 255) + weight * colours
    return (np.clip(mixed, 0, 1) * 255).round().astype(np.uint8)


def save_explanation(image: np.ndarray, heatmap: np.ndarray, title: str, path: str) -> str:
    """The model's input beside its Grad-CAM overlay (predict.py --explain)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 3.0), dpi=100)
    for ax, shown, caption in zip(axes, (image, overlay(image, heatmap)), ("model input", "Grad-CAM")):
        ax.imshow(shown)
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _write(path, figure_png(fig))


def save_gradcam_gallery(entries: list[dict], images: dict, heatmaps: dict, title: str, path: str,
                         columns: int = 6) -> str:
    """Faces with their Grad-CAM overlays, each captioned with its file name and the explained output's
    probability (``entries``: {"filename", "explained", "probability"})."""
    plt = _pyplot()
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
