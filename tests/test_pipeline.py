"""The tf.data pipeline on real (synthetic-CelebA) shards: shapes, exact passes, sharding, bad shards."""

from __future__ import annotations

import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.convert import converter
from celeba_gender.inputs import augment, pipeline
from celeba_gender.convert.config import ConvertConfig
from celeba_gender.inputs.pipeline import DataConfig
from celeba_gender.tasks import kinds
from celeba_gender.tasks.classification import Classification
from celeba_gender.tasks.multi_attribute import MultiAttribute
from celeba_gender.shards.shard_dir import MANIFEST as FILENAME


def train_ds(data_dir, batch, **options):
    return pipeline.train_dataset(DataConfig(data_dir, batch=batch, **options))


def eval_ds(data_dir, split, batch, **options):
    return pipeline.eval_dataset(DataConfig(data_dir, batch=batch, **options), split)


def ids_of(ds, n_batches=None) -> list[int]:
    """Identifies each example by a hash of its pixels (the pipeline yields images and labels only)."""
    out = []
    for i, (images, _) in enumerate(ds):
        if n_batches is not None and i == n_batches:
            break
        out += [hash(img.tobytes()) for img in images.numpy()]
    return out


def test_shapes_dtypes_and_value_ranges(shards):
    data_dir, manifest = shards
    ds = train_ds(data_dir, 16, seed=1)
    images, labels = next(iter(ds))
    assert images.dtype == tf.uint8 and images.shape == (16, 218, 178, 3)
    assert labels.dtype == tf.int32 and set(labels.numpy()) <= {0, 1}
    assert images.numpy().max() > 100 and images.numpy().min() < 60  # real pictures, not blank
    half = eval_ds(data_dir, "validation", 8, image_size=(109, 89))
    images, _ = next(iter(half))
    assert images.shape[1:] == (109, 89, 3) and images.dtype == tf.uint8  # decoded at 1/2 scale
    square = eval_ds(data_dir, "validation", 8, image_size=(64, 64))
    images, _ = next(iter(square))
    assert images.shape[1:] == (64, 64, 3) and images.dtype == tf.uint8  # centre crop + resize
    # Class weights are the task's (its loss weighs each example by its class), not an element of the batches.
    info = pipeline.split_info(data_dir, "train")
    counts = types.SimpleNamespace(training_class_counts=lambda: info.class_counts)
    task = Classification(info.class_names).weighted(counts)
    weights = task.example_weights(labels).numpy()
    np.testing.assert_allclose(weights, np.array(task.class_weights)[labels.numpy()], rtol=1e-6)
    assert sum(w * c for w, c in zip(task.class_weights, info.class_counts)) == pytest.approx(info.count)


def test_half_scale_decode_matches_a_resize_closely(shards):
    data_dir, _ = shards
    full = next(iter(eval_ds(data_dir, "test", 4)))[0]
    half = next(iter(eval_ds(data_dir, "test", 4, image_size=(109, 89))))[0]
    resized = tf.image.resize(tf.cast(full, tf.float32), (109, 89), antialias=True)
    assert float(tf.reduce_mean(tf.abs(resized - tf.cast(half, tf.float32)))) < 6.0


def test_evaluation_sees_every_example_exactly_once(shards):
    data_dir, manifest = shards
    ds = eval_ds(data_dir, "test", 7)
    labels = np.concatenate([l.numpy() for _, l in ds])
    n = manifest["splits"]["test"]["count"]
    assert len(labels) == n
    assert np.bincount(labels).tolist() == list(manifest["splits"]["test"]["class_counts"].values())
    first, second = ids_of(ds), ids_of(ds)
    assert len(set(first)) == n and first == second  # deterministic order, no repeats


@pytest.mark.parametrize("cache", ["none", "memory", "file"])
def test_each_training_epoch_is_one_exact_pass(shards, cache, tmp_path):
    data_dir, manifest = shards
    cache = str(tmp_path / "cache") if cache == "file" else cache
    n, batch = manifest["splits"]["train"]["count"], 32
    info = pipeline.split_info(data_dir, "train")
    steps = pipeline.steps_per_epoch(info, batch)
    assert steps == n // batch
    every = set(ids_of(eval_ds(data_dir, "train", n)))
    it = iter(train_ds(data_dir, batch, seed=3, cache=cache))
    epochs = []
    for _ in range(3):
        epoch = []
        for _ in range(steps):
            images, _ = next(it)
            epoch += [hash(img.tobytes()) for img in images.numpy()]
        epochs.append(epoch)
    for epoch in epochs:
        assert len(epoch) == len(set(epoch)) == steps * batch  # no example twice in an epoch
        assert set(epoch) <= every and len(every - set(epoch)) == n - steps * batch  # only the remainder missed
    assert epochs[0] != epochs[1]  # reshuffled every epoch


