"""tf.data: the converter's shards -> batches of (uint8 images, int32 labels), for training and evaluation.

Two entry points built from shared stages: :func:`train_dataset` (shuffled, exact passes, repeated) and
:func:`eval_dataset` (every example once, in shard order). Order of the stages (each step's place matters):

    shard files (in a new order each pass, training) -> parallel interleave of TFRecordDataset
    with a cache:    -> parse + decode (a batch per call) -> unbatch -> cache (decoded uint8: later epochs
                        decode nothing) -> shuffle -> batch
    without a cache: -> shuffle (serialised records) -> batch -> parse + decode (a batch per call)
    -> [host augmentation] -> [evaluation padding] -> per-replica rebatch -> prefetch

Training passes are numbered, and each pass's order is drawn from (seed, pass number) alone, so a pipeline
started at any global step (a resumed run) continues the order of one that never stopped: it starts at that
step's pass and skips the batches of it already trained (before decoding, without a cache). With a cache the
cache is filled in pass 0's file order whichever pass fills it, and later passes reshuffle the cached examples.

Parsing keeps only what is needed; decoding is :mod:`celeba_gender.inputs.decode`'s one rule. The pipeline knows
nothing about models: the size comes from the caller (who asks the arch registry) and images stay uint8 (each
arch's preprocessing runs inside the model). Training batches are formed within each pass, so an epoch of
``steps_per_epoch`` batches is exactly one pass over this pipeline's examples (the last partial batch dropped).
Which files each worker reads, and how many steps every worker runs, is
:mod:`celeba_gender.train.distributed_input`'s business.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from celeba_gender.core import fileio

from celeba_gender.shards import shard_dir
from celeba_gender.shards import schema
from celeba_gender.inputs.config import DataConfig
from celeba_gender.tasks.classification import Classification
from celeba_gender.inputs.decode import decode_image
from celeba_gender.shards.shard_dir import DataError

AUTOTUNE = tf.data.AUTOTUNE
_DECODE_BATCH = 64  # images decoded per map call before a cache
CACHES = ("none", "memory")  # or a file path


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What the manifest says about one split, and what one input pipeline reads of it."""

    split: str
    files: tuple[str, ...]  # this pipeline's shard files (all of them without an input context)
    records: tuple[int, ...]  # records per file
    sha256: tuple[str, ...]  # checksum per file: what a file cache of them is keyed by
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]  # over the whole split
    num_attributes: int
    stored_size: tuple[int, int] | None  # (height, width) when every stored image has it

    @property
    def count(self) -> int:
        """Examples this pipeline reads."""
        return sum(self.records)


def split_info(data_dir: str, split: str, manifest: dict | None = None, pipeline_id: int = 0,
               num_pipelines: int = 1, verify_counts: bool = True) -> SplitInfo:
    """Reads and checks what one pipeline of ``num_pipelines`` reads of a split; fails with a DataError."""
    manifest = manifest or shard_dir.read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise DataError(f"{data_dir} has no {split!r} split (it has {', '.join(manifest['splits'])}).")
    info = manifest["splits"][split]
    shards = info["shards"]
    if not shards:
        raise DataError(f"The {split} split of {data_dir} is empty: convert with more images or other options.")
    shard_dir.check_shards(data_dir, shards, verify_counts)
    if num_pipelines > 1:
        if len(shards) < num_pipelines:
            raise DataError(f"The {split} split has {len(shards)} shard files for {num_pipelines} input pipelines: "
                            f"each needs its own files. Convert again with --num_shards={num_pipelines} or more.")
        shards = shards[pipeline_id::num_pipelines]  # the files Dataset.shard(n, i) would give this pipeline
    class_names = tuple(manifest["class_names"])
    return SplitInfo(split=split, files=tuple(fileio.join(data_dir, s["file"]) for s in shards),
                     records=tuple(s["records"] for s in shards), sha256=tuple(s["sha256"] for s in shards),
                     class_names=class_names, class_counts=tuple(info["class_counts"][c] for c in class_names),
                     num_attributes=len(manifest["attribute_names"]), stored_size=shard_dir.stored_size(manifest))


