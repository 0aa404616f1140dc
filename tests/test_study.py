"""Comparison studies (celeba_gender.study.grid): a real two-run study tabulates its runs, and a rerun skips them."""

from __future__ import annotations

import csv
import dataclasses
import os

import pytest

from celeba_gender.core import fileio
from celeba_gender.study import grid


def test_tables_show_mean_and_std_with_repeats():
    config = grid.StudyConfig(name="t", archs=("tiny", "small"), vary="epochs", values=(1, 2), repeats=2)
    rows = [{"arch": a, "value": v, "test_accuracy": acc} for a, v, acc in (
        ("tiny", 1, 0.6), ("tiny", 1, 0.8), ("small", 1, 0.9), ("small", 1, 0.9),
        ("tiny", 2, 0.7), ("tiny", 2, 0.7), ("small", 2, 0.95), ("small", 2, 0.97))]
    header, table = grid.tabulate(config, rows)
    assert header == ["epochs", "tiny", "small"]
    assert table[0] == ["1", "0.7000 ± 0.1414", "0.9000 ± 0.0000"]
    assert table[1][0] == "2" and table[1][2] == "0.9600 ± 0.0141"


def test_tables_put_the_source_numbers_beside_and_name_the_checkpoint(tmp_path):
    config = grid.StudyConfig(name="s", archs=("alexnet", "small"), vary="epochs", values=(5, 7),
                              checkpoint="last", study_dir=str(tmp_path))
    rows = [{"arch": a, "value": v, "test_accuracy": acc, "seed": 42, "run_dir": "r"} for a, v, acc in (
        ("alexnet", 5, 0.9), ("small", 5, 0.8), ("alexnet", 7, 0.91), ("small", 7, 0.82))]
    _, table = grid.tabulate(config, rows)
    # The source reported AlexNet at 5 epochs (0.86), not at 7, and never trained `small`.
    assert table == [["5", "0.9000 (source 0.86)", "0.8000"], ["7", "0.9100", "0.8200"]]
    grid.write_tables(config, rows)
    markdown = open(tmp_path / "study.md").read()
    assert "last epoch's checkpoint" in markdown and "0.9000 (source 0.86)" in markdown
    assert "In brackets" in markdown
    grid.write_tables(dataclasses.replace(config, archs=("small",)), [r for r in rows if r["arch"] == "small"])
    assert "In brackets" not in open(tmp_path / "study.md").read()  # no source figure, no note about one
    spec = grid.plan(config)[0]
    assert "--test_checkpoint=last" in grid.train_command(config, spec)


def test_plan_names_one_run_per_cell_and_seed(tmp_path):
    config = grid.StudyConfig(name="p", archs=("tiny", "plain4"), vary="dataset_size", values=(100, 200),
                              repeats=2, seed=7, study_dir=str(tmp_path))
    specs = grid.plan(config)
    assert len(specs) == 8 and len({s.run_dir for s in specs}) == 8
    assert {s.data_dir for s in specs} == {str(tmp_path / "data" / "limit-100"), str(tmp_path / "data" / "limit-200")}
    assert {s.seed for s in specs} == {7, 8}
    with pytest.raises(grid.StudyError, match="needs --convert_flagfile"):
        grid.prepare_data(config)


