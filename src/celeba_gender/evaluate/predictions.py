"""What a report is made of: the trained model it evaluates (:func:`load`), a split's predictions
(:func:`predict_split`), and where it reads and writes (:class:`Context`)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from celeba_gender.core.errors import UserError
from celeba_gender.inputs import pipeline
from celeba_gender.inputs.config import DataConfig
from celeba_gender.models import build
from celeba_gender.models.registry import ModelConfig
from celeba_gender.rundir.directory import CHECKPOINT_CHOICES, RunDirectory
from celeba_gender.serve import tta
from celeba_gender.tasks import kinds
from celeba_gender.tasks.base import Task

CHECKPOINTS = CHECKPOINT_CHOICES


class EvaluationError(UserError):
    """A run that cannot be evaluated as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Trained:
    """What evaluation needs of a trained run: its model (with the checkpoint's weights), what its labels are,
    its arch and input size, and its record (config.json)."""

    model: keras.Model
    task: Task
    arch: str
    image_size: tuple[int, int]
    config: dict


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every example of a split, in shard order: probabilities [N, outputs], the task's labels, file names and
    the records' attribute vectors [N, attributes]."""

    probs: np.ndarray
    labels: np.ndarray
    names: list[str]
    attributes: np.ndarray


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a report reads from and writes to: the run, the shards evaluated, their manifest."""

    run: RunDirectory
    data_dir: str
    manifest: dict

    def images(self, trained: Trained, split: str, wanted: set[str], size=None) -> dict[str, np.ndarray]:
        """The decoded images of the named files of a split (a second pass, so predictions keep no images), at
        ``size`` (default: the model's)."""
        found = {}
        if not wanted:
            return found
        for images, _, names, _ in _batches(self, trained, split, 256, tuple(size or trained.image_size)):
            for image, name in zip(images.numpy(), names.numpy()):
                if name.decode() in wanted:
                    found[name.decode()] = image
        return found


def load(run: RunDirectory, checkpoint: str = "best") -> Trained:
    """The run's model with the weights of its best (or last) checkpoint, and what it recorded."""
    if checkpoint not in CHECKPOINTS:
        raise EvaluationError(f"--checkpoint={checkpoint}: choose best or last.")
    config = run.read_config()
    task = kinds.of_run(config)
    model = build.build_model(dataclasses.replace(ModelConfig.from_record(config["model"]), weights="none"))
    path = run.latest_checkpoint(checkpoint)
    if path is None:
        raise EvaluationError(f"No {checkpoint} checkpoint in {run.checkpoint_dir}: has this run finished an epoch?")
    tf.train.Checkpoint(model=model.network).restore(path).expect_partial()
    return Trained(model.network, task, model.spec.name, tuple(model.image_size), {**config, "checkpoint_path": path})


def _batches(context: Context, trained: Trained, split: str, batch: int, size=None):
    info = pipeline.split_info(context.data_dir, split, context.manifest)
    config = DataConfig(context.data_dir, tuple(size or trained.image_size), batch, task=trained.task)
    return pipeline.eval_dataset(config, info, with_metadata=True)


def predict_split(trained: Trained, context: Context, split: str, batch: int = 64,
                  tta_mode: str = tta.NONE) -> Predictions:
    """Every example of ``split``; with a ``tta_mode``, the probabilities averaged over its views (tta.py)."""
    out = ([], [], [], [])
    for images, labels, names, attrs in _batches(context, trained, split, batch):
        out[0].append(tta.predict(trained.model, tf.cast(images, tf.float32), tta_mode))
        out[1].append(labels.numpy())
        out[2].extend(n.decode() for n in names.numpy())
        out[3].append(attrs.numpy())
    return Predictions(np.concatenate(out[0]), np.concatenate(out[1]), out[2], np.concatenate(out[3]))
