"""The evaluation report's Grad-CAM figures: where the model looked on its most confident errors of each
direction and on a few of its most confident correct answers.

Each face is explained for the class the model predicted (for an error, the wrong class: what made it say so),
at the model's own input (the split decoded at the model's size, exactly as evaluated), with the arch's
Grad-CAM layer from the registry. Files: ``gradcam_<Actual>_as_<Predicted>.png`` per error direction and
``gradcam_correct.png``; report.json's ``gradcam`` lists the faces of each, with the peak of each heatmap.
"""

from __future__ import annotations

import keras
import numpy as np

from celeba_gender.core import fileio
from celeba_gender.evaluate import figures
from celeba_gender.models import registry
from celeba_gender.shards.attributes import class_names
from celeba_gender.serve.export import inference_model
from celeba_gender.serve.gradcam import GradCam, peak

CORRECT = "correct"


def select(probs: np.ndarray, labels: np.ndarray, names: list[str], class_names: list[str],
           per_figure: int, preds: np.ndarray | None = None) -> dict[str, list[dict]]:
    """Figure -> the faces it explains: ``<Actual>_as_<Predicted>`` for each error direction (most confident
    first) and ``correct`` (the most confident correct answers, the classes taken in turn). ``preds``: the
    model's decisions when they are not the most probable class (a threshold other than 0.5)."""
    if per_figure <= 0:
        return {}
    preds = probs.argmax(-1) if preds is None else np.asarray(preds)
    confidence = probs[np.arange(len(preds)), preds]

    def entries(mask: np.ndarray, limit: int) -> list[dict]:
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(-confidence[idx], kind="stable")][:limit]
        return [{"filename": names[i], "actual": class_names[int(labels[i])], "explained": class_names[int(preds[i])],
                 "output_index": int(preds[i]), "probability": float(confidence[i])} for i in idx]

    chosen = {}
    for a in reversed(range(len(class_names))):  # Male_as_Female first: the error galleries' order
        for p in range(len(class_names)):
            if a != p:
                chosen[f"{class_names[a]}_as_{class_names[p]}"] = entries((labels == a) & (preds == p), per_figure)
    by_class = [entries((labels == c) & (preds == c), per_figure) for c in range(len(class_names))]
    correct = [group[i] for i in range(per_figure) for group in by_class if i < len(group)]  # classes in turn
    chosen[CORRECT] = correct[:per_figure]
    return chosen


def select_attribute(probs: np.ndarray, labels: np.ndarray, names: list[str], outputs: list[str], attribute: str,
                     per_figure: int, threshold: float = 0.5) -> dict[str, list[dict]]:
    """:func:`select` for one attribute of a multi-attribute model: its sigmoid taken as the two classes
    ``not_<attribute>`` / ``<attribute>`` (Female / Male), present when it reaches ``threshold`` (the
    attribute's decision threshold). A face the model calls positive is explained by the attribute's logit,
    one it calls negative by the evidence against it (sign -1)."""
    j = outputs.index(attribute)
    two = np.stack([1.0 - probs[:, j], probs[:, j]], axis=1)
    chosen = select(two, labels[:, j].astype(int), names, list(class_names(attribute)), per_figure,
                    preds=(probs[:, j] >= np.float32(threshold)).astype(int))
    for group in chosen.values():
        for entry in group:
            entry["sign"] = 1.0 if entry["output_index"] == 1 else -1.0
            entry["output_index"] = j
    return chosen


def heatmaps(core: keras.Model, arch: str, image_size, chosen: dict[str, list[dict]],
             images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """File name -> Grad-CAM heatmap [H, W] of the output each chosen face is explained for; adds each entry's
    ``peak`` ([row, column] as fractions of the height and width)."""
    entries = [e for group in chosen.values() for e in group if e["filename"] in images]
    if not entries:
        return {}
    explainer = GradCam(inference_model(core, tuple(image_size)), registry.get(arch).gradcam_layer)
    maps = explainer(np.stack([images[e["filename"]] for e in entries]), [e["output_index"] for e in entries],
                     sign=[e.get("sign", 1.0) for e in entries])
    out = {}
    for entry, heatmap in zip(entries, maps):
        row, col = peak(heatmap)
        entry["peak"] = [row / heatmap.shape[0], col / heatmap.shape[1]]
        out[entry["filename"]] = heatmap
    return out


def save(chosen: dict[str, list[dict]], images: dict, maps: dict, out: str) -> dict[str, str]:
    """Writes one figure per group; returns {"gradcam_<group>": path}."""
    files = {}
    for group, entries in chosen.items():
        if group == CORRECT:
            title = f"Correct, most confident ({len(entries)} shown): Grad-CAM of the predicted class"
        else:
            actual, predicted = group.split("_as_")
            title = (f"Actual {actual} predicted {predicted} ({len(entries)} shown, most confident first): "
                     f"Grad-CAM of {predicted}")
        path = fileio.join(out, f"gradcam_{group}.png")
        files[f"gradcam_{group}"] = figures.save_gradcam_gallery(entries, images, maps, title, path)
    return files
