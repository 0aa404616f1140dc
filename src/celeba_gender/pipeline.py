"""tf.data: the converter's shards -> batches of (uint8 images, int32 labels), for training and evaluation.

Order (each step's place matters):

    shard files (shuffled each pass, training) -> this input pipeline's files (InputContext)
    -> parallel interleave of TFRecordDataset
    with a cache:    -> parse + decode (a batch per call) -> unbatch -> cache (decoded uint8: later
                        epochs decode nothing) -> shuffle -> batch
    without a cache: -> shuffle (serialised records) -> batch -> parse + decode (a batch per call)
    -> [host augmentation] -> repeat -> prefetch

Parsing keeps only the image and the label; decoding gives uint8 RGB, cropped/resized only when the
requested size differs from the stored one.

The pipeline knows nothing about models: the size comes from the caller (who asks the arch registry) and
images stay uint8 (each arch's preprocessing runs inside the model). Training repeats forever and
the loop takes ``steps_per_epoch`` batches per epoch: each epoch is exactly one pass over this
pipeline's examples (the last partial batch of a pass is dropped, and a pass never runs into the next
one, because batching happens before the repeat). Evaluation sees every example exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import tensorflow as tf

from celeba_gender import manifest as manifest_lib
from celeba_gender import records, tfrecord_file

AUTOTUNE = tf.data.AUTOTUNE
# libjpeg can decode straight to 1/2, 1/4 or 1/8 scale, far cheaper than decoding and resizing.
_JPEG_RATIOS = (2, 4, 8)
DEFAULT_SHUFFLE_BUFFER = 4096
_DECODE_BATCH = 64  # images decoded per map call before a cache


class DataError(ValueError):
    """Shards that are missing, unfinished or disagree with their manifest; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What the manifest says about one split, and what this input pipeline will read of it."""

    split: str
    files: tuple[str, ...]  # this pipeline's shard files (all of them without an InputContext)
    records: tuple[int, ...]  # records per file
    class_names: tuple[str, ...]
    class_counts: tuple[int, ...]  # over the whole split
    num_attributes: int
    stored_size: tuple[int, int] | None  # (height, width) when every stored image has it

    @property
    def count(self) -> int:
        """Examples this pipeline reads."""
        return sum(self.records)


def _join(directory: str, name: str) -> str:
    return tf.io.gfile.join(directory, name) if "://" in directory else os.path.join(directory, name)


def read_manifest(data_dir: str) -> dict:
    """The manifest of a shard directory (local or any tf.io.gfile URL), complete and readable."""
    path = _join(data_dir, manifest_lib.FILENAME)
    if not tf.io.gfile.exists(path):
        raise DataError(f"No {manifest_lib.FILENAME} in {data_dir}: convert CelebA first "
                        f"(python make_tfrecords.py --out_dir={data_dir}) or pass the right --data_dir.")
    with tf.io.gfile.GFile(path, "r") as f:
        manifest = manifest_lib.parse(f.read(), path)
    if manifest.get("status") != manifest_lib.COMPLETE:
        raise DataError(f"{path} says the conversion is {manifest.get('status')!r}, not complete: run the same "
                        "make_tfrecords.py command again to finish it.")
    return manifest


def _check_shards(data_dir: str, shards: list[dict], verify_counts: bool) -> None:
    """Every shard exists with the manifest's size (and, for local files, its record count)."""
    for entry in shards:
        path = _join(data_dir, entry["file"])
        if not tf.io.gfile.exists(path):
            raise DataError(f"Shard {path} listed in the manifest is missing. Rerun the make_tfrecords.py "
                            "command that made this directory: it rewrites only what is missing.")
        size = tf.io.gfile.stat(path).length
        if size != entry["bytes"]:
            raise DataError(f"Shard {path} has {size:,} bytes but the manifest says {entry['bytes']:,}: it was "
                            "changed or truncated. Rerun make_tfrecords.py to rewrite it.")
        if verify_counts and "://" not in path:
            try:
                found = tfrecord_file.count_records(path)
            except ValueError as e:
                raise DataError(f"{e} Rerun make_tfrecords.py to rewrite it.") from None
            if found != entry["records"]:
                raise DataError(f"Shard {path} holds {found:,} records but the manifest says "
                                f"{entry['records']:,}. Rerun make_tfrecords.py to rewrite it.")


def split_info(data_dir: str, split: str, input_context: tf.distribute.InputContext | None = None,
               verify_counts: bool = True, manifest: dict | None = None) -> SplitInfo:
    """Reads and checks what :func:`make_dataset` will read; fails with a clear :class:`DataError`."""
    manifest = manifest or read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise DataError(f"{data_dir} has no {split!r} split (it has {', '.join(manifest['splits'])}).")
    info = manifest["splits"][split]
    shards = info["shards"]
    if not shards:
        raise DataError(f"The {split} split of {data_dir} is empty: convert with more images or other options.")
    _check_shards(data_dir, shards, verify_counts)
    if input_context is not None and input_context.num_input_pipelines > 1:
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(shards) < n:
            raise DataError(f"The {split} split has {len(shards)} shard files for {n} input pipelines: each "
                            f"needs its own files. Convert again with --num_shards={n} or more.")
        shards = shards[i::n]  # the same files Dataset.shard(n, i) would give this pipeline
    sizes = list(manifest.get("image_sizes", {}))
    stored = tuple(int(x) for x in sizes[0].split("x")) if len(sizes) == 1 else None
    class_names = tuple(manifest["class_names"])
    return SplitInfo(split, tuple(_join(data_dir, s["file"]) for s in shards), tuple(s["records"] for s in shards),
                     class_names, tuple(info["class_counts"][c] for c in class_names),
                     len(manifest["attribute_names"]), stored)


