"""Evaluation you can trust: every example of a split exactly once, metrics computed from the predictions,
per-subgroup accuracy over the other CelebA attributes, error galleries, written to ``RUN/report/``.

    report = evaluate_run("runs/resnet50v2-...", split="test", checkpoint="best")

The class names follow the label ids (0 = Female, 1 = Male): scikit-learn's report is given
``labels=[0, 1]`` and the names in that order, the mistake the source study made (docs/source_study.md, mistake 4).
"""

from __future__ import annotations

import csv
import io
import math
import os

import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

from celeba_gender.core import fileio
from celeba_gender.core.invocation import command

from celeba_gender.shards import shard_dir
from celeba_gender.evaluate import figures, gradcam_report, markdown_report
from celeba_gender.inputs import pipeline
from celeba_gender.models import build, registry
from celeba_gender.rundir import directory
from celeba_gender.serve import tta
from celeba_gender.tasks import base as tasks_base, multilabel
from celeba_gender.core.errors import UserError
from celeba_gender.rundir.tensorboard import Summaries
from celeba_gender.inputs import config as input_config

CHECKPOINTS = ("best", "last")


class EvaluationError(UserError):
    """A run that cannot be evaluated as asked; the message says why."""


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (better than the normal one near 0 and 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def compute_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy (with its 95% CI), balanced accuracy, per-class report, ROC-AUC, log loss, confusion matrix."""
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


def subgroup_accuracy(probs: np.ndarray, labels: np.ndarray, attributes: np.ndarray, attribute_names: list[str],
                      label_attribute: str, min_support: int = 20) -> list[dict]:
    """Accuracy of every attribute subgroup (attribute present / absent) with at least ``min_support``
    examples, sorted by its gap to the overall accuracy, worst first."""
    correct = probs.argmax(-1) == labels
    overall = correct.mean() if len(correct) else float("nan")
    rows = []
    for j, name in enumerate(attribute_names):
        if name == label_attribute:
            continue
        for value in (1, 0):
            mask = attributes[:, j] == value
            n = int(mask.sum())
            if n < min_support:
                continue
            k = int(correct[mask].sum())
            lo, hi = wilson_interval(k, n)
            rows.append({"attribute": name, "value": value, "group": name if value else f"not {name}", "count": n,
                         "accuracy": k / n, "gap": k / n - overall, "ci95": [lo, hi]})
    return sorted(rows, key=lambda r: r["gap"])


def worst_errors(probs: np.ndarray, labels: np.ndarray, filenames: list[str], actual: int, predicted: int,
                 limit: int) -> list[dict]:
    """Misclassified examples of class ``actual`` predicted as ``predicted``, most confident first."""
    idx = np.flatnonzero((labels == actual) & (probs.argmax(-1) == predicted))
    idx = idx[np.argsort(-probs[idx, predicted], kind="stable")][:limit]
    return [{"filename": filenames[i], "probability": float(probs[i, predicted])} for i in idx]


def attribute_labels(attributes: np.ndarray, manifest: dict, outputs: list[str]) -> np.ndarray:
    """The 0/1 labels [N, outputs] of a multi-attribute model, from the records' attribute vectors."""
    names = list(manifest["attribute_names"])
    missing = [a for a in outputs if a not in names]
    if missing:
        raise EvaluationError(f"These shards have no {', '.join(missing)} attribute, which the run predicts.")
    return attributes[:, [names.index(a) for a in outputs]].astype(np.float32)


def validation_thresholds(model: keras.Model, data_dir: str, image_size, outputs: list[str], metric: str,
                          batch: int = 64, manifest: dict | None = None) -> tuple[float, ...]:
    """Each attribute's decision threshold, chosen to maximise ``metric`` on ``model``'s predictions of the
    validation split of ``data_dir`` (multilabel.choose_thresholds)."""
    manifest = manifest or shard_dir.read_manifest(data_dir)
    probs, _, _, attrs = predict_split(model, data_dir, "validation", image_size, batch, manifest)
    return multilabel.choose_thresholds(probs, attribute_labels(attrs, manifest, outputs), metric)


def load_model(run_dir: str, checkpoint: str = "best") -> tuple[keras.Model, dict]:
    """The run's core model with the weights of its best (or last) checkpoint, and its recorded config
    (config.json, with the checkpoint's path added)."""
    if checkpoint not in CHECKPOINTS:
        raise EvaluationError(f"--checkpoint={checkpoint}: choose best or last.")
    config = directory.read_config(run_dir)
    recorded = dict(config["model"])
    recorded["image_size"] = tuple(recorded["image_size"]) if recorded.get("image_size") else None
    model = build.build_model(registry.ModelConfig(**{**recorded, "weights": "none"}))
    path = directory.latest_checkpoint(run_dir, checkpoint)
    if path is None:
        raise EvaluationError(f"No {checkpoint} checkpoint in {directory.checkpoint_dir(run_dir)}: has this run "
                              "finished an epoch?")
    tf.train.Checkpoint(model=model.core).restore(path).expect_partial()
    return model.core, {**config, "image_size": list(model.image_size), "checkpoint_path": path}


def _metadata_batches(data_dir: str, split: str, image_size, batch: int, manifest: dict | None):
    info = pipeline.split_info(data_dir, split, manifest)
    config = input_config.DataConfig(data_dir, tuple(image_size) if image_size else None, batch)
    return pipeline.eval_dataset(config, info, with_metadata=True)


def predict_split(model: keras.Model, data_dir: str, split: str, image_size, batch: int,
                  manifest: dict | None = None, tta_mode: str = tta.NONE):
    """(probabilities, labels, file names, attributes) for every example of ``split``, in shard order; with a
    ``tta_mode``, the probabilities are averaged over its views (tta.py)."""
    ds = _metadata_batches(data_dir, split, image_size, batch, manifest)
    out = ([], [], [], [])
    for images, labels, names, attrs in ds:
        out[0].append(tta.predict(model, tf.cast(images, tf.float32), tta_mode))
        out[1].append(labels.numpy())
        out[2].extend(n.decode() for n in names.numpy())
        out[3].append(attrs.numpy())
    return np.concatenate(out[0]), np.concatenate(out[1]), out[2], np.concatenate(out[3])


def fetch_images(data_dir: str, split: str, image_size, wanted: set[str], manifest: dict) -> dict[str, np.ndarray]:
    """The decoded images of the named files of a split (a second pass, so predictions keep no images)."""
    found = {}
    for images, _, names, _ in _metadata_batches(data_dir, split, image_size, 256, manifest):
        for image, name in zip(images.numpy(), names.numpy()):
            if name.decode() in wanted:
                found[name.decode()] = image
    return found


HEADLINE = ("count", "accuracy", "accuracy_ci95", "balanced_accuracy", "roc_auc", "log_loss", "confusion_matrix",
            "class_names", "split", "checkpoint", "multi_label", "mean_accuracy", "mean_balanced_accuracy",
            "mean_roc_auc", "mean_majority_accuracy", "mean_accuracy_at_0.5", "mean_balanced_accuracy_at_0.5",
            "threshold_metric")


def headline(report: dict) -> dict:
    """The report's main figures (what summary.json and test_metrics.json hold)."""
    return {k: report[k] for k in HEADLINE if k in report}


def tta_summary(mode: str, plain: np.ndarray, augmented: np.ndarray, labels: np.ndarray,
                class_names: list[str]) -> dict:
    """The test-time augmented figures beside the plain ones: accuracy, balanced accuracy, ROC-AUC, log loss,
    and how many predictions it changed (``fixed``: wrong before, right with it; ``broken``: the reverse)."""
    m = compute_metrics(augmented, labels, class_names)
    before, after = plain.argmax(-1), augmented.argmax(-1)
    return {"mode": mode, **{k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "log_loss")},
            "changed_predictions": int((before != after).sum()),
            "fixed": int(((before != labels) & (after == labels)).sum()),
            "broken": int(((before == labels) & (after != labels)).sum())}


