"""matplotlib without a display: figures rendered to PNG bytes (reports, TensorBoard, predict.py overlays), and
the confusion matrix that both validation (TensorBoard) and the report draw."""

from __future__ import annotations

import io

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure (which is closed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str = ""):
    """A labelled matplotlib confusion matrix (rows: actual, columns: predicted) with counts and row %."""
    plt = pyplot()
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
