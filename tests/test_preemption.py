"""What clusters do to a run: SIGTERM (preemption) and Ctrl-C mid-epoch, for one process and for two workers.

A SIGTERM must stop the run after the step in progress with a checkpoint of that exact step, status
"preempted" and exit code 143; the same command then resumes at that step and ends with exactly the epochs
asked: each epoch once in history.csv and in TensorBoard, and exactly epochs x steps optimizer steps.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from celeba_gender.rundir.directory import RunDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

# train.py that sends itself a signal after SIGNAL_AT training calls, and logs every call (with whether a
# signal had arrived before it), so that the test can count the steps taken after the signal.
_SELF_SIGNAL = textwrap.dedent("""
    import os, signal, sys
    from celeba_gender.train import step
    from celeba_gender.cli import train
    calls, original = [], step.TrainStep.train
    def train_steps(self, iterator, steps, stop_vote=0.0, *rest):
        calls.append(steps)
        out = original(self, iterator, steps, stop_vote, *rest)
        print(f"CALL {len(calls)} steps={steps} vote={stop_vote}", flush=True)
        if len(calls) == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGNAL_NAME)
        return out
    step.TrainStep.train = train_steps
    sys.argv[0] = "train.py"
    train.run()
""")


def train_args(data_dir: str, run_dir: str, *extra: str) -> list[str]:
    return ["--arch=tiny", f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--batch=16", "--epochs=3",
            "--precision=float32", "--noprogress", "--evaluate_test=false", "--log_every_steps=4",
            "--tflite=none", *extra]


def event_steps(directory: str, tag: str) -> list[int]:
    steps = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("sig,status,code", [("SIGTERM", "preempted", 143), ("SIGINT", "interrupted", 130)])
def test_a_signal_mid_epoch_checkpoints_the_step_and_the_same_command_resumes_there(shards, tmp_path, sig, status,
                                                                                    code):
    data_dir, manifest = shards
    steps = manifest["splits"]["train"]["count"] // 16
    run_dir = str(tmp_path / "run")
    signal_at = steps + 5  # epoch 2, after 5 of its steps
    script = _SELF_SIGNAL.replace("SIGNAL_AT", str(signal_at)).replace("SIGNAL_NAME", sig)
    stopped = subprocess.run([sys.executable, "-c", script, *train_args(data_dir, run_dir)], capture_output=True,
                             text=True, timeout=300, cwd=ROOT, env=ENV)
    assert stopped.returncode == code, stopped.stderr[-3000:]
    calls = [line for line in stopped.stdout.splitlines() if line.startswith("CALL ")]
    # The signal arrived during call `signal_at`; the next call carried the vote and was the last one.
    assert len(calls) == signal_at + 1 and calls[-1].endswith("vote=1.0" if sig == "SIGTERM" else "vote=1e-06")
    recorded = RunDirectory(run_dir).status()
    assert recorded["status"] == status and recorded["epochs_done"] == 1 and recorded["steps_done_in_epoch"] == 6
    assert recorded["checkpoint"].endswith(f"ckpt-{steps + 6}")
    assert f"train: {status} at epoch 2, step 6" in stopped.stderr and "Traceback" not in stopped.stderr
    reader = tf.train.load_checkpoint(recorded["checkpoint"])
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == steps + 6
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 6
    if sig == "SIGINT":  # the resume does not depend on the signal that stopped the run: SIGTERM's checks it
        return

    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *train_args(data_dir, run_dir)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_dir} at epoch 2, step 6" in resumed.stdout
    history = open(os.path.join(run_dir, "history.csv")).read().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
    latest = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
    assert latest.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3 * steps  # no step twice
    validation = event_steps(os.path.join(run_dir, "validation"), "accuracy")
    assert validation == [steps, 2 * steps, 3 * steps]  # one validation per epoch, on the global-step axis
    assert RunDirectory(run_dir).status()["status"] == "complete"


@pytest.mark.slow
def test_two_workers_stop_at_the_same_step_when_one_is_preempted_and_resume_together(shards, tmp_path):
    data_dir, manifest = shards
    run_dir = str(tmp_path / "mw")
    args = train_args(data_dir, run_dir, "--strategy=multi_worker", "--cache=none")
    launcher = subprocess.Popen([sys.executable, "-m", "celeba_gender.cli.launch_local", "--workers=2", "--",
                                 os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.index")):  # epoch 1 is done
        assert time.time() < deadline and launcher.poll() is None, "no checkpoint after epoch 1"
        time.sleep(0.05)
    # Preempt worker 1 only (as Kubernetes evicts one pod): both must stop after the same step.
    workers = open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split()
    os.kill(int(workers[1]), signal.SIGTERM)
    out, _ = launcher.communicate(timeout=180)
    assert launcher.returncode == 143, out[-3000:]
    stops = sorted(line.split("train: ", 1)[1] for line in out.splitlines() if "train: preempted at epoch" in line)
    assert len(stops) == 2 and stops[0].split(";")[0] == stops[1].split(";")[0], stops  # same epoch and step
    assert RunDirectory(run_dir).status()["status"] == "preempted"

    again = subprocess.run([sys.executable, "-m", "celeba_gender.cli.launch_local", "--workers=2", "--",
                            os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resuming run" in again.stdout
    epochs = [line.split(",")[0] for line in open(os.path.join(run_dir, "history.csv")).read().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
    hashes = re.findall(r"final weights sha256 ([0-9a-f]{16})", again.stdout)
    assert len(hashes) == 2 and len(set(hashes)) == 1  # both workers hold the same model
    assert RunDirectory(run_dir).status()["status"] == "complete"
    assert json.load(open(os.path.join(run_dir, "summary.json")))["workers"] == 2


@pytest.mark.slow
def test_a_second_launch_on_a_running_run_dir_is_refused_and_a_stale_lock_is_taken_over(shards, tmp_path):
    data_dir, _ = shards
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from celeba_gender.core import locks
        with locks.hold({str(run_dir)!r}, "training"):
            print("held", flush=True)
            time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    args = [sys.executable, os.path.join(ROOT, "train.py"), *train_args(data_dir, str(run_dir), "--epochs=1")]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("train: error:")]
    assert len(errors) == 1 and f"{run_dir} is in use" in errors[0] and f"pid {holder.pid}" in errors[0]
    assert not (run_dir / "config.json").exists() and not (run_dir / "status.json").exists()  # nothing written
    holder.kill()  # kill -9: the lock file stays behind, stale
    holder.wait()
    assert (run_dir / ".lock").exists()
    taken = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert "note: took over the lock" in taken.stderr and not (run_dir / ".lock").exists()
    assert RunDirectory(str(run_dir)).status()["status"] == "complete"


def _completed(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _history(run_dir: str) -> list[dict]:
    """history.csv's rows without the columns that measure time (they differ from process to process)."""
    lines = open(os.path.join(run_dir, "history.csv")).read().splitlines()
    timing = {"images_per_sec", "input_wait_fraction", "train_seconds"}
    return [{k: v for k, v in zip(lines[0].split(","), line.split(",")) if k not in timing} for line in lines[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("extra,stops", [
    # At the last step of pass 1 (before its validation: the restart trains no step of epoch 1), then mid pass 2.
    (["--cache=memory", "--augment_on=device", "--mixup=0.2"], ((-1, 1), (9, 0))),
    # Once (a process less), mid pass 2: the other order and augmentation paths.
    (["--cache=none", "--augment_on=host"], ((5, 1),)),
], ids=["memory-cache-device-augmentation-mixup", "no-cache-host-augmentation"])
def test_a_deterministic_run_stopped_and_resumed_ends_with_the_weights_of_the_run_never_stopped(shards, tmp_path,
                                                                                                extra, stops):
    """The same data order, augmentation, mixing, dropout masks and history rows as one process."""
    data_dir, manifest = shards
    steps = manifest["splits"]["train"]["count"] // 16
    args = ["--deterministic", *extra]
    never = str(tmp_path / "never")
    _completed(subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *train_args(data_dir, never, *args)],
                              capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV))
    run_dir, stopped_at = str(tmp_path / "stopped"), 0
    for calls, epochs in stops:  # signal after `calls` + `epochs` x steps calls of this process
        signal_at = calls + epochs * steps
        script = _SELF_SIGNAL.replace("SIGNAL_AT", str(signal_at)).replace("SIGNAL_NAME", "SIGTERM")
        stopped = subprocess.run([sys.executable, "-c", script, *train_args(data_dir, run_dir, *args)],
                                 capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
        assert stopped.returncode == 143, stopped.stderr[-3000:]
        stopped_at += signal_at + 1  # the next call carried the vote
        assert RunDirectory(run_dir).status()["checkpoint"].endswith(f"ckpt-{stopped_at}")
    resumed = _completed(subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                                         *train_args(data_dir, run_dir, *args)],
                                        capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV))
    epoch, step = divmod(stopped_at, steps)
    assert f"resuming run {run_dir} at epoch {epoch + 1}, step {step}" in resumed.stdout
    summaries = [json.load(open(os.path.join(d, "summary.json"))) for d in (never, run_dir)]
    assert summaries[0]["final_weights_sha256"] == summaries[1]["final_weights_sha256"]
    assert _history(run_dir) == _history(never)  # each row covers its whole epoch
