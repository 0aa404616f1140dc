"""A Grad-CAM heatmap laid over the model's input (predict.py --explain, and the report's Grad-CAM galleries)."""

from __future__ import annotations

import numpy as np

from celeba_gender.core import fileio
from celeba_gender.core.plotting import figure_png, pyplot


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
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 3.0), dpi=100)
    for ax, shown, caption in zip(axes, (image, overlay(image, heatmap)), ("model input", "Grad-CAM")):
        ax.imshow(shown)
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fileio.write_bytes(path, figure_png(fig))
    return path
