"""TensorBoard: scalars, hparams, image grids, figures (PNG bytes: evaluate/figures.py draws them), text,
profiler traces.

Only the chief writes (``enabled=False`` on other workers turns every call into a no-op), so a
multi-worker run has one set of event files.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf



def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """A batch [N, h, w, 3] (uint8, or float in [0, 255]) as one uint8 grid image [1, H, W, 3]."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 255).astype(np.uint8)
    n, h, w, c = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + 2), columns * (w + 2), c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = image
    return grid[None]


class Summaries:
    """TensorBoard event writers for ``train/`` and ``validation/`` under a run directory."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = run_dir
        self._writers = {}
        self._profiling = False

    def _writer(self, split: str):
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(os.path.join(self.run_dir, split))
        return self._writers[split]

    def scalars(self, split: str, step: int, values: dict) -> None:
        """One scalar per key (NaNs are skipped: e.g. AUC of a one-class batch)."""
        if not self.enabled:
            return
        with self._writer(split).as_default():
            for name, value in values.items():
                if value is not None and np.isfinite(value):
                    tf.summary.scalar(name, float(value), step=step)
        self._writer(split).flush()

    def images(self, split: str, name: str, step: int, images: np.ndarray, description: str = "") -> None:
        """A grid of images as one TensorBoard image."""
        if not self.enabled:
            return
        with self._writer(split).as_default():
            tf.summary.image(name, image_grid(images), step=step, description=description)

    def figure(self, split: str, name: str, step: int, png: bytes) -> None:
        """A rendered figure (PNG bytes) as a TensorBoard image."""
        if not self.enabled:
            return
        with self._writer(split).as_default():
            tf.summary.image(name, tf.image.decode_png(png)[None], step=step)
        self._writer(split).flush()

    def text(self, split: str, name: str, step: int, markdown: str) -> None:
        """Markdown text (TensorBoard's Text dashboard renders it)."""
        if not self.enabled:
            return
        with self._writer(split).as_default():
            tf.summary.text(name, markdown, step=step)
        self._writer(split).flush()

    def flush(self) -> None:
        """Writes what the event files hold so far (before a process may be killed)."""
        for writer in self._writers.values():
            writer.flush()

    def hparams(self, hparams: dict, metrics: tuple[str, ...] = ("accuracy", "auc", "loss")) -> None:
        """Records this run's settings for TensorBoard's HParams dashboard (compare runs by them).

        The session is written at the run directory's root; its metrics are the validation scalars.
        """
        if not self.enabled:
            return
        from tensorboard.plugins.hparams import api as hp

        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()}
        with self._writer("").as_default():
            hp.hparams_config(hparams=[hp.HParam(k) for k in clean],
                              metrics=[hp.Metric(m, group="validation", display_name=f"validation {m}")
                                       for m in metrics])
            hp.hparams(clean)
        self._writer("").flush()

    def profile(self, global_step: int, start: int, stop: int) -> None:
        """Starts the TensorFlow profiler at ``start`` and stops it at ``stop`` (global steps)."""
        if not self.enabled or stop <= start:
            return
        if not self._profiling and start <= global_step < stop:
            tf.profiler.experimental.start(os.path.join(self.run_dir, "train"))
            self._profiling = True
        elif self._profiling and global_step >= stop:
            tf.profiler.experimental.stop()
            self._profiling = False

    def close(self) -> None:
        if self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False
        for writer in self._writers.values():
            writer.close()
