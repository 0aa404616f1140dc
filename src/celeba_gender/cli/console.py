"""What train.py prints: the run header, progress, each epoch's line and the closing summary.

A terminal gets a progress bar that redraws in place; anything else (a cluster's log file, a pipe) gets plain
lines, one per logging window (``--log_every_steps``) and one per epoch, never a carriage return.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from celeba_gender.core import options
from celeba_gender.evaluate import markdown_report
from celeba_gender.train.monitor import Monitor, Window

# Settings shown in the header when they came from the command line, a flagfile or the arch's recipe.
_SOURCES_SHOWN = (options.COMMAND_LINE, options.FLAGFILE, options.RECIPE)


def describe_settings(settings: dict, sources: dict, arch: str) -> list[str]:
    """One line per source: the settings that came from it (defaults are left to flags.txt)."""
    lines = []
    for source in _SOURCES_SHOWN:
        names = [n for n in settings if sources.get(n) == source and n != "arch"]
        if names:
            label = f"{arch} recipe" if source == options.RECIPE else source
            values = ", ".join(f"{n}={options.format_value(settings[n])}" for n in names)
            lines.append(f"  {label}: {values}")
    return lines


def format_header(h: dict) -> str:
    """The lines printed before the first step."""
    where = f"resuming run {h['run_dir']} at epoch {h['epoch'] + 1}, step {h['step']}" if h["resumed_from"] \
        else f"run {h['run_dir']}"
    lines = [where,
             f"{h['arch']}: {h['trainable']:,} trainable / {h['frozen']:,} frozen parameters, input "
             f"{h['image_size'][0]}x{h['image_size'][1]}, {h['replicas']} replica(s) ({h['strategy']}) on "
             f"{', '.join(h['devices'])}, {h['precision']}, batch {h['batch']}, {h['steps_per_epoch']} steps/epoch, "
             f"cache {h['cache']}, augmentation {h['augment_on']}"]
    lines += describe_settings(h["settings"], h["sources"], h["arch"])
    return "\n".join(lines)


def format_window(w: Window) -> str:
    return (f"epoch {w.epoch + 1}/{w.epochs} step {w.step}/{w.steps_per_epoch}: loss {w.loss:.4f} acc "
            f"{w.accuracy:.4f} lr {w.learning_rate:.3g} | {w.images_per_sec:,.0f} img/s, input wait "
            f"{w.input_wait_fraction:.0%}")


def format_epoch(row: dict, epochs: int, improved: bool, best_metric: str = "accuracy") -> str:
    """An epoch's line; the validation balanced accuracy too when it is what picks the best epoch (*best*)."""
    balanced = f" bal acc {row['val_balanced_accuracy']:.4f}" if best_metric == "balanced_accuracy" else ""
    return (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} acc {row['accuracy']:.4f} | val loss "
            f"{row['val_loss']:.4f} acc {row['val_accuracy']:.4f}{balanced} auc {row['val_auc']:.4f} | "
            f"{row['images_per_sec']:,.0f} img/s, input wait {row['input_wait_fraction']:.0%}"
            + ("  *best*" if improved else ""))


class ConsoleMonitor(Monitor):
    """Prints a run's progress to stdout; a progress bar on stderr only when stderr is a terminal."""

    def __init__(self, progress: bool = True, stream=None):
        self.out = stream or sys.stdout
        self.bar_enabled = progress and sys.stderr.isatty()
        self._bar = None
        self._epochs = 0
        self._best_metric = "accuracy"

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.clear()
        print(text, file=self.out, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def started(self, header: dict) -> None:
        self._epochs = header["settings"]["epochs"]
        self._best_metric = header.get("best_metric", "accuracy")
        self._print(format_header(header))

    def window(self, w: Window) -> None:
        if not self.bar_enabled:
            self._print(format_window(w))
            return
        if self._bar is None:
            self._bar = tqdm(total=w.steps_per_epoch, desc=f"epoch {w.epoch + 1}/{w.epochs}", unit="step",
                             leave=False, file=sys.stderr)
        self._bar.update(w.step - self._bar.n)
        self._bar.set_postfix(loss=f"{w.loss:.4f}", acc=f"{w.accuracy:.3f}", lr=f"{w.learning_rate:.2g}",
                              img_s=f"{w.images_per_sec:,.0f}")

    def epoch_done(self, row: dict, improved: bool) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._print(format_epoch(row, self._epochs, improved, self._best_metric))

    def note(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_summary(result: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    if result.get("chief") is False:
        return (f"worker done (final weights sha256 {result['final_weights_sha256'][:16]}): the chief writes the "
                f"summary, the export and the report of {result['run_dir']}")
    metric = result.get("best_metric", "accuracy")  # summaries written before --best_metric: accuracy
    lines = [f"run {result['run_dir']} ({result['arch']}, {result['epochs']} epochs, {result['precision']}, "
             f"{result['replicas']} replica(s))",
             f"best validation {metric.replace('_', ' ')} {result[f'best_validation_{metric}']:.4f}"]
    test = result.get("test")
    if test:
        lines += markdown_report.summary_lines(test)
    if "report" in result:
        lines.append(f"report: {result['report']}/report.md")
    if "export" in result:
        paths = [result["export"][k] for k in ("keras", "saved_model", "tflite") if result["export"].get(k)]
        lines.append(f"exported: {', '.join(paths[:-1])} and {paths[-1]}")
    if result.get("workers", 1) > 1:
        lines.append(f"{result['workers']} workers; final weights sha256 {result['final_weights_sha256'][:16]}")
    lines.append(f"tensorboard --logdir={os.path.dirname(result['run_dir']) or '.'}")
    return "\n".join(lines)
