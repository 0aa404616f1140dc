"""Run directories: where a run records itself (flags.txt, config.json) and how a rerun finds it again.

Rerunning the same ``train.py`` command after a kill must continue the run, not start a new one, even
though the default run directory has a timestamp in its name. So without ``--run_dir`` we look under
``--runs_root`` for an unfinished run of the same arch whose recorded config equals this one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

import tensorflow as tf

from celeba_gender import storage

CONFIG = "config.json"
FLAGS = "flags.txt"
STATUS = "status.json"
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"


def comparable(config: dict) -> dict:
    """A config as JSON would hold it (tuples as lists), without the keys that may differ between a run and
    its resumption."""
    skip = {"run_dir", "runs_root", "progress"}
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in skip}, default=str))


def find_resumable(runs_root: str, arch: str, config: dict) -> str | None:
    """The newest unfinished run of ``arch`` under ``runs_root`` recorded with this same config."""
    if not tf.io.gfile.isdir(runs_root):
        return None
    candidates = sorted((d for d in tf.io.gfile.listdir(runs_root) if d.rstrip("/").startswith(f"{arch}-")),
                        reverse=True)
    for name in candidates:
        run_dir = os.path.join(runs_root, name.rstrip("/"))
        recorded = storage.read_json(os.path.join(run_dir, CONFIG))
        status = (storage.read_json(os.path.join(run_dir, STATUS)) or {}).get("status")
        if recorded is not None and status != COMPLETE and comparable(recorded) == comparable(config):
            return run_dir
    return None


def new_run_dir(runs_root: str, arch: str) -> str:
    """``runs/<arch>-<YYYYmmdd-HHMMSS>``."""
    return os.path.join(runs_root, f"{arch}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")


def status(run_dir: str) -> dict:
    """The run's status record ({} before the first write)."""
    return storage.read_json(os.path.join(run_dir, STATUS)) or {}


def set_status(run_dir: str, value: str, **extra) -> None:
    storage.write_json(os.path.join(run_dir, STATUS), {"status": value, **extra})


def record(run_dir: str, config, flags_text: str) -> None:
    """Writes config.json and flags.txt (a flagfile that reruns, or resumes, this run) before training."""
    tf.io.gfile.makedirs(run_dir)
    storage.write_json(os.path.join(run_dir, CONFIG), dataclasses.asdict(config))
    lines = [f"--run_dir={run_dir}" if line.startswith("--run_dir=") else line for line in flags_text.splitlines()]
    with tf.io.gfile.GFile(os.path.join(run_dir, FLAGS), "w") as f:
        f.write("\n".join(lines) + "\n")


def read_config(run_dir: str) -> dict:
    """config.json of a run, or an error naming the directory."""
    config = storage.read_json(os.path.join(run_dir, CONFIG))
    if config is None:
        raise FileNotFoundError(f"{run_dir} has no readable {CONFIG}: is it a train.py run directory?")
    return config
