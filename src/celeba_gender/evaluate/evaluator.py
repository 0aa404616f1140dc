"""Evaluation you can trust: every example of a split exactly once, figures computed from the predictions, a
report written to ``RUN/report/`` (and TensorBoard).

    report = evaluate_run(RunDirectory("runs/resnet50v2-..."), EvaluationOptions(split="test"))

This module loads what was trained (:func:`load`), predicts a split (:func:`predict_split`) and hands both to
the report of the run's kind of labels (``REPORTS``: ``class_report`` for one attribute's classes,
``attributes_report`` for several attributes), which computes the figures through the task and writes its
files. The trainer calls :func:`evaluate_run` with the model, task and thresholds it already has.
"""

from __future__ import annotations

import dataclasses

from celeba_gender.core import fileio
from celeba_gender.core.invocation import command
from celeba_gender.evaluate import attributes_report, class_report
from celeba_gender.evaluate.predictions import (CHECKPOINTS, Context, EvaluationError, Trained, load,  # noqa: F401
                                                predict_split)
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.rundir.tensorboard import Summaries
from celeba_gender.serve import tta
from celeba_gender.shards import shard_dir
from celeba_gender.tasks.base import TaskError
from celeba_gender.tasks.classification import Classification
from celeba_gender.tasks.multi_attribute import MultiAttribute

# The report of each kind of labels: build(trained, predictions, options, context) -> (report, what its files need),
# write, markdown, scalars and console.
REPORTS = {Classification.kind: class_report, MultiAttribute.kind: attributes_report}
HEADLINE = ("count", "accuracy", "accuracy_ci95", "balanced_accuracy", "roc_auc", "log_loss", "confusion_matrix",
            "class_names", "split", "checkpoint", "kind", "mean_accuracy", "mean_balanced_accuracy",
            "mean_roc_auc", "mean_majority_accuracy", "mean_accuracy_at_0.5", "mean_balanced_accuracy_at_0.5",
            "threshold_metric")


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate and what the report shows (evaluate.py's flags of the same names)."""

    split: str = "test"
    checkpoint: str = "best"
    data_dir: str | None = None  # default: the run's own shards
    batch: int = 64
    gallery_size: int = 24
    min_subgroup: int = 20
    tta: str = tta.NONE
    gradcam_size: int = 6
    gradcam_attribute: str = ""


def headline(report: dict) -> dict:
    """The report's main figures (what summary.json and test_metrics.json hold)."""
    return {k: report[k] for k in HEADLINE if k in report}


def evaluate_run(run: RunDirectory | str, options: EvaluationOptions = EvaluationOptions(),
                 trained: Trained | None = None) -> dict:
    """Evaluates a run on ``options.split`` of its shards (or ``options.data_dir``'s, which must hold what it
    predicts) and writes the report of its kind of labels; returns the report. ``trained``: the model and task
    to evaluate when the caller has them (the trainer: restored, with the attributes' thresholds chosen), else
    loaded from ``options.checkpoint``."""
    run = run if isinstance(run, RunDirectory) else RunDirectory(run)
    recorded = run.read_config()
    data_dir = options.data_dir or recorded["train"]["data_dir"]
    manifest = shard_dir.read_manifest(data_dir)
    trained = trained or load(run, options.checkpoint)
    try:  # before anything is written: other shards would be scored against the wrong labels, silently
        trained = dataclasses.replace(trained, task=trained.task.for_shards(manifest, f"the shards in {data_dir}"))
    except TaskError as e:
        raise EvaluationError(f"{e} (as --data_dir; the run's own: {recorded['train']['data_dir']}).") from None
    context = Context(run, data_dir, manifest)
    predictions = predict_split(trained, context, options.split, options.batch)
    report_kind = REPORTS[trained.task.kind]
    report, files = report_kind.build(trained, predictions, options, context)
    out = run.report_dir(options.split, options.checkpoint)
    report.update({"run_dir": run.path, "split": options.split, "checkpoint": options.checkpoint,
                   "data_dir": data_dir, "kind": trained.task.kind, "config": trained.config})
    with fileio.disk_space_for("the evaluation report", out,
                               intact=f"The run's checkpoints and export are intact: run {command('evaluate')} "
                                      "again."):
        fileio.makedirs(out)
        report["files"] = report_kind.write(report, predictions, files, out)
        fileio.write_json(fileio.join(out, "report.json"), report)
        markdown = report_kind.markdown(report)
        fileio.write_text(fileio.join(out, "report.md"), markdown)
    _log_to_tensorboard(run, report, report_kind.scalars(report), markdown)
    return report


def _log_to_tensorboard(run: RunDirectory, report: dict, scalars: dict, markdown: str) -> None:
    summaries = Summaries(run.path)
    name = f"evaluation_{report['split']}_{report['checkpoint']}"
    summaries.scalars(name, 0, scalars)
    for key, path in report["files"].items():
        if path.endswith(".png"):
            summaries.figure(name, key, 0, fileio.read_bytes(path))
    summaries.text(name, "report", 0, markdown)
    summaries.close()


def console_text(report: dict, out: str) -> str:
    """What evaluate.py prints: the report's tables (without the long galleries) and where its files are."""
    return REPORTS[report["kind"]].console(report, out)
