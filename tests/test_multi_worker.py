"""MultiWorkerMirroredStrategy with real worker processes on 127.0.0.1, the tf.data service, gfile URLs."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.train import config as train_config
from celeba_gender.inputs import config as input_config
from celeba_gender.cli import launch_local
from celeba_gender.core import fileio
from celeba_gender.inputs import data_service, pipeline
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.train import distribute, trainer
from test_docs import assert_tensorflow_start_up_lines_at_most_once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_args(data_dir: str, run_dir: str, *extra: str) -> list[str]:
    return ["train.py", "--arch=tiny", f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--batch=32",
            "--precision=float32", "--progress=false", "--augment_on=none", "--dropout=0", "--lr=0.003",
            "--seed=5", "--cache=none", "--tflite=none", *extra]


def test_local_tf_configs_name_every_worker_once():
    configs = launch_local.tf_configs(3)
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_multi_worker_without_a_cluster_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(distribute.DistributeError,
                       match=r"needs TF_CONFIG \(or a Slurm job\).*celeba_gender.cli.launch_local"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.DistributeError, match="not valid JSON"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(train_config.TrainError, match="needs --run_dir"):
        train_config.TrainConfig(arch="tiny", strategy="multi_worker")


@pytest.mark.slow
def test_two_workers_train_identical_weights_and_only_the_chief_writes(shards, tmp_path):
    data_dir, _ = shards
    run_dir = str(tmp_path / "mw")
    cmd = [sys.executable, "-m", "celeba_gender.cli.launch_local", "--workers=2", "--",
           *train_args(data_dir, run_dir, "--epochs=2", "--strategy=multi_worker", "--evaluate_test=false")]
    # TensorFlow's own logging left on: its start-up lines are printed once, not once per worker and import.
    loud = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=loud)
    assert done.returncode == 0, done.stdout[-3000:]
    assert_tensorflow_start_up_lines_at_most_once(done.stderr + done.stdout)
    fingerprints = re.findall(r"\[worker (\d)\] .*final weights sha256 ([0-9a-f]{16})", done.stdout)
    assert {w for w, _ in fingerprints} == {"0", "1"}
    assert len({fp for _, fp in fingerprints}) == 1  # both workers hold the same weights
    assert "2 replica(s) (CollectiveAllReduceStrategy)" in done.stdout
    for sub in ("train", "validation"):  # one writer: the chief's
        assert len(glob.glob(os.path.join(run_dir, sub, "events.out.tfevents.*"))) == 1
    assert len(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))) == 1
    assert os.path.exists(os.path.join(run_dir, "export", "model.keras"))
    summary = fileio.read_json(os.path.join(run_dir, "summary.json"))
    assert summary["workers"] == 2 and summary["replicas"] == 2
    assert not glob.glob(os.path.join(run_dir, "checkpoints", "*worker*"))

    single = subprocess.run([sys.executable, *train_args(data_dir, str(tmp_path / "one"), "--epochs=2",
                                                         "--evaluate_test=false")],
                            capture_output=True, text=True, timeout=180, cwd=ROOT, env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]
    images = next(iter(pipeline.eval_dataset(input_config.DataConfig(data_dir, (64, 52), 64), "validation")))[0]
    p_multi, p_single = (keras.models.load_model(os.path.join(d, "export", "model.keras"))(images).numpy()
                         for d in (run_dir, str(tmp_path / "one")))
    untrained_gap = np.abs(p_single - 0.5).mean()
    # Same global batch and seed; each worker reads its own half of the files, so the batches differ in
    # composition and the two runs agree closely, not bit for bit; the mean gap of their probabilities
    # was 0.03-0.052 measured (the worst in a full `make test`, with the other worker busy).
    assert np.abs(p_multi - p_single).mean() < 0.06
    assert untrained_gap > 0.02


@pytest.mark.slow
def test_a_killed_worker_restarted_with_the_job_resumes_from_the_checkpoint(shards, tmp_path):
    data_dir, _ = shards
    run_dir = str(tmp_path / "mw")
    args = [sys.executable, *train_args(data_dir, run_dir, "--epochs=3", "--strategy=multi_worker",
                                        "--evaluate_test=false")]
    configs = launch_local.tf_configs(2)

    def start(i):
        return subprocess.Popen(args, cwd=ROOT, env={**ENV, "TF_CONFIG": json.dumps(configs[i])},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    chief, worker = start(0), start(1)
    deadline = time.time() + 120
    while not glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.index")):
        assert time.time() < deadline and chief.poll() is None, "no checkpoint after epoch 1"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 2
    assert "a worker of the 2-worker job stopped responding" in out and "start every worker again" in out
    # The cluster manager restarts the job: the same command on every worker.
    chief, worker = start(0), start(1)
    out, _ = chief.communicate(timeout=180)
    worker.communicate(timeout=60)
    assert chief.returncode == 0, out[-3000:]
    assert f"resuming run {run_dir}" in out
    epochs = [line.split(",")[0] for line in open(os.path.join(run_dir, "history.csv")).read().splitlines()[1:]]
    assert epochs[0] == "1" and epochs[-1] == "3" and len(epochs) == len(set(epochs))  # none counted twice
    assert RunDirectory(run_dir).status()["status"] == "complete"


@pytest.mark.slow
def test_two_workers_with_uneven_validation_train_every_attribute_to_the_end(celeba_original, tmp_path):
    # 400 faces kept whole (--nobalance) in 3 shards a split: one worker reads two validation shards, the
    # other one, so with 7 images a worker the second needs fewer evaluation batches and pads with batches of
    # padding, which must have the shape of attribute labels ([7, 40]) for the collective that gathers every
    # worker's predictions.
    from celeba_gender.convert import converter

    data_dir = str(tmp_path / "shards")
    converter.convert(converter.ConvertConfig(celeba_dir=celeba_original, out_dir=data_dir, balance=False, num_shards=3,
                                              workers=1, progress=False))
    halves = [pipeline.split_info(data_dir, "validation", pipeline_id=i, num_pipelines=2) for i in range(2)]
    assert len({pipeline.eval_steps(info, 7) for info in halves}) == 2  # uneven, as the defect needs
    run_dir = str(tmp_path / "mw")
    cmd = [sys.executable, "-m", "celeba_gender.cli.launch_local", "--workers=2", "--",
           *train_args(data_dir, run_dir, "--epochs=2", "--strategy=multi_worker", "--attributes=all"),
           "--batch=14"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert done.returncode == 0, done.stdout[-3000:]
    assert RunDirectory(run_dir).status()["status"] == "complete"
    rows = open(os.path.join(run_dir, "history.csv")).read().splitlines()
    assert len(rows) == 3  # a header and both epochs, each validated
    report = fileio.read_json(os.path.join(run_dir, "report", "report.json"))
    assert report["kind"] == "attributes" and len(report["attributes"]) == 40


@pytest.mark.slow
def test_tf_data_service_on_loopback_serves_exact_passes(shards):
    data_dir, _ = shards
    dispatcher = data_service.start_dispatcher()
    workers = [data_service.start_worker(dispatcher.target) for _ in range(2)]
    assert dispatcher.target.startswith("grpc://localhost:") and len(workers) == 2
    info = pipeline.split_info(data_dir, "train")
    steps = pipeline.steps_per_epoch(info, 32)
    it = iter(pipeline.train_dataset(input_config.DataConfig(data_dir, batch=32, data_service=dispatcher.target)))
    every = set()
    for _ in range(2):
        epoch = []
        for _ in range(steps):
            images, _ = next(it)
            assert images.dtype == tf.uint8 and images.shape[1:] == (218, 178, 3)
            epoch += [hash(image.tobytes()) for image in images.numpy()]
        assert len(epoch) == len(set(epoch)) == steps * 32  # each example at most once a pass
        every |= set(epoch)
    assert len(every) <= info.count
    with pytest.raises(pipeline.DataError, match="cannot be combined with --cache"):
        pipeline.train_dataset(input_config.DataConfig(data_dir, batch=32, data_service=dispatcher.target,
                                                       cache="memory"))
    result = trainer.train(train_config.TrainConfig(arch="tiny", data_dir=data_dir, run_dir="", runs_root="ram://svc",
                                                    batch=32, epochs=1, precision="float32", progress=False,
                                                    tf_data_service=dispatcher.target, evaluate_test=False,
                                                    tflite="none"))
    assert result["best_validation_accuracy"] >= 0
    recorded = fileio.read_json(os.path.join(result["run_dir"], "config.json"))
    assert recorded["train"]["tf_data_service"] == dispatcher.target


def test_data_and_run_directories_can_be_gfile_urls(shards):
    # ram:// is TensorFlow's in-memory filesystem: it goes through the same tf.io.gfile code as gs://.
    data_dir, manifest = shards
    url = "ram://shared/shards"
    tf.io.gfile.makedirs(url)
    for name in os.listdir(data_dir):
        tf.io.gfile.copy(os.path.join(data_dir, name), f"{url}/{name}", overwrite=True)
    result = trainer.train(train_config.TrainConfig(arch="tiny", data_dir=url, run_dir="ram://shared/runs/tiny",
                                                    batch=32, epochs=1, precision="float32", progress=False))
    listing = set(tf.io.gfile.listdir("ram://shared/runs/tiny"))
    assert {"config.json", "flags.txt", "history.csv", "summary.json", "export/", "report/", "checkpoints/"} <= \
        {n if "." in n else f"{n.rstrip('/')}/" for n in listing}
    assert tf.io.gfile.exists("ram://shared/runs/tiny/export/model.keras")
    assert result["test"]["count"] == manifest["splits"]["test"]["count"]
    assert not os.path.exists(os.path.join(ROOT, "ram:"))  # nothing leaked onto the local disk
