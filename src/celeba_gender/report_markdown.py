"""The evaluation report as Markdown tables (report.md, and TensorBoard's text dashboard)."""

from __future__ import annotations


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


def attributes_markdown(report: dict) -> str:
    """The report of a multi-attribute run: the means, then one row per attribute (worst gap to the majority
    baseline first) with the published figures beside the engine's."""
    from celeba_gender import multilabel  # sklearn is loaded only when needed

    lines = [f"# Evaluation of {report['run_dir']}", "",
             f"Split `{report['split']}` ({report['count']:,} images, every one once), {report['checkpoint']} "
             f"checkpoint, {len(report['attributes'])} attributes, one sigmoid each (decision at 0.5).", "",
             "| metric | value |", "|---|---|",
             f"| mean accuracy | {_pct(report['mean_accuracy'])} |",
             f"| mean majority baseline | {_pct(report['mean_majority_accuracy'])} |",
             f"| mean balanced accuracy | {_pct(report['mean_balanced_accuracy'])} |",
             f"| mean ROC-AUC | {report['mean_roc_auc']:.4f} |", f"| log loss | {report['log_loss']:.4f} |", "",
             "## Per attribute, least learned first (gap = accuracy - majority baseline)", "",
             multilabel.markdown_table(report), "",
             "The majority baseline answers every image with the attribute's more frequent value. Published figures "
             "(%) are on CelebA's official test split: LNets+ANet (Liu et al., ICCV 2015, Table 1) and MCNN-AUX "
             "(Hand and Chellappa, AAAI 2017). They are not comparable with a run on other data, such as the "
             "synthetic CelebA."]
    return "\n".join(lines) + "\n"
