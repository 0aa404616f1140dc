"""The report of a run that predicts one attribute's classes (tasks.classification): accuracy with its 95%
confidence interval, balanced accuracy, per-class precision / recall / F1 with the class names in label order (the
source study printed them swapped), ROC-AUC, log loss, the confusion matrix, the subgroups of the other CelebA
attributes ranked by their accuracy gap, the most confident errors of each direction as galleries, the Grad-CAM
figures, and test-time augmentation's figures beside the plain ones.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from celeba_gender.core import fileio
from celeba_gender.evaluate import figures, gradcam_report, markdown_report
from celeba_gender.evaluate.predictions import Context, Predictions, Trained, predict_split
from celeba_gender.serve import tta
from celeba_gender.shards import shard_dir
from celeba_gender.tasks import metrics


def subgroup_accuracy(predictions: Predictions, attribute_names: list[str], label_attribute: str,
                      min_support: int = 20) -> list[dict]:
    """Accuracy of every attribute subgroup (attribute present / absent) with at least ``min_support``
    examples, sorted by its gap to the overall accuracy, worst first."""
    correct = predictions.probs.argmax(-1) == predictions.labels
    overall = correct.mean() if len(correct) else float("nan")
    rows = []
    for j, name in enumerate(attribute_names):
        if name == label_attribute:
            continue
        for value in (1, 0):
            mask = predictions.attributes[:, j] == value
            n = int(mask.sum())
            if n < min_support:
                continue
            k = int(correct[mask].sum())
            lo, hi = metrics.wilson_interval(k, n)
            rows.append({"attribute": name, "value": value, "group": name if value else f"not {name}", "count": n,
                         "accuracy": k / n, "gap": k / n - overall, "ci95": [lo, hi]})
    return sorted(rows, key=lambda r: r["gap"])


def worst_errors(predictions: Predictions, actual: int, predicted: int, limit: int) -> list[dict]:
    """Misclassified examples of class ``actual`` predicted as ``predicted``, most confident first."""
    probs, labels = predictions.probs, predictions.labels
    idx = np.flatnonzero((labels == actual) & (probs.argmax(-1) == predicted))
    idx = idx[np.argsort(-probs[idx, predicted], kind="stable")][:limit]
    return [{"filename": predictions.names[i], "probability": float(probs[i, predicted])} for i in idx]


def tta_summary(mode: str, plain: np.ndarray, augmented: np.ndarray, labels: np.ndarray,
                class_names: list[str]) -> dict:
    """The test-time augmented figures beside the plain ones: accuracy, balanced accuracy, ROC-AUC, log loss,
    and how many predictions it changed (``fixed``: wrong before, right with it; ``broken``: the reverse)."""
    m = metrics.class_metrics(augmented, labels, class_names)
    before, after = plain.argmax(-1), augmented.argmax(-1)
    return {"mode": mode, **{k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "log_loss")},
            "changed_predictions": int((before != after).sum()),
            "fixed": int(((before != labels) & (after == labels)).sum()),
            "broken": int(((before == labels) & (after != labels)).sum())}


def build(trained: Trained, predictions: Predictions, options, context: Context) -> tuple[dict, dict]:
    """(report, what its figures need: the images and heatmaps) of a one-attribute run's predictions."""
    task, manifest = trained.task, context.manifest
    class_names = list(task.outputs)
    report = {"attribute": task.attribute, **task.metrics(predictions.probs, predictions.labels)}
    report["subgroups"] = subgroup_accuracy(predictions, manifest["attribute_names"], task.attribute,
                                            options.min_subgroup)
    report["errors"] = {f"{class_names[a]}_as_{class_names[p]}": worst_errors(predictions, a, p, options.gallery_size)
                        for a, p in ((1, 0), (0, 1))}
    if options.tta != tta.NONE:
        augmented = predict_split(trained, context, options.split, options.batch, options.tta).probs
        report["tta"] = tta_summary(options.tta, predictions.probs, augmented, predictions.labels, class_names)
    report["gradcam"] = gradcam_report.select(predictions.probs, predictions.labels, predictions.names, class_names,
                                              options.gradcam_size)
    explained = {e["filename"] for group in report["gradcam"].values() for e in group}
    model_inputs = context.images(trained, options.split, explained)
    heatmaps = gradcam_report.heatmaps(trained.model, trained.arch, trained.image_size, report["gradcam"],
                                       model_inputs)
    wanted = {e["filename"] for errors in report["errors"].values() for e in errors}
    # The galleries show the stored resolution (218x178 for CelebA), not the model's.
    shown = context.images(trained, options.split, wanted, shard_dir.stored_size(manifest))
    return report, {"gallery": shown, "model_inputs": model_inputs, "heatmaps": heatmaps, "run": context.run}


def write(report: dict, predictions: Predictions, artifacts: dict, out: str) -> dict[str, str]:
    """Writes confusion_matrix.png, curves.png, the error galleries, the Grad-CAM figures and predictions.csv
    into ``out``; returns {name: path}."""
    files = {"confusion_matrix": figures.save_confusion_matrix(report, fileio.join(out, "confusion_matrix.png"))}
    history = artifacts["run"].history_path
    if fileio.exists(history):
        files["curves"] = figures.save_curves(history, fileio.join(out, "curves.png"))
    for key, errors in report["errors"].items():
        actual, predicted = key.split("_as_")
        files[key] = figures.save_gallery(errors, artifacts["gallery"], actual, predicted,
                                          fileio.join(out, f"errors_{key}.png"))
    files.update(gradcam_report.save(report.get("gradcam", {}), artifacts["model_inputs"], artifacts["heatmaps"],
                                     out))
    files["predictions"] = fileio.join(out, "predictions.csv")
    write_predictions(files["predictions"], predictions, report["class_names"])
    return files


def write_predictions(path: str, predictions: Predictions, class_names: list[str]) -> None:
    """predictions.csv: per example its file name, true and predicted class, the predicted class's probability
    and every class's probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["filename", "true_label", "predicted_label", "probability", *(f"p_{c}" for c in class_names)])
    for name, label, p in zip(predictions.names, predictions.labels, predictions.probs):
        k = int(p.argmax())
        writer.writerow([name, class_names[int(label)], class_names[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    fileio.write_text(path, buffer.getvalue())


def markdown(report: dict) -> str:
    """report.md."""
    return markdown_report.report_markdown(report)


def scalars(report: dict) -> dict[str, float]:
    """The report's figures for TensorBoard."""
    return {k: report[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "log_loss")}


def console(report: dict, out: str) -> str:
    """evaluate.py's printout."""
    return (markdown(report).split("## Most confident errors")[0].rstrip() + "\n\nreport.json, report.md, "
            "predictions.csv, confusion_matrix.png, curves.png, the error galleries and the Grad-CAM figures are in "
            f"{out}")