def check_shards_fit(config: dict, manifest: dict, data_dir: str) -> None:
    """Raises EvaluationError unless the shards in ``data_dir`` (their ``manifest``) hold what the run (its
    config.json, ``config``) predicts: the same attribute's classes for a one-attribute run, each of its
    attributes for a multi-attribute run. Other shards would be scored against the wrong labels, silently."""
    outputs = list(config.get("outputs") or [])
    own = config["train"]["data_dir"]
    if config["model"].get("multi_label"):
        missing = [a for a in outputs if a not in manifest.get("attribute_names", [])]
        if missing:
            raise EvaluationError(f"the shards in {data_dir} do not hold {', '.join(missing)}, which this run "
                                  f"predicts: give --data_dir shards that hold every attribute of the run (its own: "
                                  f"{own}).")
    elif outputs and list(manifest.get("class_names", [])) != outputs:
        # Class 1 is the attribute itself (attributes.class_names: Male -> Female, Male; Smiling -> not_Smiling...).
        raise EvaluationError(
            f"this run was trained for {outputs[-1]} (classes {', '.join(outputs)}), but the shards in {data_dir} were "
            f"converted for {manifest.get('attribute')} (classes {', '.join(manifest.get('class_names', []))}): give "
            f"--data_dir shards converted with --attribute={outputs[-1]} (the run's own: {own}).")


