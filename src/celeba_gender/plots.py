"""Pictures and tables of an evaluation: confusion matrix, training curves, error galleries, report.md."""

from __future__ import annotations

import csv

import numpy as np
import tensorflow as tf

from celeba_gender.summaries import confusion_matrix_figure, figure_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write(path: str, png: bytes) -> str:
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(png)
    return path


def save_confusion_matrix(report: dict, path: str) -> str:
    title = f"{report['split']} ({report['checkpoint']} checkpoint): accuracy {report['accuracy']:.4f}"
    fig = confusion_matrix_figure(np.asarray(report["confusion_matrix"]), report["class_names"], title)
    return _write(path, figure_png(fig))


def read_history(path: str) -> list[dict]:
    with tf.io.gfile.GFile(path) as f:
        return list(csv.DictReader(f))


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


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def report_markdown(report: dict, subgroups: int = 15) -> str:
    """The report as readable Markdown tables."""
    names = report["class_names"]
    lo, hi = report["accuracy_ci95"]
    lines = [f"# Evaluation of {report['run_dir']}", "",
             f"Split `{report['split']}` ({report['count']:,} images, every one once), {report['checkpoint']} "
             f"checkpoint, attribute `{report['attribute']}`.", "",
             "| metric | value |", "|---|---|",
             f"| accuracy | {_pct(report['accuracy'])} (95% CI {_pct(lo)} - {_pct(hi)}) |",
             f"| balanced accuracy | {_pct(report['balanced_accuracy'])} |",
             f"| ROC-AUC | {report['roc_auc']:.4f} |", f"| log loss | {report['log_loss']:.4f} |", "",
             "## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in names:
        c = report["per_class"][name]
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1-score']:.4f} | {int(c['support']):,} |")
    lines += ["", "## Confusion matrix (rows: actual, columns: predicted)", "",
              "| | " + " | ".join(f"predicted {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"| actual {name} | " + " | ".join(f"{v:,}" for v in row) + " |")
    lines += ["", f"## Where it fails: subgroups by accuracy gap (worst {subgroups})", "",
              "| subgroup | images | accuracy | gap | 95% CI |", "|---|---|---|---|---|"]
    for g in report["subgroups"][:subgroups]:
        lines.append(f"| {g['group']} | {g['count']:,} | {_pct(g['accuracy'])} | {100 * g['gap']:+.2f} pt | "
                     f"{_pct(g['ci95'][0])} - {_pct(g['ci95'][1])} |")
    lines += ["", "## Most confident errors", ""]
    for key, errors in report["errors"].items():
        actual, predicted = key.split("_as_")
        shown = ", ".join(f"{e['filename']} ({e['probability']:.2f})" for e in errors[:10]) or "none"
        lines.append(f"- actual {actual} predicted {predicted}: {shown}")
    return "\n".join(lines) + "\n"
