"""The report of a run that predicts several attributes (tasks.multi_attribute): per attribute its accuracy,
balanced accuracy, ROC-AUC, majority baseline and positive rate, their means, the published figures beside them,
attributes.png, curves.png, predictions.csv (every attribute's probability and decision per image), the Grad-CAM
figures of one attribute, and test-time augmentation's means beside the plain ones.

Decisions are at each attribute's threshold: those the run chose when it ended (the trainer hands them over), or
chosen for the evaluated checkpoint on the validation split by the run's best metric; the figures at 0.5 stand
beside them. Evaluating the validation split itself judges the thresholds on the predictions they were chosen
on: optimistic.
"""

from __future__ import annotations

import csv
import dataclasses
import io


from celeba_gender.core import fileio
from celeba_gender.evaluate import figures, gradcam_report, markdown_report
from celeba_gender.evaluate.predictions import Context, EvaluationError, Predictions, Trained, predict_split
from celeba_gender.serve import tta
from celeba_gender.tasks.base import best_metric


def _with_thresholds(trained: Trained, predictions: Predictions, options, context: Context):
    """The task deciding at its thresholds: kept when chosen, else chosen on the validation split."""
    task = trained.task
    if task.thresholds is not None:
        return task
    chosen_on = predictions if options.split == "validation" else \
        predict_split(trained, context, "validation", options.batch)
    return task.tuned(chosen_on.probs, chosen_on.labels, best_metric(trained.config["train"]))


def build(trained: Trained, predictions: Predictions, options, context: Context) -> tuple[dict, dict]:
    """(report, what its figures need) of a multi-attribute run's predictions."""
    task = _with_thresholds(trained, predictions, options, context)
    trained = dataclasses.replace(trained, task=task)
    probs, labels, outputs = predictions.probs, predictions.labels, list(task.outputs)
    report = {"outputs": outputs, "threshold_metric": task.threshold_metric, "thresholds_chosen_on": "validation",
              **task.metrics(probs, labels)}
    if options.tta != tta.NONE:
        augmented = predict_split(trained, context, options.split, options.batch, options.tta).probs
        m = task.metrics(augmented, labels)
        report["tta"] = {"mode": options.tta, **{k: m[k] for k in ("mean_accuracy", "mean_balanced_accuracy",
                                                                   "mean_roc_auc", "log_loss")},
                         "changed_decisions": int((task.present(probs) != task.present(augmented)).sum())}
    attribute = options.gradcam_attribute or task.default_explained()
    if attribute not in outputs:
        raise EvaluationError(f"--gradcam_attribute={attribute}: this run predicts {', '.join(outputs)}.")
    report["gradcam_attribute"] = attribute
    report["gradcam"] = gradcam_report.select_attribute(probs, labels, predictions.names, outputs, attribute,
                                                        options.gradcam_size,
                                                        float(task.decision_thresholds[outputs.index(attribute)]))
    explained = {e["filename"] for group in report["gradcam"].values() for e in group}
    model_inputs = context.images(trained, options.split, explained)
    heatmaps = gradcam_report.heatmaps(trained.model, trained.arch, trained.image_size, report["gradcam"],
                                       model_inputs)
    return report, {"task": task, "model_inputs": model_inputs, "heatmaps": heatmaps, "run": context.run}


def write(report: dict, predictions: Predictions, artifacts: dict, out: str) -> dict[str, str]:
    """Writes attributes.png, curves.png, predictions.csv and the Grad-CAM figures into ``out``."""
    files = {"attributes": figures.save_attribute_accuracy(report, fileio.join(out, "attributes.png"))}
    history = artifacts["run"].history_path
    if fileio.exists(history):
        files["curves"] = figures.save_curves(history, fileio.join(out, "curves.png"))
    files["predictions"] = fileio.join(out, "predictions.csv")
    write_predictions(files["predictions"], predictions, artifacts["task"])
    files.update(gradcam_report.save(report["gradcam"], artifacts["model_inputs"], artifacts["heatmaps"], out))
    return files


def write_predictions(path: str, predictions: Predictions, task) -> None:
    """predictions.csv: per image, each attribute's true value and probability, and whether the model calls it
    present (probability >= the attribute's threshold)."""
    outputs = list(task.outputs)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["filename", *(f"true_{a}" for a in outputs), *(f"p_{a}" for a in outputs),
                     *(f"present_{a}" for a in outputs)])
    present = task.present(predictions.probs)
    for name, y, p, decided in zip(predictions.names, predictions.labels, predictions.probs, present):
        writer.writerow([name, *(int(v) for v in y), *(f"{v:.6f}" for v in p), *(int(v) for v in decided)])
    fileio.write_text(path, buffer.getvalue())


def markdown(report: dict) -> str:
    """report.md."""
    return markdown_report.attributes_markdown(report)


def scalars(report: dict) -> dict[str, float]:
    """The report's figures for TensorBoard."""
    return {k: report[k] for k in ("mean_accuracy", "log_loss", "mean_balanced_accuracy")}


def console(report: dict, out: str) -> str:
    """evaluate.py's printout."""
    return (markdown(report).split("## Grad-CAM")[0].rstrip() + "\n\nreport.json, report.md, predictions.csv, "
            f"attributes.png, curves.png and the Grad-CAM figures are in {out}")
