"""Comparison studies: grids of ordinary train.py runs (archs x one varied setting), resumable, tabulated.

    run_study(StudyConfig(name="epochs", archs=("alexnet", "resnet50v2"), vary="epochs", values=(5, 10, 15)))

Each run is a separate ``train.py`` process with its own run directory under ``STUDY/runs/``, so a study is
exactly the runs a user could make by hand, and TensorFlow's global state (strategy, precision policy) never
leaks from one run into the next. A rerun skips finished runs and resumes an interrupted one (train.py does
the resuming); a finished run tested on another checkpoint than ``--checkpoint`` is evaluated on that one
(evaluate.py), so every figure is of the checkpoint the table names. ``dataset_size`` studies convert the
data once per size (``--limit``) into ``STUDY/data/``.
Outputs: ``study.csv`` and ``study.md`` (rows: setting, columns: arch, like the source's tables),
``study_runs.csv`` (every run), ``study.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import statistics
import subprocess
import time

from celeba_gender.core import fileio
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.study import source_study
from celeba_gender.study.config import VARY, StudyConfig, StudyError  # noqa: F401 - the study's API


@dataclasses.dataclass(frozen=True)
class RunSpec:
    arch: str
    value: int | None
    seed: int
    run_dir: str
    data_dir: str


def plan(config: StudyConfig) -> list[RunSpec]:
    """Every run of the study, settings outermost (so a partial study already fills whole rows)."""
    if config.vary not in VARY:
        raise StudyError(f"--vary={config.vary}: choose one of {', '.join(VARY)}.")
    values = config.values if config.vary != "none" else (None,)
    specs = []
    for value in values:
        data_dir = (os.path.join(config.directory, "data", f"limit-{value}") if config.vary == "dataset_size"
                    else config.data_dir)
        for arch in config.archs:
            for r in range(config.repeats):
                seed = config.seed + r
                tag = f"{arch}" + (f"-{config.vary}{value}" if value is not None else "") + f"-seed{seed}"
                specs.append(RunSpec(arch, value, seed, os.path.join(config.directory, "runs", tag), data_dir))
    return specs


def train_command(config: StudyConfig, spec: RunSpec) -> list[str]:
    """The train.py command of one run."""
    cmd = [config.python, "-m", "celeba_gender.cli.train"]
    if config.train_flagfile:
        cmd.append(f"--flagfile={config.train_flagfile.format(arch=spec.arch)}")
    cmd += [f"--arch={spec.arch}", f"--seed={spec.seed}", f"--run_dir={spec.run_dir}", f"--data_dir={spec.data_dir}",
            f"--test_checkpoint={config.checkpoint}", "--noprogress"]
    if config.vary in ("epochs", "batch"):
        cmd.append(f"--{config.vary}={spec.value}")
    return cmd


def _run(cmd: list[str], log_path: str) -> int:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


_TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def _reason(path: str) -> str:
    """Why a child command failed, in one line: its own ``<prog>: error: ...`` line when it printed one, else
    the last line of its log that is not TensorFlow's logging (a traceback's exception line)."""
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip() and not _TF_NOISE.match(line)]
    errors = [line for line in lines if re.match(r"^[\w.-]+: error: ", line)]
    return (errors or lines or ["(its log is empty)"])[-1]


def prepare_data(config: StudyConfig, echo=print) -> None:
    """Converts the data once per dataset size (the converter itself skips what is already done)."""
    if config.vary != "dataset_size":
        return
    if not config.convert_flagfile:
        raise StudyError("--vary=dataset_size needs --convert_flagfile (make_tfrecords flags, e.g. --celeba_dir).")
    for value in config.values:
        out = os.path.join(config.directory, "data", f"limit-{value}")
        cmd = [config.python, "-m", "celeba_gender.cli.convert", f"--flagfile={config.convert_flagfile}",
               f"--limit={value}", f"--out_dir={out}", "--progress=false"]
        log = os.path.join(config.directory, "logs", f"convert-limit-{value}.log")
        if _run(cmd, log):
            raise StudyError(f"converting {value:,} images failed: {_reason(log)} (its log: {log})")
        echo(f"data for {value:,} images: {out}")


def run_study(config: StudyConfig, echo=print) -> list[dict]:
    """Runs (or resumes) every run of the study, then writes the tables; returns one row per run."""
    prepare_data(config, echo)
    specs = plan(config)
    rows = []
    for i, spec in enumerate(specs, start=1):
        label = f"[{i}/{len(specs)}] {spec.arch}" + (f" {config.vary}={spec.value}" if spec.value is not None else "") \
            + f" seed {spec.seed}"
        log = os.path.join(config.directory, "logs", os.path.basename(spec.run_dir) + ".log")
        if RunDirectory(spec.run_dir).complete:
            tested = _tested_checkpoint(spec)
            if tested in (None, config.checkpoint):
                echo(f"{label}: done before, skipped")
            else:
                echo(f"{label}: done before, tested on its {tested} checkpoint: evaluated on its {config.checkpoint} "
                     "one")
            rows.append(_result(config, spec, log))
            continue
        start = time.time()
        if _run(train_command(config, spec), log):
            raise StudyError(f"{label} failed: {_reason(log)} (its log: {log}). Fix it and run the same study "
                             "command again: finished runs are kept.")
        rows.append(_result(config, spec, log))
        echo(f"{label}: test accuracy {rows[-1]['test_accuracy']:.4f} ({time.time() - start:.0f} s)")
    write_tables(config, rows)
    return rows


def _tested_checkpoint(spec: RunSpec) -> str | None:
    """The checkpoint a finished run's summary.json figures are of; None when it has none (no test split)."""
    summary = RunDirectory(spec.run_dir).summary()
    return summary["test"].get("checkpoint", summary.get("checkpoint")) if summary.get("test") else None