def _batches(ds: tf.data.Dataset, n: int) -> list[tuple[np.ndarray, ...]]:
    it = iter(ds)
    return [tuple(t.numpy() for t in next(it)) for _ in range(n)]


@pytest.mark.parametrize("cache,host_augment", [("none", True), ("memory", False), ("file", False)])
def test_a_deterministic_pipeline_started_at_a_step_yields_what_an_unstopped_one_yields_from_there(
        shards, tmp_path, cache, host_augment):
    """What a resumed --deterministic run reads: the order of each pass comes from (seed, pass) and the batches
    the interrupted pass already trained are skipped, whatever the cache, and host augmentation draws from
    (seed, step). A file cache is filled by whichever process reads the first pass, from any step."""
    data_dir, manifest = shards
    batch = 32
    steps = manifest["splits"]["train"]["count"] // batch

    def dataset(start_step: int, cache_name: str) -> tf.data.Dataset:
        config = DataConfig(data_dir, (64, 52), batch, seed=3, deterministic=True,
                            cache=str(tmp_path / cache_name) if cache == "file" else cache)
        host = augment.host_augment_fn(augment.Augmenter(), seed=3) if host_augment else None
        return pipeline.train_dataset(config, host_augment=host, start_step=start_step)

    unstopped = _batches(dataset(0, "a"), 3 * steps)
    assert not np.array_equal(unstopped[0][0], unstopped[steps][0])  # passes differ
    for start in (3, steps + 5):  # in the first pass; in the second
        resumed = _batches(dataset(start, f"b{start}"), steps)  # on into the next pass
        for expected, got in zip(unstopped[start:start + steps], resumed):
            for a, b in zip(expected, got):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_a_cached_pipeline_reads_and_decodes_the_shards_once(shards, tmp_path, cache):
    """Every pass reshuffles the one cache (each pass is a new dataset of the same cache): once the first pass
    has filled it, the shard files are not needed any more."""
    data_dir, manifest = shards
    copy = tmp_path / "shards"
    shutil.copytree(data_dir, copy)
    steps = manifest["splits"]["train"]["count"] // 32
    config = DataConfig(str(copy), (64, 52), 32, seed=3, cache=str(tmp_path / "cache") if cache == "file" else cache)
    it = iter(pipeline.train_dataset(config))
    first = [next(it)[0].numpy() for _ in range(steps)]
    for shard in manifest["splits"]["train"]["shards"]:
        os.remove(copy / shard["file"])
    later = [next(it)[0].numpy() for _ in range(2 * steps)]  # passes 2 and 3, from the cache
    ids = [[hash(image.tobytes()) for batch in batches for image in batch] for batches in (first, later[:steps])]
    assert len(set(ids[1])) == steps * 32 and ids[1] != ids[0]  # a reshuffled pass


def test_without_deterministic_a_resumed_pass_is_not_the_first_pass_again(shards):
    data_dir, manifest = shards
    steps = manifest["splits"]["train"]["count"] // 32
    config = DataConfig(data_dir, (64, 52), 32, cache="memory", seed=3)
    first = ids_of(pipeline.train_dataset(config), steps)  # a fresh process's first pass
    rest = ids_of(pipeline.train_dataset(config, start_step=2 * steps + 3), steps - 3)  # the rest of pass 3
    assert len(set(rest)) == len(rest) == (steps - 3) * 32
    assert rest != first[:len(rest)] and rest != first[3 * 32:]


def test_a_file_cache_is_keyed_by_what_it_holds(shards, tmp_path):
    # One --cache prefix shared by runs of other sizes, splits, workers or data must never serve their images.
    data_dir, _ = shards
    prefix = str(tmp_path / "cache")
    for size in ((64, 52), (109, 89)):
        images, _ = next(iter(train_ds(data_dir, 8, image_size=size, cache=prefix)))
        assert images.shape[1:3] == size
    halves = [pipeline.split_info(data_dir, "train", pipeline_id=i, num_pipelines=2) for i in range(2)]
    labels = Classification(("Female", "Male")).cache_key()
    names = {pipeline.cache_file(prefix, info, (64, 52), None, labels) for info in halves}
    names |= {pipeline.cache_file(prefix, halves[0], (64, 52), 100, labels),
              pipeline.cache_file(prefix, halves[0], (55, 45), None, labels)}
    assert len(names) == 4
    written = {f.split(".")[0] for f in os.listdir(tmp_path) if f.startswith("cache-")}
    assert len(written) == 2 and all("-train-" in f for f in written)