def report_dir(run_dir: str, split: str, checkpoint: str) -> str:
    """``RUN/report`` for the default (test, best); ``RUN/report/<split>-<checkpoint>`` otherwise."""
    base = os.path.join(run_dir, "report")
    return base if (split, checkpoint) == ("test", "best") else os.path.join(base, f"{split}-{checkpoint}")


def evaluate_run(run_dir: str, split: str = "test", checkpoint: str = "best", data_dir: str | None = None,
                 batch: int = 64, gallery_size: int = 24, min_support: int = 20, tta_mode: str = tta.NONE,
                 gradcam_size: int = 6, gradcam_attribute: str = "", thresholds: tuple[float, ...] | None = None
                 ) -> dict:
    """Evaluates a run and writes report.json, report.md, confusion_matrix.png, curves.png, the two error
    galleries and the Grad-CAM figures (``gradcam_size`` faces each; 0: none); returns the report. With a
    ``tta_mode``, report["tta"] holds its figures beside the plain ones. A multi-attribute run gets
    :func:`evaluate_attributes`' report instead (Grad-CAM of ``gradcam_attribute``; ``thresholds``: the
    attributes' decision thresholds when the caller already chose them on the validation split)."""
    recorded = directory.read_config(run_dir)
    data_dir = data_dir or recorded["train"]["data_dir"]
    manifest = shard_dir.read_manifest(data_dir)
    check_shards_fit(recorded, manifest, data_dir)  # before anything is loaded or written
    model, config = load_model(run_dir, checkpoint)
    if config["model"].get("multi_label"):
        return evaluate_attributes(model, config, run_dir, split, checkpoint, data_dir, manifest, batch, tta_mode,
                                   gradcam_size, gradcam_attribute, thresholds)
    class_names = list(manifest["class_names"])
    probs, labels, names, attrs = predict_split(model, data_dir, split, config["image_size"], batch, manifest)
    report = {"run_dir": run_dir, "split": split, "checkpoint": checkpoint, "data_dir": data_dir,
              "attribute": manifest["attribute"], **compute_metrics(probs, labels, class_names)}
    report["subgroups"] = subgroup_accuracy(probs, labels, attrs, manifest["attribute_names"], manifest["attribute"],
                                            min_support)
    report["errors"] = {f"{class_names[a]}_as_{class_names[p]}": worst_errors(probs, labels, names, a, p, gallery_size)
                        for a, p in ((1, 0), (0, 1))}
    report["config"] = config
    if tta_mode != tta.NONE:
        augmented = predict_split(model, data_dir, split, config["image_size"], batch, manifest, tta_mode)[0]
        report["tta"] = tta_summary(tta_mode, probs, augmented, labels, class_names)
    report["gradcam"] = gradcam_report.select(probs, labels, names, class_names, gradcam_size)
    explained = {e["filename"] for group in report["gradcam"].values() for e in group}
    model_inputs = fetch_images(data_dir, split, config["image_size"], explained, manifest) if explained else {}
    heatmaps = gradcam_report.heatmaps(model, config["model"]["arch"], config["image_size"], report["gradcam"],
                                       model_inputs)

    out = report_dir(run_dir, split, checkpoint)
    wanted = {e["filename"] for errors in report["errors"].values() for e in errors}
    images = {}
    if wanted:  # shown at the stored resolution (218x178 for CelebA), not the model's
        stored = shard_dir.stored_size(manifest)  # None: shards of mixed image sizes
        images = fetch_images(data_dir, split, stored or config["image_size"], wanted, manifest)
    with fileio.disk_space_for("the evaluation report", out,
                                intact=f"The run's checkpoints and export are intact: run "
                                       f"{command('evaluate')} again."):
        _write_report(report, out, run_dir, images, probs, labels, names, (model_inputs, heatmaps))
    return report


