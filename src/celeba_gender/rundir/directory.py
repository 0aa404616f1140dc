"""A run directory: what one training run holds, and the one object that reads and writes it.

    RUN/flags.txt       every setting, as a flagfile that reruns (or resumes) the run
    RUN/config.json     {"train": every setting, "model": how the model is built, "task": what the labels are,
                         "sources": where each setting came from, "changes": settings changed mid-run}
    RUN/status.json     running | complete | preempted | interrupted | failed, when, by which process
    RUN/.lock           the process that trains in it (core.locks)
    RUN/history.csv     one row per epoch (rundir.history)
    RUN/checkpoints/    the latest few, and best/
    RUN/train/, RUN/validation/, RUN/evaluation_*/   TensorBoard events (rundir.tensorboard)
    RUN/export/         model.keras, labels.json, saved_model/
    RUN/report/         the test evaluation; report/<split>-<checkpoint>/ for others
    RUN/summary.json, RUN/test_metrics.json           what the run ended with

Rerunning the same ``train.py`` command after a stop must continue the run, not start a new one, even though the
default run directory has a timestamp in its name: :func:`choose` finds the unfinished run of the same arch whose
recorded settings equal these. An unfinished run named by ``--run_dir`` goes on with the settings it recorded
(:meth:`RunDirectory.check_settings`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import time
from collections.abc import Iterator

from celeba_gender.core import fileio, locks, options
from celeba_gender.core.errors import UserError
from celeba_gender.rundir import history
from celeba_gender.core.invocation import command

CONFIG, FLAGS, STATUS = "config.json", "flags.txt", "status.json"
SUMMARY, TEST_METRICS = "summary.json", "test_metrics.json"
CHECKPOINTS, EXPORT, REPORT = "checkpoints", "export", "report"
CHECKPOINT_CHOICES = ("best", "last")  # the best validation figure's checkpoint, or the latest
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


class ChangedSettingsError(UserError):
    """An unfinished run asked to go on with other settings than it recorded."""


class StoppedAt(Exception):
    """A run stopped on request at a step (train.stopping.Stopped is one): what status.json records of it."""

    reason: str = PREEMPTED
    epoch: int | None = None
    step: int | None = None
    checkpoint: str | None = None


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


class RunDirectory:
    """One run's directory (see the module docstring). ``writer``: this process writes its records (the chief
    of a multi-worker job; the others only read)."""

    def __init__(self, path: str, writer: bool = True):
        self.path, self.writer = path, writer

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    def file(self, *names: str) -> str:
        """A path inside the run directory."""
        return fileio.join(self.path, *names)

    # --- what it holds ----------------------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> str:
        """``RUN/checkpoints`` (the best one in ``best/`` inside it)."""
        return self.file(CHECKPOINTS)

    @property
    def export_dir(self) -> str:
        return self.file(EXPORT)

    @property
    def history_path(self) -> str:
        return self.file(history.HISTORY)

    def report_dir(self, split: str = "test", checkpoint: str = "best") -> str:
        """``RUN/report`` for the default (test, best); ``RUN/report/<split>-<checkpoint>`` otherwise."""
        base = self.file(REPORT)
        return base if (split, checkpoint) == ("test", "best") else fileio.join(base, f"{split}-{checkpoint}")

    def latest_checkpoint(self, which: str = "last") -> str | None:
        """The path of the run's ``last`` or ``best`` checkpoint, None when there is none."""
        import tensorflow as tf

        folder = self.checkpoint_dir
        return tf.train.latest_checkpoint(fileio.join(folder, "best") if which == "best" else folder)

    # --- its record ---------------------------------------------------------------------------------------------

    def read_config(self) -> dict:
        """config.json, or an error naming the directory."""
        config = fileio.read_json(self.file(CONFIG))
        if not isinstance(config, dict) or "model" not in config:
            raise NotARunError(f"{self.path} has no readable {CONFIG}: is it a train.py run directory (of this "
                               "version)?")
        return config

    def recorded_settings(self) -> dict | None:
        """The training settings the run recorded in config.json, or None."""
        recorded = fileio.read_json(self.file(CONFIG))
        return recorded.get("train") if isinstance(recorded, dict) else None

    def check_settings(self, settings: dict, allow_changes: bool = False) -> dict[str, list]:
        """The settings changed since the run recorded its own ({} for a new run); ChangedSettingsError naming
        them unless ``allow_changes``. Other settings would change an unfinished run's schedule mid-run and
        overwrite its record."""
        recorded = self.recorded_settings()
        changes = changed_settings(recorded, settings) if recorded is not None else {}
        if changes and not allow_changes:
            raise ChangedSettingsError(
                f"{self.path} holds an unfinished run recorded with other settings: {describe_changes(changes)}. "
                f"Resume it with its own ({command('train')} --flagfile={self.file(FLAGS)} --run_dir={self.path}), "
                "give another --run_dir for a new run, or add --allow_changed_settings to go on with these.")
        return changes

    def record(self, config, recorded: dict, sources: dict | None = None, changes: dict | None = None) -> None:
        """Writes config.json (``recorded``: its "model" and "task" entries, beside the settings) and flags.txt
        before training. A resumption with the settings already recorded rewrites neither, so the first launch's
        sources stay; ``changes`` ({option: [recorded, new]}, ``--allow_changed_settings``) are kept, with their
        time, under "changes".

        flags.txt holds every setting, grouped by where it came from. ``python train.py --flagfile=RUN/flags.txt``
        resumes the run while it is unfinished, and trains a new run with the same settings once it is complete
        (the run directory is pinned in it only when it was given explicitly).
        """
        previous = fileio.read_json(self.file(CONFIG))
        if isinstance(previous, dict) and not changes and self.recorded_settings() is not None:
            return
        fileio.makedirs(self.path)
        past = list(previous.get("changes", [])) if isinstance(previous, dict) else []
        if changes:
            past.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": changes})
        fileio.write_json(self.file(CONFIG), {"train": dataclasses.asdict(config), **recorded,
                                              "sources": sources or {}, **({"changes": past} if past else {})})
        fileio.write_text(self.file(FLAGS), _flagfile(config, sources, self.path))

    # --- its status -------------------------------------------------------------------------------------------

    def status(self) -> dict:
        """The status record ({} before the first write)."""
        return fileio.read_json(self.file(STATUS)) or {}

    @property
    def complete(self) -> bool:
        return self.status().get("status") == COMPLETE

    def set_status(self, value: str, **extra) -> None:
        """Writes status.json: the status, when, by which host and process, and ``extra`` (e.g. error=...)."""
        if self.writer:
            fileio.write_json(self.file(STATUS), {
                "status": value, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
                "pid": os.getpid(), **extra})

    @contextlib.contextmanager
    def running(self) -> Iterator[RunDirectory]:
        """Status ``running`` for the block, then how it ended: a stop on request (StoppedAt: its reason, epoch,
        step and checkpoint) or an error (``failed``, with it). The block records ``complete`` itself."""
        self.set_status(RUNNING)
        try:
            yield self
        except StoppedAt as stop:
            self.set_status(stop.reason, epochs_done=stop.epoch, steps_done_in_epoch=stop.step,
                            checkpoint=stop.checkpoint)
            raise
        except BaseException as e:
            self.set_status(FAILED, error=f"{type(e).__name__}: {e}"[:2000])
            raise

    def lock(self, purpose: str = "training", fix: str = "wait for it to finish, or give this run another "
             "--run_dir"):
        """The run's lock (a second launch stops at once, before writing anything); none for a process that
        does not write (the other workers of a multi-worker job share the chief's directory)."""
        return locks.hold(self.path, purpose, fix) if self.writer else contextlib.nullcontext()

    # --- what it ended with -----------------------------------------------------------------------------------

    def append_history(self, row: dict) -> None:
        """One epoch's row of history.csv (by the writer)."""
        if self.writer:
            history.append(self.history_path, row)

    def trim_history(self, epochs_done: int) -> None:
        """Drops history.csv's rows of epochs the restored checkpoint does not cover."""
        if self.writer:
            history.trim(self.history_path, epochs_done)

    def summary(self) -> dict:
        """summary.json ({} when the run has none)."""
        return fileio.read_json(self.file(SUMMARY)) or {}

    def finish(self, summary: dict) -> None:
        """Writes summary.json (and test_metrics.json, when tested) and marks the run complete."""
        if "test" in summary:
            fileio.write_json(self.file(TEST_METRICS), summary["test"])
        fileio.write_json(self.file(SUMMARY), summary)
        self.set_status(COMPLETE)