@pytest.mark.slow
def test_a_two_run_study_tabulates_and_a_rerun_skips_finished_runs(shards, tmp_path):
    data_dir, _ = shards
    flagfile = tmp_path / "train.flags"
    flagfile.write_text("--batch=16\n--lr=0.003\n--precision=float32\n--tflite=none\n--image_size=32,26\n")
    config = grid.StudyConfig(name="two", archs=("tiny",), vary="epochs", values=(1, 2),
                              study_dir=str(tmp_path / "study"), train_flagfile=str(flagfile), data_dir=data_dir)
    lines: list[str] = []
    rows = grid.run_study(config, echo=lines.append)
    assert len(rows) == 2 and all("test accuracy" in line for line in lines)
    for row in rows:  # each cell is that run's own test accuracy
        summary = fileio.read_json(os.path.join(row["run_dir"], "summary.json"))
        assert row["test_accuracy"] == summary["test"]["accuracy"]
        assert fileio.read_json(os.path.join(row["run_dir"], "config.json"))["train"]["epochs"] == row["value"]
    table = list(csv.reader(open(tmp_path / "study" / "study.csv")))
    assert table == [["epochs", "tiny"], ["1", f"{rows[0]['test_accuracy']:.4f}"],
                     ["2", f"{rows[1]['test_accuracy']:.4f}"]]
    assert "| epochs | tiny |" in open(tmp_path / "study" / "study.md").read()
    assert os.path.getsize(tmp_path / "study" / "study.png") > 0
    mtimes = [os.stat(os.path.join(r["run_dir"], "summary.json")).st_mtime_ns for r in rows]
    again: list[str] = []
    assert grid.run_study(config, echo=again.append) == rows
    assert again == ["[1/2] tiny epochs=1 seed 42: done before, skipped",
                     "[2/2] tiny epochs=2 seed 42: done before, skipped"]
    assert [os.stat(os.path.join(r["run_dir"], "summary.json")).st_mtime_ns for r in rows] == mtimes
    # Rerun for the last checkpoint: the finished runs (tested on their best) are evaluated on their last one.
    last = dataclasses.replace(config, checkpoint="last")
    lines = []
    rows_last = grid.run_study(last, echo=lines.append)
    for row in rows_last:
        report = fileio.read_json(os.path.join(row["run_dir"], "report", "test-last", "report.json"))
        assert report["checkpoint"] == "last" and row["checkpoint"] == "last"
        assert row["test_accuracy"] == report["accuracy"]
    assert all("done before, tested on its best checkpoint: evaluated on its last one" in line for line in lines)
    assert "last epoch's checkpoint" in open(tmp_path / "study" / "study.md").read()
    assert [os.stat(os.path.join(r["run_dir"], "summary.json")).st_mtime_ns for r in rows] == mtimes
    reports = [os.stat(os.path.join(r["run_dir"], "report", "test-last", "report.json")).st_mtime_ns
               for r in rows_last]
    assert grid.run_study(last, echo=lines.append) == rows_last  # the last checkpoint's reports are reused
    assert [os.stat(os.path.join(r["run_dir"], "report", "test-last", "report.json")).st_mtime_ns
            for r in rows_last] == reports


def test_every_study_flagfile_parses(tmp_path):
    """Every packaged study flagfile parses by its packaged name from a folder without flagfiles, and every run
    it would start is a valid training configuration (its nested flagfiles found the same way)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        from absl import flags
        from celeba_gender.study import grid
        from celeba_gender.cli import config_flags, flagfiles, study as _  # defines the flags
        FLAGS = flags.FLAGS
        for f in flagfiles.packaged():
            if not f.startswith("studies/") or f.endswith(("_train.flags", "_data.flags")):
                continue
            FLAGS.unparse_flags()
            argv = ["grid.py", f"--flagfile={f}"]
            config_flags.parse(argv)
            config = config_flags.build(grid.StudyConfig, argv=argv)[0]
            print(f, config.name, len(config.archs), config.values)
            for spec in grid.plan(config):
                print("RUN", " ".join(grid.train_command(config, spec)[3:]))
    """)
    root = tmp_path
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "studies/epochs.flags epochs 5 (5, 10, 15)" in done.stdout
    assert "studies/demo_epochs.flags demo_epochs 2 (1, 2, 4)" in done.stdout
    # Every run a study would start is a valid train.py configuration (its flagfile with its arch and value).
    commands = sorted({line[4:] for line in done.stdout.splitlines() if line.startswith("RUN ")})
    build = textwrap.dedent("""
        import sys
        from absl import flags
        from celeba_gender.cli import config_flags, train
        for line in sys.stdin.read().splitlines():
            flags.FLAGS.unparse_flags()
            argv = ["train.py", *line.split()]
            sys.argv = argv
            config_flags.parse(argv)
            config = train.build_config()[0]
            print(config.arch, config.optimizer, config.weight_decay)
    """)
    built = subprocess.run([sys.executable, "-c", build], input="\n".join(commands), capture_output=True, text=True,
                           cwd=root, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    assert len(built.stdout.splitlines()) == len(commands) > 40


def test_a_failed_run_is_explained_in_one_line_from_its_log(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("I0000 00:00:1 cpu_feature_guard.cc:210] noise\nTraceback (most recent call last):\n"
                   "  File x\nValueError: boom\nW0000 00:00:2 more noise\n")
    assert grid._reason(str(log)) == "ValueError: boom"
    log.write_text("train: error: --batch=3 is not a multiple of 2 replicas\nE0000 00:00:3 shutdown\n")
    assert grid._reason(str(log)) == "train: error: --batch=3 is not a multiple of 2 replicas"
    log.write_text("")
    assert grid._reason(str(log)) == "(its log is empty)"
