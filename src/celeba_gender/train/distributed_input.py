"""The input of one run under a distribution strategy: which files each worker reads, each worker's batch,
how many steps an epoch has, and the distributed datasets built from :mod:`celeba_gender.inputs.pipeline`.

Under MultiWorkerMirroredStrategy every worker has one input pipeline reading its own shard files (worker i
of N takes files i, i+N, ...), and its batch (global batch / workers) is cut into one batch per local
replica. Collectives make every worker wait for the others, so every worker must run the same number of
steps: training takes the smallest worker's full batches, and evaluation pads every worker's batches up to
the largest worker's count (the padding has label -1 and is dropped after prediction).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf


from celeba_gender.shards import shard_dir
from celeba_gender.inputs import pipeline
from celeba_gender.train import distribute
from celeba_gender.inputs.pipeline import DataConfig
from celeba_gender.shards.shard_dir import DataError

SPLITS = ("train", "validation", "test")


def resolve_cache(cache: str, count: int, image_size: tuple[int, int], data_service: str = "") -> str:
    """``auto`` -> ``memory`` when the decoded training split fits comfortably in memory, else ``none``
    (and ``none`` with a tf.data service, whose workers decode every pass)."""
    if cache != "auto":
        return cache
    if data_service:
        return "none"
    available = pipeline.memory_available()
    need = count * image_size[0] * image_size[1] * 3
    return "memory" if available is None or need <= 0.8 * available else "none"


class DistributedInput:
    """The run's datasets and their sizes for a strategy, checked against the manifest once."""

    def __init__(self, config: DataConfig, strategy: tf.distribute.Strategy, image_size: tuple[int, int],
                 manifest: dict | None = None):
        """``config.batch`` is the global batch; ``config.cache`` may be ``auto``; ``config.task`` says what the
        labels are. ``manifest``: the shards' (read from ``config.data_dir`` when not given)."""
        self.strategy, self.image_size = strategy, tuple(image_size)
        self.manifest = manifest or shard_dir.read_manifest(config.data_dir)
        self.workers = distribute.num_workers(strategy)
        replicas = strategy.num_replicas_in_sync
        if config.batch % replicas:
            raise DataError(f"--batch={config.batch} does not split evenly over {replicas} replicas: use a "
                            f"multiple of {replicas}.")
        self.global_batch = config.batch
        self.local_replicas = replicas // self.workers
        self.has_test = bool(self.manifest["splits"].get("test", {}).get("shards"))
        self.infos = {split: [pipeline.split_info(config.data_dir, split, self.manifest, i, self.workers)
                              for i in range(self.workers)]
                      for split in SPLITS[:3 if self.has_test else 2]}
        worker_batch = config.batch // self.workers
        train = self.infos["train"]
        if worker_batch > min(i.count for i in train):
            raise DataError(f"--batch={config.batch} is larger than the training split ({train[0].count:,} "
                            f"examples{' per worker' if self.workers > 1 else ''}): lower --batch.")
        self.steps_per_epoch = min(pipeline.steps_per_epoch(i, worker_batch) for i in train)
        self.max_examples = self.steps_per_epoch * worker_batch if self.workers > 1 else None
        self.eval_steps = {split: max(pipeline.eval_steps(i, worker_batch) for i in self.infos[split])
                           for split in self.infos if split != "train"}
        cache = resolve_cache(config.cache, train[0].count, self.image_size, config.data_service)
        if cache not in ("none", "memory", ""):  # a file prefix: its folder made (or refused) before any work
            pipeline.make_cache_folder(cache)
        self.config = dataclasses.replace(config, batch=worker_batch, image_size=self.image_size, cache=cache)

    def training_class_counts(self) -> tuple[int, ...]:
        """Each class's examples in the whole training split (the manifest's counts)."""
        return self.infos["train"][0].class_counts

    def positive_rates(self, columns: tuple[int, ...]) -> tuple[float, ...]:
        """The share of positives of these attribute columns over the whole training split (every worker gets
        the same)."""
        info = pipeline.split_info(self.config.data_dir, "train", self.manifest, verify_counts=False)
        return pipeline.positive_rates(info, columns)

    @property
    def cache(self) -> str:
        return self.config.cache

    def train(self, host_augment: Callable | None = None, start_step: int = 0):
        """An endless distributed iterator of training batches (one pass = ``steps_per_epoch`` steps), from global
        step ``start_step`` on (a resumed run's: see pipeline.train_dataset). ``host_augment``: see
        augment.host_augment_fn (each worker's calls get its input pipeline's id, ``worker``)."""
        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            worker = ctx.input_pipeline_id
            host = functools.partial(host_augment, worker=worker) if host_augment is not None else None
            return pipeline.train_dataset(self.config, self.infos["train"][worker], host, self.local_replicas,
                                          self.max_examples, start_step)
        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def evaluation(self, split: str):
        """A distributed dataset of padded evaluation batches: every example of ``split`` once."""
        config = dataclasses.replace(self.config, cache="none")

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.eval_dataset(config, self.infos[split][ctx.input_pipeline_id],
                                         pad_to_steps=self.eval_steps[split], replicas=self.local_replicas)
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def sample_batch(self, n: int = 16) -> np.ndarray:
        """The first few training images of this worker's files (before augmentation), e.g. for the TensorBoard
        grid. In file order: a shuffled training pipeline would read its whole shuffle buffer (up to 10,000
        records) and trace the training input a second time for 16 images (2.5 s of a small run)."""
        config = dataclasses.replace(self.config, batch=n)
        batch = next(iter(pipeline.eval_dataset(config, self.infos["train"][0])))
        return batch[0].numpy()