def evaluate_attributes(model: keras.Model, config: dict, run_dir: str, split: str, checkpoint: str, data_dir: str,
                        manifest: dict, batch: int = 64, tta_mode: str = tta.NONE, gradcam_size: int = 6,
                        gradcam_attribute: str = "", thresholds: tuple[float, ...] | None = None) -> dict:
    """The report of a multi-attribute run: per attribute accuracy, balanced accuracy, AUC, majority baseline
    and positive rate, their means, the published figures beside them (multilabel.py); report.md, report.json,
    attributes.png, curves.png, predictions.csv (every attribute's probability per image), the Grad-CAM figures
    of ``gradcam_attribute`` (default Male when trained, else the first), and TTA's means beside the plain ones.

    Decisions are at each attribute's threshold, chosen for this checkpoint on the validation split of
    ``data_dir`` by the run's best metric (tasks.base.best_metric) (or ``thresholds``, when the caller chose them so already);
    the figures at 0.5 stand beside them. Evaluating the validation split itself judges the thresholds on the
    predictions they were chosen on: optimistic."""
    outputs = list(config["outputs"])
    probs, _, names, attrs = predict_split(model, data_dir, split, config["image_size"], batch, manifest)
    labels = attribute_labels(attrs, manifest, outputs)
    metric = tasks_base.best_metric(config["train"])
    if thresholds is None:
        thresholds = multilabel.choose_thresholds(probs, labels, metric) if split == "validation" else \
            validation_thresholds(model, data_dir, config["image_size"], outputs, metric, batch, manifest)
    cut = np.asarray(thresholds, np.float32)
    report = {"run_dir": run_dir, "split": split, "checkpoint": checkpoint, "data_dir": data_dir,
              "multi_label": True, "outputs": outputs, "threshold_metric": metric,
              "thresholds_chosen_on": "validation",
              **multilabel.attribute_metrics(probs, labels, outputs, thresholds), "config": config}
    if tta_mode != tta.NONE:
        augmented = predict_split(model, data_dir, split, config["image_size"], batch, manifest, tta_mode)[0]
        m = multilabel.attribute_metrics(augmented, labels, outputs, thresholds)
        report["tta"] = {"mode": tta_mode, **{k: m[k] for k in ("mean_accuracy", "mean_balanced_accuracy",
                                                                "mean_roc_auc", "log_loss")},
                         "changed_decisions": int(((probs >= cut) != (augmented >= cut)).sum())}
    attribute = gradcam_attribute or ("Male" if "Male" in outputs else outputs[0])
    if attribute not in outputs:
        raise EvaluationError(f"--gradcam_attribute={attribute}: this run predicts {', '.join(outputs)}.")
    report["gradcam_attribute"] = attribute
    report["gradcam"] = gradcam_report.select_attribute(probs, labels, names, outputs, attribute, gradcam_size,
                                                        float(cut[outputs.index(attribute)]))
    explained = {e["filename"] for group in report["gradcam"].values() for e in group}
    model_inputs = fetch_images(data_dir, split, config["image_size"], explained, manifest) if explained else {}
    heatmaps = gradcam_report.heatmaps(model, config["model"]["arch"], config["image_size"], report["gradcam"],
                                       model_inputs)
    out = report_dir(run_dir, split, checkpoint)
    with fileio.disk_space_for("the evaluation report", out,
                                intact=f"The run's checkpoints and export are intact: run "
                                       f"{command('evaluate')} again."):
        fileio.makedirs(out)
        files = {"attributes": figures.save_attribute_accuracy(report, fileio.join(out, "attributes.png"))}
        history = fileio.join(run_dir, "history.csv")
        if fileio.exists(history):
            files["curves"] = figures.save_curves(history, fileio.join(out, "curves.png"))
        files["predictions"] = fileio.join(out, "predictions.csv")
        write_attribute_predictions(files["predictions"], probs, labels, names, outputs, cut)
        files.update(gradcam_report.save(report["gradcam"], model_inputs, heatmaps, out))
        report["files"] = files
        fileio.write_json(fileio.join(out, "report.json"), report)
        markdown = markdown_report.attributes_markdown(report)
        fileio.write_text(fileio.join(out, "report.md"), markdown)
    summaries = Summaries(run_dir)
    name = f"evaluation_{split}_{checkpoint}"
    summaries.scalars(name, 0, {"mean_accuracy": report["mean_accuracy"], "log_loss": report["log_loss"],
                                "mean_balanced_accuracy": report["mean_balanced_accuracy"]})
    for key, path in files.items():
        if path.endswith(".png"):
            summaries.figure(name, key, 0, fileio.read_bytes(path))
    summaries.text(name, "report", 0, markdown)
    summaries.close()
    return report