def _test_figures(config: StudyConfig, spec: RunSpec, log: str) -> dict:
    """The run's test figures for the study's checkpoint: from summary.json when the run was tested on it, else
    from evaluate.py's report of that checkpoint (made now unless an earlier rerun made it), so that a study
    rerun with another --checkpoint never tabulates the other checkpoint's figures under this one's name."""
    run = RunDirectory(spec.run_dir)
    tested = _tested_checkpoint(spec)
    if tested in (None, config.checkpoint):
        return run.summary().get("test", {})
    path = os.path.join(run.report_dir("test", config.checkpoint), "report.json")
    data_dir = (run.recorded_settings() or {}).get("data_dir")
    report = fileio.read_json(path) if os.path.exists(path) else None
    if not (isinstance(report, dict) and report.get("checkpoint") == config.checkpoint
            and report.get("split") == "test" and report.get("data_dir") == data_dir):
        cmd = [config.python, "-m", "celeba_gender.cli.evaluate", f"--run_dir={spec.run_dir}",
               f"--checkpoint={config.checkpoint}"]
        if _run(cmd, log):
            raise StudyError(f"evaluating {spec.run_dir} on its {config.checkpoint} checkpoint failed: {_reason(log)} "
                             f"(its log: {log}).")
        report = fileio.read_json(path)
    return report


def _result(config: StudyConfig, spec: RunSpec, log: str) -> dict:
    summary = RunDirectory(spec.run_dir).summary()
    test = _test_figures(config, spec, log)
    return {"arch": spec.arch, "value": spec.value, "seed": spec.seed, "run_dir": spec.run_dir,
            "checkpoint": test.get("checkpoint", config.checkpoint),
            # A multi-attribute run's figure is its mean accuracy over the attributes.
            "test_accuracy": test.get("accuracy", test.get("mean_accuracy", float("nan"))),
            "test_roc_auc": test.get("roc_auc", test.get("mean_roc_auc", float("nan"))),
            # The best epoch's validation figure, of the metric that picked it (accuracy unless weighted).
            "best_validation": summary.get(f"best_validation_{summary.get('best_metric', 'accuracy')}",
                                           float("nan"))}


def tabulate(config: StudyConfig, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the study table: one row per setting, one column per arch, mean (+- std), and the
    source study's published accuracy in brackets where it reported that cell."""
    header = [config.vary if config.vary != "none" else "setting", *config.archs]
    values = sorted({r["value"] for r in rows}, key=lambda v: (v is None, v))
    table = []
    for value in values:
        line = [str(value) if value is not None else "-"]
        for arch in config.archs:
            accs = [r["test_accuracy"] for r in rows if r["arch"] == arch and r["value"] == value]
            if len(accs) > 1:
                cell = f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}"
            else:
                cell = f"{accs[0]:.4f}" if accs else ""
            source = source_study.published(config.vary, value, arch)
            line.append(cell + (f" (source {source:.2f})" if source is not None and cell else ""))
        table.append(line)
    return header, table


def write_tables(config: StudyConfig, rows: list[dict]) -> dict:
    """study.csv, study.md, study_runs.csv and study.png in the study directory."""
    os.makedirs(config.directory, exist_ok=True)
    header, table = tabulate(config, rows)
    paths = {name: os.path.join(config.directory, name)
             for name in ("study.csv", "study.md", "study_runs.csv", "study.png")}
    with open(paths["study.csv"], "w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    with open(paths["study_runs.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    repeats = f", mean ± std over {config.repeats} seeds" if config.repeats > 1 else ""
    which = "best validation epoch" if config.checkpoint == "best" else "last epoch"
    note = f"Each cell is the test accuracy of the {which}'s checkpoint."
    if any("(source " in cell for line in table for cell in line):  # only when some cell has the source's figure
        note += (" In brackets: what the source study published for that cell (its last epoch, on its own leaky "
                 "52,000-image random split, so not the same test set).")
    md = [f"# Study {config.name}: test accuracy by {config.vary}{repeats}", "", note, "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(line) + " |" for line in table]
    with open(paths["study.md"], "w") as f:
        f.write("\n".join(md) + "\n")
    _plot(config, rows, paths["study.png"])
    return paths


def _plot(config: StudyConfig, rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for arch in config.archs:
        points = sorted(((r["value"] or 0), r["test_accuracy"]) for r in rows if r["arch"] == arch)
        xs = sorted({x for x, _ in points})
        means = [statistics.mean(a for x2, a in points if x2 == x) for x in xs]
        ax.plot(xs, means, "o-", label=arch)
    ax.set_xlabel(config.vary)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"study {config.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