def _flagfile(config, sources: dict | None, run_dir: str) -> str:
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
    return options.as_flagfile(shown, sources, header)


def choose(runs_root: str, arch: str, settings: dict, run_dir: str = "", writer: bool = True) -> RunDirectory:
    """The run's directory: ``run_dir`` when given, else the newest unfinished run of ``arch`` under
    ``runs_root`` recorded with these same settings (so a rerun resumes it), else a new
    ``runs_root/<arch>-<YYYYmmdd-HHMMSS>``."""
    if run_dir:
        return RunDirectory(run_dir, writer)
    for candidate in _runs_of(runs_root, arch):
        recorded = candidate.recorded_settings()
        if recorded is not None and not candidate.complete and comparable(recorded) == comparable(settings):
            return RunDirectory(candidate.path, writer)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RunDirectory(fileio.join(runs_root, f"{arch}-{stamp}"), writer)


def _runs_of(runs_root: str, arch: str) -> list[RunDirectory]:
    """The run directories of ``arch`` under ``runs_root``, newest first."""
    import tensorflow as tf  # listdir of local paths and URLs alike

    if not tf.io.gfile.isdir(runs_root):
        return []
    names = sorted((d.rstrip("/") for d in tf.io.gfile.listdir(runs_root) if d.startswith(f"{arch}-")),
                   reverse=True)
    return [RunDirectory(fileio.join(runs_root, n), writer=False) for n in names]