def test_two_input_pipelines_read_disjoint_files_that_cover_the_split(shards):
    data_dir, manifest = shards
    infos = [pipeline.split_info(data_dir, "train", pipeline_id=i, num_pipelines=2) for i in range(2)]
    assert not set(infos[0].files) & set(infos[1].files)
    assert sorted(infos[0].files + infos[1].files) == sorted(
        os.path.join(data_dir, s["file"]) for s in manifest["splits"]["train"]["shards"])
    seen = [set(ids_of(eval_ds(data_dir, infos[i], 8))) for i in range(2)]
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == manifest["splits"]["train"]["count"]


def test_distributed_dataset_splits_the_global_batch_across_replicas(shards):
    data_dir, _ = shards
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    def dataset_fn(ctx):
        info = pipeline.split_info(data_dir, "train", pipeline_id=ctx.input_pipeline_id,
                                   num_pipelines=ctx.num_input_pipelines)
        return pipeline.train_dataset(DataConfig(data_dir, batch=ctx.get_per_replica_batch_size(16)), info)

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    images, labels = next(iter(dist))
    assert images.shape == (16, 218, 178, 3) and labels.shape == (16,)


@pytest.fixture
def shard_copy(shards, tmp_path) -> str:
    dst = str(tmp_path / "shards")
    shutil.copytree(shards[0], dst)
    return dst


def test_missing_shard_and_mismatched_shards_fail_clearly(shard_copy):
    manifest = json.load(open(os.path.join(shard_copy, FILENAME)))
    victim = manifest["splits"]["train"]["shards"][0]["file"]
    data = open(os.path.join(shard_copy, victim), "rb").read()
    os.remove(os.path.join(shard_copy, victim))
    with pytest.raises(pipeline.DataError, match=rf"Shard .*{victim} listed in the manifest is missing"):
        train_ds(shard_copy, 8)
    open(os.path.join(shard_copy, victim), "wb").write(data[:-10])
    with pytest.raises(pipeline.DataError, match="bytes but the manifest says"):
        train_ds(shard_copy, 8)
    # Same size, one record fewer: only the record count can tell.
    manifest["splits"]["train"]["shards"][0]["records"] += 1
    json.dump(manifest, open(os.path.join(shard_copy, FILENAME), "w"))
    open(os.path.join(shard_copy, victim), "wb").write(data)
    with pytest.raises(pipeline.DataError, match="records but the manifest says"):
        pipeline.split_info(shard_copy, "train")


def test_unfinished_or_absent_manifest_and_small_splits_fail_clearly(shard_copy, tmp_path):
    with pytest.raises(pipeline.DataError, match="No manifest.json in .*convert CelebA first"):
        train_ds(str(tmp_path / "nothing"), 8)
    manifest = json.load(open(os.path.join(shard_copy, FILENAME)))
    info = pipeline.split_info(shard_copy, "test")
    with pytest.raises(pipeline.DataError, match="fewer than one batch"):
        pipeline.steps_per_epoch(info, info.count + 1)
    with pytest.raises(pipeline.DataError, match="has no 'holdout' split"):
        pipeline.split_info(shard_copy, "holdout")
    with pytest.raises(pipeline.DataError, match="shard files for 99 input pipelines"):
        pipeline.split_info(shard_copy, "test", num_pipelines=99)
    manifest["status"] = "in_progress"
    json.dump(manifest, open(os.path.join(shard_copy, FILENAME), "w"))
    with pytest.raises(pipeline.DataError, match="not complete: run the same celeba-make-tfrecords command again"):
        train_ds(shard_copy, 8)


def test_memory_cache_that_cannot_fit_is_refused():
    with pytest.raises(pipeline.DataError, match="--cache=memory needs"):
        pipeline.check_memory_cache(10**9, (218, 178))
    pipeline.check_memory_cache(10, (218, 178))


def test_host_augmentation_is_mapped_after_batching(shards):
    data_dir, _ = shards
    seen_shapes = []

    def augment(images, labels, step):  # the batch's global step, for augmentation keyed by it
        seen_shapes.append((images.shape.rank, step.dtype, step.shape.rank))
        return tf.cast(images, tf.float32) / 2.0 + tf.cast(step, tf.float32) * 1000.0, labels

    # Deterministic: parallel map calls may deliver batches out of order otherwise (any step may come first).
    ds = pipeline.train_dataset(DataConfig(data_dir, batch=8, deterministic=True), host_augment=augment, start_step=7)
    images, labels = next(iter(ds))
    assert seen_shapes == [(4, tf.int64, 0)] and images.dtype == tf.float32
    assert 7000.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 7127.5  # step 7


def test_synthetic_source_has_the_real_shapes():
    images, labels = next(iter(pipeline.random_batches(4, (32, 24))))
    assert images.shape == (4, 32, 24, 3) and images.dtype == tf.uint8 and labels.dtype == tf.int32