def positive_rates(info: SplitInfo, attributes: tuple[int, ...]) -> tuple[float, ...]:
    """The share of examples with each of ``attributes`` present, over ``info``'s files (one pass that parses
    only the attribute vectors: seconds for CelebA's training split)."""
    def vectors(serialized):
        return schema.parse_example(serialized, info.num_attributes, keys=(schema.ATTRIBUTES,))[schema.ATTRIBUTES]

    ds = _records(info, shuffle_files=False, seed=None, deterministic=False).batch(4096).map(vectors)
    totals, count = np.zeros(len(attributes)), 0
    for batch in ds:
        chosen = batch.numpy()[:, list(attributes)]
        totals += chosen.sum(axis=0)
        count += len(chosen)
    return tuple(float(t / max(count, 1)) for t in totals)


def memory_available() -> int | None:
    """Bytes of memory available to new allocations (Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    except OSError:
        return None
    return fields.get("MemAvailable")


def check_memory_cache(count: int, image_size: tuple[int, int]) -> None:
    """Refuses a memory cache that cannot fit, before it fills the machine's memory half-way."""
    need = count * image_size[0] * image_size[1] * 3
    available = memory_available()
    if available is not None and need > 0.8 * available:
        raise DataError(f"--cache=memory needs {need / 2**30:.1f} GiB for {count:,} decoded images of "
                        f"{image_size[0]}x{image_size[1]} but {available / 2**30:.1f} GiB is available. Use "
                        "--cache=<a file path on a fast disk>, --cache=none, or a smaller --image_size.")


def cache_file(prefix: str, info: SplitInfo, size: tuple[int, int], max_examples: int | None, labels: list) -> str:
    """The file cache of exactly these decoded examples: ``<prefix>-<split>-<HxW>-<key>``, where the key is a
    checksum of everything that shapes a cached element: the files (their sha256), the size, the example limit,
    and what the labels are (``labels``: the task's cache key, e.g. which attribute columns in what order). So a
    cache of other data, another size, another worker's files or other labels is never read back as this one."""
    key = hashlib.sha256(json.dumps([info.sha256, list(size), max_examples, labels]).encode()).hexdigest()[:16]
    return f"{prefix}-{info.split}-{size[0]}x{size[1]}-{key}"