def decode_image(encoded: tf.Tensor, image_size: tuple[int, int] | None,
                 stored_size: tuple[int, int] | None) -> tf.Tensor:
    """JPEG bytes -> uint8 [h, w, 3] of ``image_size`` (the stored size when None).

    Decodes at 1/2, 1/4 or 1/8 scale when that gives the requested size exactly; otherwise takes the
    central crop with the requested aspect ratio and resizes it (antialiased) only when sizes differ.
    """
    if image_size is None or image_size == stored_size:
        image = tf.io.decode_jpeg(encoded, channels=3)
        return image if stored_size is None else tf.ensure_shape(image, (*stored_size, 3))
    h, w = image_size
    if stored_size is not None:
        for r in _JPEG_RATIOS:
            if (math.ceil(stored_size[0] / r), math.ceil(stored_size[1] / r)) == (h, w):
                return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3, ratio=r), (h, w, 3))
    return fit_to_size(tf.io.decode_jpeg(encoded, channels=3), image_size)


def fit_to_size(image: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 ``image_size``: the largest central crop with the target's aspect ratio,
    resized (antialiased bilinear). An image already of that size comes back unchanged."""
    h, w = image_size
    shape = tf.shape(image)
    src_h, src_w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.minimum(src_h / h, src_w / w)
    crop_h = tf.cast(tf.round(h * scale), tf.int32)
    crop_w = tf.cast(tf.round(w * scale), tf.int32)
    image = tf.image.crop_to_bounding_box(image, (shape[0] - crop_h) // 2, (shape[1] - crop_w) // 2, crop_h, crop_w)
    image = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
    return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), (h, w, 3))


def class_weights(info: SplitInfo) -> tuple[float, ...]:
    """Weights that make each class count equally: total / (classes x class count)."""
    total = sum(info.class_counts)
    return tuple(total / (len(info.class_counts) * max(c, 1)) for c in info.class_counts)


def check_cache(cache: str | None, count: int, image_size: tuple[int, int]) -> None:
    """Refuses a memory cache that cannot fit, before it fills the machine's memory half-way."""
    if cache != "memory":
        return
    need = count * image_size[0] * image_size[1] * 3
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        available = fields.get("MemAvailable")
    except OSError:
        return
    if available is not None and need > 0.8 * available:
        raise DataError(f"--cache=memory needs {need / 2**30:.1f} GiB for {count:,} decoded images of "
                        f"{image_size[0]}x{image_size[1]} but {available / 2**30:.1f} GiB is available. Use "
                        "--cache=<a file path on a fast disk>, --cache=none, or a smaller --image_size.")


def make_dataset(data_dir: str, split: str, batch_size: int, training: bool,
                 image_size: tuple[int, int] | None = None, cache: str | None = None,
                 input_context: tf.distribute.InputContext | None = None, deterministic: bool | None = None,
                 seed: int | None = None, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 sample_weights: bool = False, host_augment: Callable | None = None,
                 verify_counts: bool = True, info: SplitInfo | None = None, replicas: int = 1,
                 max_examples: int | None = None, pad_to_steps: int | None = None,
                 with_metadata: bool = False, data_service: str = "") -> tf.data.Dataset:
    """Batches of ``(uint8 images [B, h, w, 3], int32 labels [B])`` (plus float32 weights [B] with
    ``sample_weights``) from the shards of ``split`` in ``data_dir``.

    ``batch_size`` is this input pipeline's batch: the global batch divided by the workers (each worker has
    one pipeline; see ``replicas`` for its local replicas). Training: shuffled, ``drop_remainder``,
    repeated; take :func:`steps_per_epoch` batches per epoch. Evaluation: deterministic order, every
    example once, last batch partial, not repeated. ``cache``: None/"" (none), "memory", or a file path.
    ``host_augment(images, labels) -> (images, labels)`` is mapped after batching (``--augment_on=host``).
    ``replicas``: the local replicas this pipeline feeds; each batch is cut into that many per-replica
    batches, so one step always consumes one whole batch and passes stay aligned with epochs.
    ``max_examples``: read only this many examples a pass (multi-worker: every worker must run as many
    steps as the one with the fewest examples).
    ``pad_to_steps`` (evaluation): pad every batch to ``batch_size`` with label -1 and add all-padding
    batches up to this many, so that under a strategy every replica of every worker runs the same number
    of steps on full batches (none gets an empty one); drop the examples whose label is -1 afterwards.
    ``with_metadata`` (evaluation): add each example's file name and attributes [B, attributes] to the batch.
    ``data_service`` (training): a tf.data service dispatcher address (grpc://host:port); its workers read,
    parse and decode, with files handed out dynamically (each example once a pass); this process shuffles
    and batches. No cache then: the service decodes every pass.
    """
    if with_metadata and (training or sample_weights or host_augment or pad_to_steps):
        raise ValueError("with_metadata is for plain evaluation datasets")
    info = info or split_info(data_dir, split, input_context, verify_counts)
    size = image_size or info.stored_size
    if size is None:
        raise DataError(f"{data_dir} holds images of several sizes; pass image_size to resize them.")
    if deterministic is None:
        deterministic = not training  # training order may vary run to run: faster, and shuffled anyway
    cache = None if cache in (None, "", "none") else cache
    if data_service and (cache or not training):
        raise DataError("--tf_data_service serves training data only and cannot be combined with --cache: "
                        "use --cache=none.")
    check_cache(cache, info.count, size)

    files = tf.data.Dataset.from_tensor_slices(list(info.files))
    if training and not data_service:  # the service hands files out itself
        files = files.shuffle(len(info.files), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                          cycle_length=min(len(info.files), 16), block_length=1,
                          num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    weights = tf.constant(class_weights(info), tf.float32)
    image_spec = tf.TensorSpec((*size, 3), tf.uint8)

    def decode_batch(serialized):
        # One map call per batch, decoding its images in a loop, costs far less tf.data overhead than one
        # call per image: on 2 cores this reached the decode ceiling where per-image maps stayed at ~75%.
        keys = (records.ENCODED, records.LABEL) + ((records.FILENAME, records.ATTRIBUTES) if with_metadata else ())
        ex = records.parse_example(serialized, info.num_attributes, keys=keys)
        images = tf.map_fn(lambda e: decode_image(e, tuple(size), info.stored_size), ex[records.ENCODED],
                           fn_output_signature=image_spec, parallel_iterations=1)
        labels = tf.cast(ex[records.LABEL], tf.int32)
        if with_metadata:
            return images, labels, ex[records.FILENAME], tf.cast(ex[records.ATTRIBUTES], tf.int32)
        return (images, labels, tf.gather(weights, labels)) if sample_weights else (images, labels)

    if max_examples is not None:
        ds = ds.take(max_examples)  # before the cache, so that the cache is complete after one pass
    if cache is not None or data_service:
        # Decoded images one by one, so that a cache can be reshuffled every epoch, or so that the service's
        # workers decode and this process batches.
        ds = ds.batch(_DECODE_BATCH).map(decode_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.unbatch()
        if data_service:
            # One service job per pass (each new iteration of this dataset starts one): exact passes.
            ds = ds.apply(tf.data.experimental.service.distribute(
                processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=data_service))
        else:
            ds = ds.cache("" if cache == "memory" else cache)
        if training:
            ds = ds.shuffle(min(shuffle_buffer, info.count), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        if training:  # shuffle the ~10 KB serialised records, not the 116 KB decoded images
            ds = ds.shuffle(min(shuffle_buffer, info.count), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=training)
        ds = ds.map(decode_batch, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if host_augment is not None:
        ds = ds.map(lambda images, labels, *w: (*host_augment(images, labels), *w),
                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if pad_to_steps is not None and not training:
        ds = _pad_batches(ds, batch_size, pad_to_steps)
    if replicas > 1:
        if batch_size % replicas:
            raise DataError(f"A batch of {batch_size} cannot be cut into {replicas} equal per-replica batches.")
        ds = ds.rebatch(batch_size // replicas)
    if training:
        ds = ds.repeat()
    options = tf.data.Options()
    options.deterministic = deterministic
    # We shard by file ourselves (InputContext); tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


def _pad_batches(ds: tf.data.Dataset, batch_size: int, steps: int) -> tf.data.Dataset:
    """Pads each batch to ``batch_size`` (label -1, weight 0) and appends padding batches up to ``steps``."""
    def pad(images, labels, *weights):
        extra = batch_size - tf.shape(labels)[0]
        out = (tf.pad(images, [[0, extra], [0, 0], [0, 0], [0, 0]]), tf.pad(labels, [[0, extra]], constant_values=-1))
        return out + tuple(tf.pad(w, [[0, extra]]) for w in weights)

    ds = ds.map(pad)
    spec = ds.element_spec
    filler = tuple(tf.zeros([batch_size, *s.shape[1:]], s.dtype) for s in spec)
    filler = (filler[0], filler[1] - 1, *filler[2:])
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


def synthetic_dataset(batch_size: int, image_size: tuple[int, int], num_classes: int = 2,
                      seed: int = 0) -> tf.data.Dataset:
    """Random uint8 images and labels of the real shapes, made once and repeated: costs no input time,
    so a benchmark on it measures the model step alone."""
    g = tf.random.Generator.from_seed(seed)
    images = tf.cast(g.uniform((batch_size, *image_size, 3), 0, 256, tf.int32), tf.uint8)
    labels = g.uniform((batch_size,), 0, num_classes, tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(AUTOTUNE)
