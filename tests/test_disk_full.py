"""A full disk while a run writes its checkpoints, its export or its report: one line saying what was being
written and that finished work is intact, exit code 2, status "failed"; the same command, once there is
space again, completes the run with each epoch once.

The disk is not filled: the write is made to fail with the error the OS (or TensorFlow's file system) raises.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from celeba_gender.core import fileio
from celeba_gender.rundir.directory import RunDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

# train.py whose chosen write site fails once with "No space left on device".
_FULL = textwrap.dedent("""
    import errno, sys
    import tensorflow as tf
    import keras
    from celeba_gender.core import fileio
    from celeba_gender.cli import train
    calls = []
    def full(original, nth):
        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == nth:
                if SITE == "checkpoint":  # TensorFlow's C++ file system reports it in its own error type
                    raise tf.errors.ResourceExhaustedError(None, None, "write failed: No space left on device")
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)
        return failing
    SITE = sys.argv.pop(1)
    if SITE == "checkpoint":  # the second save: epoch 1's latest, after its best (either order was a bug once)
        tf.train.CheckpointManager.save = full(tf.train.CheckpointManager.save, 2)
    elif SITE == "export":
        keras.Model.save = full(keras.Model.save, 1)
    else:  # the report's report.json
        original = fileio.write_json
        def write_json(path, value):
            if path.endswith("report.json"):
                calls.append(1)
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(path, value)
        fileio.write_json = write_json
    sys.argv[0] = "train.py"
    train.run()
""")


@pytest.mark.slow
def test_a_full_disk_at_each_write_ends_in_one_line_and_the_rerun_goes_on(shards, tmp_path):
    """One run meets a full disk at each kind of write in turn, as a user who frees too little space would: while
    checkpointing epoch 1, then (rerun) while exporting, then (rerun) while writing the test report. Each stop is
    one line naming what was being written; the last rerun, with space, completes the run with each epoch once."""
    data_dir, _ = shards
    run_dir = str(tmp_path / "run")
    args = ["--arch=tiny", f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--batch=16", "--epochs=2",
            "--precision=float32", "--noprogress", "--log_every_steps=100"]
    for site, what in (("checkpoint", "writing checkpoint"), ("export", "writing the export"),
                       ("report", "writing the evaluation report")):
        failed = subprocess.run([sys.executable, "-c", _FULL, site, *args], capture_output=True, text=True,
                                cwd=ROOT, timeout=300, env=ENV)
        assert failed.returncode == 2, (site, failed.stderr[-3000:])
        errors = [line for line in failed.stderr.splitlines() if line.startswith("train: error:")]
        assert len(errors) == 1 and "The disk is full: " + what in errors[0], (site, failed.stderr[-3000:])
        assert "Traceback" not in failed.stderr
        assert "intact" in errors[0] and "run the same command again" in errors[0]
        status = RunDirectory(run_dir).status()
        assert status["status"] == "failed" and "disk is full" in status["error"]

    again = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True,
                           text=True, cwd=ROOT, timeout=300, env=ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert RunDirectory(run_dir).status()["status"] == "complete"
    epochs = [line.split(",")[0] for line in open(os.path.join(run_dir, "history.csv")).read().splitlines()[1:]]
    assert epochs == ["1", "2"]
    for name in ("export/model.keras", "export/model.tflite", "report/report.json", "summary.json",
                 "test_metrics.json"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert fileio.read_json(os.path.join(run_dir, "summary.json"))["checkpoint"] == "best"  # none was lost


def test_the_message_names_the_space_needed_and_other_errors_pass_through(tmp_path):
    with pytest.raises(fileio.DiskFullError, match=r"writing shard x in .* MB free, about 3 MB needed\)"):
        with fileio.disk_space_for("shard x", str(tmp_path / "not" / "yet"), need_bytes=3 << 20):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with fileio.disk_space_for("shard x", str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied")