def test_gfile_urls_are_read_through_tf_io_gfile(shards):
    # ram:// is TensorFlow's in-memory filesystem: a stand-in for gs:// that needs no network.
    data_dir, manifest = shards
    url = "ram://celeba-shards"
    tf.io.gfile.makedirs(url)
    for name in [FILENAME] + [s["file"] for s in manifest["splits"]["test"]["shards"]]:
        tf.io.gfile.copy(os.path.join(data_dir, name), f"{url}/{name}", overwrite=True)
    labels = np.concatenate([l.numpy() for _, l in eval_ds(url, "test", 16)])
    assert len(labels) == manifest["splits"]["test"]["count"]
    with pytest.raises(pipeline.DataError, match="is missing"):
        train_ds(url, 8)


def test_conversion_to_pipeline_round_trip_with_kaggle_layout(celeba_kaggle, tmp_path):
    out = str(tmp_path / "k")
    converter.convert(ConvertConfig(celeba_dir=celeba_kaggle, out_dir=out, workers=1, progress=False))
    n = sum(len(l) for _, l in eval_ds(out, "validation", 4))
    assert n == json.load(open(os.path.join(out, FILENAME)))["splits"]["validation"]["count"]


def test_padded_evaluation_runs_fixed_full_batches_and_keeps_every_example_once(shards):
    data_dir, manifest = shards
    n = manifest["splits"]["test"]["count"]
    info = pipeline.split_info(data_dir, "test")
    steps = pipeline.eval_steps(info, 16) + 2  # two batches of pure padding, as another worker may need
    batches = list(pipeline.eval_dataset(DataConfig(data_dir, batch=16), info, pad_to_steps=steps, replicas=2))
    assert len(batches) == 2 * steps and all(b[0].shape[0] == 8 for b in batches)  # per-replica halves
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert (labels >= 0).sum() == n and set(labels[labels < 0]) == {-1}
    real = [hash(img.tobytes()) for b in batches for img, y in zip(b[0].numpy(), b[1].numpy()) if y >= 0]
    assert len(set(real)) == n


def test_a_file_cache_is_keyed_by_the_labels_it_holds(shards, tmp_path):
    # Runs sharing one --cache prefix but training other attributes (or the same ones in another order, or with
    # class weights) must each get their own labels, not the first run's.
    data_dir, manifest = shards
    names = manifest["attribute_names"]
    chosen = (names.index("Eyeglasses"), names.index("Smiling"))
    info = pipeline.split_info(data_dir, "train")
    truth = np.array(pipeline.positive_rates(info, chosen)) * info.count
    assert truth[0] != truth[1]  # else a swap could not be seen
    prefix = str(tmp_path / "cache")

    def one_pass(**options):  # the whole split as one batch: its label sums are exact
        return next(iter(train_ds(data_dir, info.count, image_size=(16, 13), cache=prefix, **options)))

    for attributes in (chosen, chosen[::-1], chosen[:1], chosen[1:]):
        task = kinds.for_run(manifest, tuple(names[a] for a in attributes))
        labels = one_pass(task=task)[1].numpy()
        expected = [truth[chosen.index(a)] for a in attributes]
        np.testing.assert_allclose(labels.sum(axis=0), expected, err_msg=str(attributes))
    labels = one_pass()[1].numpy()  # the class label, after the attributes' caches: its own file
    assert labels.dtype == np.int32 and labels.sum() == info.class_counts[1]


def test_a_file_cache_in_a_folder_that_does_not_exist_gets_the_folder(shards, tmp_path):
    data_dir, _ = shards
    prefix = str(tmp_path / "not" / "yet" / "cache")
    images, _ = next(iter(train_ds(data_dir, 8, image_size=(16, 13), cache=prefix)))
    assert images.shape[0] == 8 and os.path.isdir(tmp_path / "not" / "yet")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(pipeline.DataError, match="--cache=.*a_file/cache: cannot create"):
        train_ds(data_dir, 8, cache=str(tmp_path / "a_file" / "cache"))


def test_padding_batches_of_attribute_labels_have_the_attribute_shape(shards):
    # Another worker may need more evaluation steps: this worker's all-padding batches must have the shapes of
    # its real ones, or the collective that gathers them fails.
    data_dir, _ = shards
    info = pipeline.split_info(data_dir, "test")
    steps = pipeline.eval_steps(info, 16) + 2
    names = shards[1]["attribute_names"]
    task = MultiAttribute(tuple(names[i] for i in (3, 15, 20)), columns=(3, 15, 20))
    config = DataConfig(data_dir, (16, 13), batch=16, task=task)
    ds = pipeline.eval_dataset(config, info, pad_to_steps=steps)
    assert ds.element_spec[1].shape.as_list()[1:] == [3]
    batches = list(ds)
    assert len(batches) == steps and all(b[1].shape == (16, 3) for b in batches)
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert (labels[:, 0] >= 0).sum() == info.count and (labels[labels[:, 0] < 0] == -1).all()
