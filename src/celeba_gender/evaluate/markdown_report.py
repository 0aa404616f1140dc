"""The evaluation report as Markdown tables (report.md, and TensorBoard's text dashboard)."""

from __future__ import annotations

import math

import numpy as np

from celeba_gender.evaluate import published
from celeba_gender.tasks.classification import Classification
from celeba_gender.tasks.multi_attribute import MultiAttribute


def _pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.4f}"


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
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1-score']:.4f} "
                     f"| {int(c['support']):,} |")
    lines += ["", "## Confusion matrix (rows: actual, columns: predicted)", "",
              "| | " + " | ".join(f"predicted {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"| actual {name} | " + " | ".join(f"{v:,}" for v in row) + " |")
    lines += ["", f"## Where it fails: subgroups by accuracy gap (worst {subgroups})", "",
              "| subgroup | images | accuracy | gap | 95% CI |", "|---|---|---|---|---|"]
    for g in report["subgroups"][:subgroups]:
        lines.append(f"| {g['group']} | {g['count']:,} | {_pct(g['accuracy'])} | {100 * g['gap']:+.2f} pt | "
                     f"{_pct(g['ci95'][0])} - {_pct(g['ci95'][1])} |")
    lines += _tta_table(report)
    lines += ["", "## Most confident errors", ""]
    for key, errors in report["errors"].items():
        actual, predicted = key.split("_as_")
        shown = ", ".join(f"{e['filename']} ({e['probability']:.2f})" for e in errors[:10]) or "none"
        lines.append(f"- actual {actual} predicted {predicted}: {shown}")
    lines += _gradcam_section(report)
    return "\n".join(lines) + "\n"


def attributes_markdown(report: dict) -> str:
    """The report of a multi-attribute run: the means, then one row per attribute (worst gap to the majority
    baseline first) with the published figures beside the engine's."""

    tuned = "mean_accuracy_at_0.5" in report  # reports written before thresholds were chosen decided at 0.5
    if tuned:
        decision = (f"present when its probability reaches the attribute's threshold, chosen for this checkpoint "
                    f"on the {report.get('thresholds_chosen_on', 'validation')} split by "
                    f"{report['threshold_metric'].replace('_', ' ')}; the figures at 0.5 beside them")
    else:
        decision = "decision at 0.5"
    rows = [("mean accuracy", _pct(report["mean_accuracy"]), "mean_accuracy_at_0.5"),
            ("mean majority baseline", _pct(report["mean_majority_accuracy"]), None),
            ("mean balanced accuracy", _pct(report["mean_balanced_accuracy"]), "mean_balanced_accuracy_at_0.5"),
            ("mean ROC-AUC", f"{report['mean_roc_auc']:.4f}", None), ("log loss", f"{report['log_loss']:.4f}", None)]
    table = ["| metric | value | at 0.5 |", "|---|---|---|"] if tuned else ["| metric | value |", "|---|---|"]
    for name, value, half in rows:
        extra = (f" {_pct(report[half])} |" if half else " |") if tuned else ""
        table.append(f"| {name} | {value} |{extra}")
    lines = [f"# Evaluation of {report['run_dir']}", "",
             f"Split `{report['split']}` ({report['count']:,} images, every one once), {report['checkpoint']} "
             f"checkpoint, {len(report['attributes'])} attributes, one sigmoid each ({decision}).", "",
             *table, "",
             "## Per attribute, least learned first (gap = accuracy - majority baseline)", "",
             attributes_table(report), "",
             "The majority baseline answers every image with the attribute's more frequent value. Published figures "
             "(%) are on CelebA's official test split: LNets+ANet (Liu et al., ICCV 2015, Table 1) and MCNN-AUX "
             "(Hand and Chellappa, AAAI 2017). They are not comparable with a run on other data, such as the "
             "synthetic CelebA."]
    t = report.get("tta")
    if t:
        lines += ["", f"## Test-time augmentation: plain vs {t['mode']}", "", f"| metric | plain | {t['mode']} |",
                  "|---|---|---|", f"| mean accuracy | {_pct(report['mean_accuracy'])} | {_pct(t['mean_accuracy'])} |",
                  f"| mean balanced accuracy | {_pct(report['mean_balanced_accuracy'])} | "
                  f"{_pct(t['mean_balanced_accuracy'])} |",
                  f"| mean ROC-AUC | {report['mean_roc_auc']:.4f} | {t['mean_roc_auc']:.4f} |",
                  f"| log loss | {report['log_loss']:.4f} | {t['log_loss']:.4f} |", "",
                  f"{t['mode']} changed {t['changed_decisions']:,} of {report['count'] * len(report['attributes']):,} "
                  "attribute decisions."]
    if report.get("gradcam"):
        lines += _gradcam_section(report)[:2] + [f"Grad-CAM of `{report['gradcam_attribute']}` (evidence for the "
                                                 "value the model chose)."] + _gradcam_section(report)[4:]
    return "\n".join(lines) + "\n"


def _tta_table(report: dict) -> list[str]:
    """Plain vs test-time augmented figures, when evaluate.py ran with --tta."""
    t = report.get("tta")
    if not t:
        return []
    mode = t["mode"]
    rows = [("accuracy", _pct(report["accuracy"]), _pct(t["accuracy"])),
            ("balanced accuracy", _pct(report["balanced_accuracy"]), _pct(t["balanced_accuracy"])),
            ("ROC-AUC", f"{report['roc_auc']:.4f}", f"{t['roc_auc']:.4f}"),
            ("log loss", f"{report['log_loss']:.4f}", f"{t['log_loss']:.4f}")]
    return ["", f"## Test-time augmentation: plain vs {mode}", "", f"| metric | plain | {mode} |", "|---|---|---|",
            *(f"| {name} | {a} | {b} |" for name, a, b in rows), "",
            f"{mode} changed {t['changed_predictions']:,} of {report['count']:,} predictions: {t['fixed']:,} became "
            f"right, {t['broken']:,} became wrong."]


def _gradcam_section(report: dict) -> list[str]:
    """Links to the Grad-CAM figures, one per group of faces."""
    groups = report.get("gradcam") or {}
    files = report.get("files", {})
    if not groups:
        return []
    lines = ["", "## Grad-CAM: where the model found its evidence", "",
             "Each face is shown with the heatmap of the class the model predicted (for an error, the wrong class)."]
    for group, entries in groups.items():
        path = files.get(f"gradcam_{group}")
        if path:
            caption = "correct, most confident" if group == "correct" else \
                "actual {} predicted {}".format(*group.split("_as_"))
            lines += ["", f"{caption} ({len(entries)} faces): ![{caption}]({path.rsplit('/', 1)[-1]})"]
    return lines


def attributes_table(report: dict, sort: str = "gap") -> str:
    """The per-attribute table of a report: engine's accuracy, majority baseline and the gap between them,
    balanced accuracy, AUC, and the published figures; with chosen thresholds also each threshold and the
    accuracy and balanced accuracy at 0.5 beside the tuned ones. ``sort="gap"`` puts the attributes the model
    learned least beyond the majority guess first (``"name"``: CelebA's order)."""
    rows = list(report["attributes"].items())
    tuned = bool(rows) and "threshold" in rows[0][1]
    if sort == "gap":
        rows.sort(key=lambda kv: kv[1]["accuracy"] - kv[1]["majority_accuracy"])
    systems = list(published.PUBLISHED)
    at_half = ("threshold", "accuracy at 0.5", "balanced at 0.5") if tuned else ()
    header = ["attribute", *at_half[:1], "accuracy", *at_half[1:2], "majority", "gap", "balanced accuracy",
              *at_half[2:], "ROC-AUC", "positive rate", *systems]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in rows:
        cited = [published.published(s, name) for s in systems]
        cells = [name, *([_num(m["threshold"])] if tuned else []), _pct(m["accuracy"]),
                 *([_pct(m["accuracy_at_0.5"])] if tuned else []), _pct(m["majority_accuracy"]),
                 f"{100 * (m['accuracy'] - m['majority_accuracy']):+.1f} pt", _pct(m["balanced_accuracy"]),
                 *([_pct(m["balanced_accuracy_at_0.5"])] if tuned else []), _num(m["roc_auc"]),
                 _pct(m["positive_rate"]), *(f"{c:.2f}%" if c is not None else "" for c in cited)]
        lines.append("| " + " | ".join(cells) + " |")
    means = [np.mean(published.PUBLISHED[s]) for s in systems]
    r = report
    cells = ["**mean**", *([""] if tuned else []), f"**{_pct(r['mean_accuracy'])}**",
             *([_pct(r["mean_accuracy_at_0.5"])] if tuned else []), _pct(r["mean_majority_accuracy"]),
             f"{100 * (r['mean_accuracy'] - r['mean_majority_accuracy']):+.1f} pt", _pct(r["mean_balanced_accuracy"]),
             *([_pct(r["mean_balanced_accuracy_at_0.5"])] if tuned else []), _num(r["mean_roc_auc"]), "",
             *(f"{m:.2f}%" for m in means)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(test: dict) -> list[str]:
    """The lines train.py prints about the test evaluation (summary.json's "test"), by the kind of labels."""
    return _SUMMARIES.get(test.get("kind"), _class_summary)(test)


def _attributes_summary(test: dict) -> list[str]:
    lines = [f"test ({test.get('checkpoint', 'best')} checkpoint): mean accuracy {test['mean_accuracy']:.4f} "
             f"(majority baseline {test['mean_majority_accuracy']:.4f}), mean balanced accuracy "
             f"{test['mean_balanced_accuracy']:.4f}, mean ROC-AUC {test['mean_roc_auc']:.4f} on {test['count']:,} "
             "images"]
    if "mean_accuracy_at_0.5" in test:
        lines.append(f"  decisions at the thresholds chosen on validation by "
                     f"{test['threshold_metric'].replace('_', ' ')}; at 0.5: mean accuracy "
                     f"{test['mean_accuracy_at_0.5']:.4f}, mean balanced accuracy "
                     f"{test['mean_balanced_accuracy_at_0.5']:.4f}")
    return lines


def _class_summary(test: dict) -> list[str]:
    names = test["class_names"]
    lo, hi = test["accuracy_ci95"]
    lines = [f"test ({test.get('checkpoint', 'best')} checkpoint): accuracy {test['accuracy']:.4f} (95% CI "
             f"{lo:.4f}-{hi:.4f}), balanced accuracy {test['balanced_accuracy']:.4f}, ROC-AUC "
             f"{test['roc_auc']:.4f} on {test['count']:,} images"]
    width = max(len(n) for n in names) + 2
    lines.append(" " * (width + 8) + "predicted " + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, test["confusion_matrix"]):
        lines.append(f"{'actual ' + name:>{width + 17}}" + "".join(f"{v:>{width},}" for v in row))
    return lines


_SUMMARIES = {Classification.kind: _class_summary, MultiAttribute.kind: _attributes_summary}
