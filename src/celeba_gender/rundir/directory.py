"""Run directories: where a run records itself (flags.txt, config.json, status.json) and how a rerun finds it.

Rerunning the same ``train.py`` command after a stop must continue the run, not start a new one, even
though the default run directory has a timestamp in its name. So without ``--run_dir`` we look under
``--runs_root`` for an unfinished run of the same arch whose recorded settings equal this one's.

config.json: ``{"train": every setting, "model": how the model is built (archs.ModelConfig, with the image size
and weights resolved), "outputs": the names of the model's outputs (classes, or attributes), "sources": where
each setting came from, and "changes": settings changed mid-run with --allow_changed_settings}``. Evaluation
rebuilds the model from ``model``; resumption compares ``train``, and an unfinished run named by ``--run_dir``
refuses other settings unless allowed (trainer.train).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import time

import tensorflow as tf

from celeba_gender.core import options, fileio
from celeba_gender.core.errors import UserError
from celeba_gender.core.invocation import command

CONFIG = "config.json"
FLAGS = "flags.txt"
STATUS = "status.json"
SUMMARY = "summary.json"
TEST_METRICS = "test_metrics.json"
CHECKPOINTS = "checkpoints"
# status.json's "status": RUNNING while a process trains; COMPLETE at the end; PREEMPTED after a SIGTERM and
# INTERRUPTED after Ctrl-C (a checkpoint of the step reached was saved; rerun to resume); FAILED when a run
# stopped on an error (its message is in "error").
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
PREEMPTED, INTERRUPTED = "preempted", "interrupted"
# Settings that may differ between a run and its resumption: where it is, how it reports, what it does once
# trained (test_checkpoint: which checkpoint is tested at the end), and the opt-in to change the others.
_NOT_COMPARED = {"run_dir", "runs_root", "progress", "log_every_steps", "evaluate_test", "test_checkpoint",
                 "allow_changed_settings", "tflite"}


class NotARunError(UserError, FileNotFoundError):
    """A directory that is not a train.py run directory."""


def comparable(settings: dict) -> dict:
    """Settings as JSON holds them (tuples as lists), without those that may differ between a run and its
    resumption."""
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in _NOT_COMPARED}, default=str))


def _flat(settings: dict) -> dict:
    """Nested settings (``augment``) flattened: option names are unique across nested configs."""
    out = {}
    for k, v in settings.items():
        out.update(_flat(v) if isinstance(v, dict) else {k: v})
    return out


def changed_settings(recorded: dict, settings: dict) -> dict[str, list]:
    """{option: [recorded value, new value]} of the compared settings that differ, in declaration order."""
    old, new = _flat(comparable(recorded)), _flat(comparable(settings))
    names = [*new, *(k for k in old if k not in new)]
    return {k: [old.get(k), new.get(k)] for k in names if old.get(k) != new.get(k)}


def describe_changes(changes: dict[str, list]) -> str:
    """``lr=0.003 (now 0.01), epochs=1 (now 2)``."""
    return ", ".join(f"{k}={options.format_value(old)} (now {options.format_value(new)})"
                     for k, (old, new) in changes.items())


def recorded_settings(run_dir: str) -> dict | None:
    """The training settings a run recorded in config.json, or None."""
    recorded = fileio.read_json(fileio.join(run_dir, CONFIG))
    return recorded.get("train") if isinstance(recorded, dict) else None


def find_resumable(runs_root: str, arch: str, settings: dict) -> str | None:
    """The newest unfinished run of ``arch`` under ``runs_root`` recorded with these same settings."""
    if not tf.io.gfile.isdir(runs_root):
        return None
    candidates = sorted((d.rstrip("/") for d in tf.io.gfile.listdir(runs_root) if d.startswith(f"{arch}-")),
                        reverse=True)
    for name in candidates:
        run_dir = fileio.join(runs_root, name)
        recorded = recorded_settings(run_dir)
        if recorded is not None and status(run_dir).get("status") != COMPLETE \
                and comparable(recorded) == comparable(settings):
            return run_dir
    return None


def new_run_dir(runs_root: str, arch: str) -> str:
    """``runs/<arch>-<YYYYmmdd-HHMMSS>``."""
    return fileio.join(runs_root, f"{arch}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")


def status(run_dir: str) -> dict:
    """The run's status record ({} before the first write)."""
    return fileio.read_json(fileio.join(run_dir, STATUS)) or {}


def set_status(run_dir: str, value: str, **extra) -> None:
    """Writes status.json: the status, when, by which host and process, and ``extra`` (e.g. error=...)."""
    fileio.write_json(fileio.join(run_dir, STATUS), {
        "status": value, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
        "pid": os.getpid(), **extra})


def record(run_dir: str, config, model: dict, outputs: list[str], sources: dict | None = None,
           changes: dict[str, list] | None = None) -> None:
    """Writes config.json and flags.txt before training.

    ``changes`` ({option: [recorded, new]}): settings an unfinished run goes on with although it recorded others
    (``--allow_changed_settings``); config.json keeps each such change, with its time, under ``changes``.

    flags.txt holds every setting, grouped by where it came from. ``python train.py --flagfile=RUN/flags.txt``
    resumes the run while it is unfinished, and trains a new run with the same settings once it is complete
    (the run directory is pinned in it only when it was given explicitly; a pinned complete run is left as
    it is).
    """
    fileio.makedirs(run_dir)
    settings = dataclasses.asdict(config)
    previous = fileio.read_json(fileio.join(run_dir, CONFIG))
    history = list(previous.get("changes", [])) if isinstance(previous, dict) else []
    if changes:
        history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": changes})
    fileio.write_json(fileio.join(run_dir, CONFIG), {"train": settings, "model": model, "outputs": list(outputs),
                                                       "sources": sources or {},
                                                       **({"changes": history} if history else {})})
    pinned = bool(config.run_dir) and (sources or {}).get("run_dir", options.COMMAND_LINE) != options.DEFAULT
    shown = config if pinned else dataclasses.replace(config, run_dir="")
    if getattr(config, "allow_changed_settings", False):
        # A one-time permission: the file resumes the run with the settings it now has, and allows no other.
        shown = dataclasses.replace(shown, allow_changed_settings=False)
        sources = {**sources, "allow_changed_settings": options.DEFAULT} if sources else sources
    header = (f"Settings of the run in {run_dir}, written by {command('train')}.\n"
              f"{command('train')} --flagfile=<this file> resumes that run while it is unfinished and, once it is\n"
              "complete, trains a new run with the same settings" + (" (this file pins --run_dir: remove it for "
                                                                     "that)" if pinned else "") + ".")
    fileio.write_text(fileio.join(run_dir, FLAGS), options.as_flagfile(shown, sources, header))


def read_config(run_dir: str) -> dict:
    """config.json of a run, or an error naming the directory."""
    config = fileio.read_json(fileio.join(run_dir, CONFIG))
    if not isinstance(config, dict) or "model" not in config:
        raise NotARunError(f"{run_dir} has no readable {CONFIG}: is it a training run's directory (of this "
                                "version)?")
    return config


def checkpoint_dir(run_dir: str) -> str:
    """Where a run's checkpoints are: ``RUN/checkpoints`` (the best one in ``best/`` inside it)."""
    return fileio.join(run_dir, CHECKPOINTS)


def latest_checkpoint(run_dir: str, which: str = "last") -> str | None:
    """The path of a run's ``last`` or ``best`` checkpoint, None when there is none."""
    folder = checkpoint_dir(run_dir)
    return tf.train.latest_checkpoint(fileio.join(folder, "best") if which == "best" else folder)