def write_attribute_predictions(path: str, probs: np.ndarray, labels: np.ndarray, names: list[str],
                                outputs: list[str], thresholds: np.ndarray | None = None) -> None:
    """predictions.csv of a multi-attribute run: per image, each attribute's true value and probability, and
    with ``thresholds`` whether the model calls it present (probability >= the attribute's threshold)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    decided = [f"present_{a}" for a in outputs] if thresholds is not None else []
    writer.writerow(["filename", *(f"true_{a}" for a in outputs), *(f"p_{a}" for a in outputs), *decided])
    for name, y, p in zip(names, labels, probs):
        present = [int(v) for v in p >= thresholds] if thresholds is not None else []
        writer.writerow([name, *(int(v) for v in y), *(f"{v:.6f}" for v in p), *present])
    fileio.write_text(path, buffer.getvalue())


def write_predictions(path: str, probs: np.ndarray, labels: np.ndarray, names: list[str],
                      class_names: list[str]) -> None:
    """predictions.csv: per example its file name, true and predicted class, the predicted class's probability
    and every class's probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["filename", "true_label", "predicted_label", "probability", *(f"p_{c}" for c in class_names)])
    for name, label, p in zip(names, labels, probs):
        k = int(p.argmax())
        writer.writerow([name, class_names[int(label)], class_names[k], f"{p[k]:.6f}", *(f"{v:.6f}" for v in p)])
    fileio.write_text(path, buffer.getvalue())


def _write_report(report: dict, out: str, run_dir: str, images: dict, probs, labels, names,
                  explained: tuple[dict, dict] = ({}, {})) -> None:
    fileio.makedirs(out)
    files = {"confusion_matrix": figures.save_confusion_matrix(report, fileio.join(out, "confusion_matrix.png"))}
    history = fileio.join(run_dir, "history.csv")
    if fileio.exists(history):
        files["curves"] = figures.save_curves(history, fileio.join(out, "curves.png"))
    for key, errors in report["errors"].items():
        actual, predicted = key.split("_as_")
        files[key] = figures.save_gallery(errors, images, actual, predicted, fileio.join(out, f"errors_{key}.png"))
    files.update(gradcam_report.save(report.get("gradcam", {}), *explained, out))
    files["predictions"] = fileio.join(out, "predictions.csv")
    write_predictions(files["predictions"], probs, labels, names, report["class_names"])
    report["files"] = files
    fileio.write_json(fileio.join(out, "report.json"), report)
    markdown = markdown_report.report_markdown(report)
    fileio.write_text(fileio.join(out, "report.md"), markdown)
    _log_to_tensorboard(run_dir, report, {k: v for k, v in files.items() if v.endswith(".png")}, markdown)


def _log_to_tensorboard(run_dir: str, report: dict, files: dict, markdown: str) -> None:
    summaries = Summaries(run_dir)
    name = f"evaluation_{report['split']}_{report['checkpoint']}"
    summaries.scalars(name, 0, {"accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
                                "roc_auc": report["roc_auc"], "log_loss": report["log_loss"]})
    for key, path in files.items():
        summaries.figure(name, key, 0, fileio.read_bytes(path))
    summaries.text(name, "report", 0, markdown)
    summaries.close()