def make_cache_folder(prefix: str) -> None:
    """Creates the folder of a file cache prefix (tf.data would fail in the middle of the first epoch without
    it); a DataError when it cannot be made."""
    folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    try:
        if not folder or tf.io.gfile.isdir(folder):  # local or a URL (a bucket's root is one)
            return
        fileio.makedirs(folder)
    except (OSError, tf.errors.OpError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
        raise DataError(f"--cache={prefix}: cannot create its folder {folder} ({reason}); name a prefix in a "
                        "folder you can write to.") from None


# --- shared stages -------------------------------------------------------------------------------------------

def _size(config: DataConfig, info: SplitInfo) -> tuple[int, int]:
    size = config.image_size or info.stored_size
    if size is None:
        raise DataError(f"{config.data_dir} holds images of several sizes; pass image_size to resize them.")
    return tuple(size)


def _records(info: SplitInfo, shuffle_files: bool, seed: tf.Tensor | None, deterministic: bool) -> tf.data.Dataset:
    """The serialised records of ``info``'s files, interleaved; with ``shuffle_files`` the files in the order a
    [2] stateless ``seed`` draws."""
    files = tf.constant(list(info.files))
    if shuffle_files:
        files = tf.gather(files, tf.argsort(tf.random.stateless_uniform([len(info.files)], seed=seed)))
    files = tf.data.Dataset.from_tensor_slices(files)
    return files.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                            cycle_length=min(len(info.files), 16), block_length=1,
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _task(config: DataConfig, info: SplitInfo):
    """The config's task, else the class label the shards were converted for."""
    return config.task or Classification(info.class_names)


def _decoder(info: SplitInfo, size: tuple[int, int], task, with_metadata: bool = False) -> Callable:
    """A map function: a batch of serialised records -> (images, labels[, filenames, attributes]).

    The labels are what ``task`` makes of each record (tasks.base.Task.labels): class ids int32 [B], or
    attribute values float32 [B, K]."""
    image_spec = tf.TensorSpec((*size, 3), tf.uint8)
    keys = tuple(dict.fromkeys((schema.ENCODED, *task.record_keys)))
    if with_metadata:
        keys = tuple(dict.fromkeys((*keys, schema.FILENAME, schema.ATTRIBUTES)))

    @tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: tracing it as written
    def decode_batch(serialized):  # saves AutoGraph's conversion (~1.5 s of every process that reads shards)
        # One map call per batch, decoding its images in a loop, costs far less tf.data overhead than one
        # call per image: on 2 cores this reached the decode ceiling where per-image maps stayed at ~75%.
        ex = schema.parse_example(serialized, info.num_attributes, keys=keys)
        images = tf.map_fn(lambda e: decode_image(e, size, info.stored_size), ex[schema.ENCODED],
                           fn_output_signature=image_spec, parallel_iterations=1)
        labels = task.labels(ex)
        if with_metadata:
            return images, labels, ex[schema.FILENAME], tf.cast(ex[schema.ATTRIBUTES], tf.int32)
        return images, labels

    return decode_batch


def _decoded_one_by_one(ds: tf.data.Dataset, decode_batch: Callable, deterministic: bool) -> tf.data.Dataset:
    """Decoded examples one by one (so that a cache can be reshuffled every epoch, or a service can batch)."""
    ds = ds.batch(_DECODE_BATCH).map(decode_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.unbatch()


def _finish(ds: tf.data.Dataset, batch: int, replicas: int, deterministic: bool, repeat: bool) -> tf.data.Dataset:
    if replicas > 1:
        if batch % replicas:
            raise DataError(f"A batch of {batch} cannot be cut into {replicas} equal per-replica batches.")
        # Each step then consumes one whole batch, so passes stay aligned with epochs.
        ds = ds.rebatch(batch // replicas)
    if repeat:
        ds = ds.repeat()
    options = tf.data.Options()
    options.deterministic = deterministic
    # Files are split across workers by train/distributed_input.py; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


# --- entry points --------------------------------------------------------------------------------------------

def train_dataset(config: DataConfig, info: SplitInfo | None = None, host_augment: Callable | None = None,
                  replicas: int = 1, max_examples: int | None = None, start_step: int = 0) -> tf.data.Dataset:
    """Endless training batches ``(uint8 images [B, h, w, 3], labels)`` (the labels of ``config.task``: int32
    class ids [B] by default): shuffled every pass, ``drop_remainder``; take :func:`steps_per_epoch`
    batches per epoch.

    ``start_step``: the global step (batches of this pipeline) to start at, e.g. a restored checkpoint's: the
    batches are then those a pipeline started at 0 yields from that step on (with ``config.deterministic``
    exactly; without it, parallel stages may reorder a pass a little), except with a tf.data service, which
    starts a pass in a new order. ``host_augment(images, labels, *rest, step=global_step)`` is mapped after
    batching (``--augment_on=host``; see augment.host_augment_fn). ``replicas``: the local replicas this
    pipeline feeds (each batch is cut into that many). ``max_examples``: read only this many examples a pass
    (multi-worker: every worker runs as many steps as the one with fewest examples). ``info``: what to read
    (see :func:`split_info`); default: all of the training split.
    """
    info = info or split_info(config.data_dir, "train")
    cache = config.cache if config.cache not in ("", "none") else None
    if config.data_service and cache:
        raise DataError("--tf_data_service decodes on the service's workers every pass and cannot be combined with "
                        "--cache: use --cache=none.")
    # No seed: a random one (a new order every run), drawn apart from the seeds the caller may have set.
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1, 2**31)
    passes = _Passes(config, info, _size(config, info), seed, max_examples, start_step)
    if config.data_service:
        ds = passes.served()
    elif cache:
        ds = passes.cached(cache)
    else:
        ds = passes.decoded()
    if host_augment is not None:
        ds = ds.enumerate(start_step).map(lambda step, batch: host_augment(*batch, step=step),
                                          num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    return _finish(ds, config.batch, replicas, config.deterministic, repeat=bool(config.data_service))


@dataclasses.dataclass(frozen=True)
class _Passes:
    """The training passes of one pipeline: each pass's order a function of (seed, pass) alone, and the batches
    from ``start_step`` on."""

    config: DataConfig
    info: SplitInfo
    size: tuple[int, int]
    seed: int
    max_examples: int | None
    start_step: int

    @property
    def examples(self) -> int:
        return min(self.info.count, self.max_examples or self.info.count)

    def records(self, files_seed) -> tf.data.Dataset:
        """A pass's serialised records: the files in ``files_seed``'s order (None: shard order), the first
        ``max_examples``."""
        ds = _records(self.info, files_seed is not None, files_seed, self.config.deterministic)
        return ds.take(self.max_examples) if self.max_examples is not None else ds

    def _batch(self, ds: tf.data.Dataset, parallel: bool = True) -> tf.data.Dataset:
        if not parallel:
            return ds.batch(self.config.batch, drop_remainder=True)
        return ds.batch(self.config.batch, drop_remainder=True, num_parallel_calls=AUTOTUNE,
                        deterministic=self.config.deterministic)

    def _from_start(self, one_pass) -> tf.data.Dataset:
        """``one_pass(number)``'s batches for every pass from the start step's on, the trained ones skipped."""
        first_pass, skip = divmod(self.start_step, max(self.examples // self.config.batch, 1))
        return tf.data.Dataset.counter(first_pass).flat_map(one_pass).skip(skip)

    def served(self) -> tf.data.Dataset:
        """Decoded by a tf.data service's workers. One service job per pass (each new iteration of this dataset
        starts one): exact passes. Files are handed out as the service's workers ask, so no order can be
        continued: a restart starts a pass in a new order (its shuffle seed is keyed by the step it starts at),
        never in the first pass's again."""
        decode = _decoder(self.info, self.size, _task(self.config, self.info))
        ds = _decoded_one_by_one(self.records(None), decode, self.config.deterministic)
        ds = ds.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=self.config.data_service))
        seed = int(np.random.SeedSequence([self.seed, self.start_step]).generate_state(1)[0])
        return self._batch(ds.shuffle(min(self.config.shuffle_buffer, self.info.count), seed=seed,
                                      reshuffle_each_iteration=True))

    def cached(self, cache: str) -> tf.data.Dataset:
        """Decoded once into a cache (``memory`` or files named after what they hold), reshuffled every pass. The
        cache is filled in pass 0's file order whichever pass fills it (a restarted process fills it again, or
        reads a file cache another process wrote), so that every pass reshuffles the same sequence."""
        task = _task(self.config, self.info)
        if cache == "memory":
            check_memory_cache(self.examples, self.size)
        else:
            make_cache_folder(cache)
        ds = _decoded_one_by_one(self.records(_pass_seed(self.seed, 0, _FILES)),
                                 _decoder(self.info, self.size, task), self.config.deterministic)
        ds = ds.cache("" if cache == "memory" else cache_file(cache, self.info, self.size, self.max_examples,
                                                              task.cache_key()))
        buffer = min(self.config.shuffle_buffer, self.info.count)
        return self._from_start(lambda number: self._batch(_shuffled(ds, buffer,
                                                                     _pass_seed(self.seed, number, _EXAMPLES))))

    def decoded(self) -> tf.data.Dataset:
        """No cache: each pass shuffles the ~10 KB serialised records (not the 116 KB decoded images), batches
        them and decodes a batch per call; a restart skips the batches already trained before decoding them."""
        buffer = min(self.config.shuffle_buffer, self.info.count)

        def one_pass(number):
            records = self.records(_pass_seed(self.seed, number, _FILES))
            return self._batch(_shuffled(records, buffer, _pass_seed(self.seed, number, _EXAMPLES)), parallel=False)

        return self._from_start(one_pass).map(_decoder(self.info, self.size, _task(self.config, self.info)),
                                              num_parallel_calls=AUTOTUNE, deterministic=self.config.deterministic)


# Streams of a pass's randomness.
_FILES, _EXAMPLES = 1, 2


def _pass_seed(seed: int, number, stream: int) -> tf.Tensor:
    """The [2] stateless seed of one pass's ``stream``: a function of (seed, pass number, stream) alone."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, stream], tf.int64), tf.cast(number, tf.int64))


def _shuffled(ds: tf.data.Dataset, buffer: int, seed: tf.Tensor) -> tf.data.Dataset:
    """``ds.shuffle(buffer)`` in the one order a [2] seed tensor draws. Dataset.shuffle would combine a tensor
    seed with the global seed (and fails in a traced function when that is 0, e.g. --seed=0), so its op is
    called with the seed as it is."""
    spec = tf.nest.flatten(ds.element_spec)
    # (0, 0) would mean "a random seed" to the op.
    seed2 = tf.where(tf.reduce_all(tf.equal(seed, 0)), tf.constant(2**31 - 1, tf.int64), seed[1])
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds), buffer_size=tf.constant(buffer, tf.int64), seed=seed[0],
        seed2=seed2, seed_generator=tf.raw_ops.DummySeedGenerator(), reshuffle_each_iteration=False,
        output_types=[s.dtype for s in spec], output_shapes=[s.shape for s in spec])
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def eval_dataset(config: DataConfig, split: str | SplitInfo, pad_to_steps: int | None = None, replicas: int = 1,
                 with_metadata: bool = False) -> tf.data.Dataset:
    """Every example of a split (a name, or a :class:`SplitInfo`) once, in shard order: ``(images, labels)``
    batches, the last one partial.

    ``pad_to_steps``: pad every batch to ``config.batch`` with label -1 and add all-padding batches up to this
    many, so that under a strategy every replica of every worker runs the same number of steps on full
    batches; drop the examples whose label is -1 afterwards. ``with_metadata``: add each example's file name
    and attributes [B, attributes] (not with padding).
    """
    if with_metadata and pad_to_steps is not None:
        raise ValueError("with_metadata is for plain (unpadded) evaluation datasets")
    info = split if isinstance(split, SplitInfo) else split_info(config.data_dir, split)
    size = _size(config, info)
    ds = _records(info, shuffle_files=False, seed=None, deterministic=True)
    ds = ds.batch(config.batch).map(_decoder(info, size, _task(config, info), with_metadata),
                                    num_parallel_calls=AUTOTUNE, deterministic=True)
    if pad_to_steps is not None:
        ds = _pad_batches(ds, config.batch, pad_to_steps)
    return _finish(ds, config.batch, replicas, deterministic=True, repeat=False)


def _pad_batches(ds: tf.data.Dataset, batch_size: int, steps: int) -> tf.data.Dataset:
    """Pads each batch to ``batch_size`` (label -1) and appends padding batches up to ``steps``."""
    def pad(images, labels):
        extra = batch_size - tf.shape(labels)[0]
        label_padding = [[0, extra]] + [[0, 0]] * (labels.shape.rank - 1)
        return (tf.pad(images, [[0, extra], [0, 0], [0, 0], [0, 0]]),
                tf.pad(labels, label_padding, constant_values=-1))

    ds = ds.map(pad)
    images, labels = ds.element_spec
    # The filler has the real batches' shapes (labels [B] or, for attributes, [B, K]): under a strategy its
    # batches are gathered with other workers' real ones.
    filler = (tf.zeros([batch_size, *images.shape[1:]], images.dtype),
              -tf.ones([batch_size, *labels.shape[1:]], labels.dtype))
    return ds.concatenate(tf.data.Dataset.from_tensors(filler).repeat()).take(steps)


def eval_steps(info: SplitInfo, batch_size: int) -> int:
    """Batches needed to see every example of this pipeline once (the last one partial)."""
    return -(-info.count // batch_size)


def steps_per_epoch(info: SplitInfo, batch_size: int) -> int:
    """Full batches in one pass over this pipeline's examples (training drops the last partial one)."""
    steps = info.count // batch_size
    if steps == 0:
        raise DataError(f"The {info.split} split has {info.count:,} examples for this input pipeline, fewer "
                        f"than one batch of {batch_size}: lower --batch or convert more images.")
    return steps


def random_batches(batch_size: int, image_size: tuple[int, int], num_classes: int = 2,
                   seed: int = 0) -> tf.data.Dataset:
    """Random uint8 images and labels of the real shapes, made once and repeated: costs no input time,
    so a benchmark on it measures the model step alone."""
    g = tf.random.Generator.from_seed(seed)
    images = tf.cast(g.uniform((batch_size, *image_size, 3), 0, 256, tf.int32), tf.uint8)
    labels = g.uniform((batch_size,), 0, num_classes, tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(AUTOTUNE)
