"""celeba_gender.inputs.augment and .geometry: the source's ImageDataGenerator augmentation as one fused Keras 3 layer,
checked against ImageDataGenerator and the stacked reference layers (augment_reference); the training targets."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

from celeba_gender.inputs import augment, augment_reference, geometry  # noqa: E402
from celeba_gender.inputs.config import AugmentConfig  # noqa: E402
from celeba_gender.tasks.classification import Classification  # noqa: E402


def training_targets(images, labels, classes: int, label_smoothing: float = 0.0, config=None, seed=None):
    """What the training step makes of a batch: the task's one-hot targets, mixed, then the task's smoothing."""
    task = Classification(tuple(f"class{i}" for i in range(classes)))
    images, targets = augment.mix(images, task.targets(labels), config, seed)
    return images, task.smooth(targets, label_smoothing)

SOURCE_H, SOURCE_W = 218, 178  # the source's target size (height x width)
SOURCE_CONFIG = AugmentConfig()
NO_GEOMETRY = AugmentConfig(rotation_deg=0, shear_deg=0, zoom=0, width_shift=0, height_shift=0,
                            horizontal_flip=False)


def _random_uint8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth_image(height: int, width: int) -> np.ndarray:
    """A smooth, asymmetric float32 RGB image in [0, 255] (bilinear interpolation is near-exact on it)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([127 + 100 * np.sin(xx / 13.0) * np.cos(yy / 17.0),
                     127 + 100 * np.cos((xx + 2 * yy) / 21.0),
                     40 + 0.6 * xx + 0.4 * yy], axis=-1).astype(np.float32)


def _make_layer(kind: str, config, seed: int) -> keras.layers.Layer:
    """The engine's fused Augmenter, or the stacked Keras Random* reference with the same contract."""
    if kind == "fused":
        return augment.Augmenter(config, seed=seed)
    return augment_reference.StackedAugmenter(config, seed=seed)


def _idg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.keras.preprocessing.image.ImageDataGenerator()


# ------------------------------------------------------------------------------------------------------------------
# Shapes, dtypes, identity, reproducibility.


def test_config_defaults_are_the_seeds():
    c = AugmentConfig()
    assert (c.rotation_deg, c.shear_deg, c.zoom, c.width_shift, c.height_shift) == (15.0, 0.1, 0.2, 0.1, 0.1)
    assert c.horizontal_flip and c.fill_mode == "nearest" and c.interpolation == "bilinear"
    assert not c.randaugment and c.random_erasing == 0 and c.mixup == 0 and c.cutmix == 0
    assert AugmentConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        AugmentConfig(fill_mode="mirror")
    with pytest.raises(ValueError):
        AugmentConfig(random_erasing=1.5)


@pytest.mark.parametrize("kind", ["fused", "stacked"])
def test_shapes_dtypes_and_range(kind):
    x = _random_uint8((6, 64, 52, 3))
    layer = _make_layer(kind, SOURCE_CONFIG, seed=1)
    y = layer(x, training=True)
    assert y.dtype == tf.float32 and tuple(y.shape) == x.shape
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 255.0


def test_fused_layer_float_input_and_dynamic_shapes():
    layer = augment.Augmenter(seed=2)
    fn = tf.function(lambda im: layer(im, training=True),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for shape in [(1, 40, 30, 3), (5, 64, 52, 3)]:
        x = _random_uint8(shape).astype(np.float32)
        y = fn(x)
        assert y.dtype == tf.float32 and tuple(y.shape) == shape
        assert not np.allclose(y.numpy(), x)


@pytest.mark.parametrize("kind", ["fused", "stacked"])
def test_identity_at_inference_and_changes_in_training(kind):
    x = _random_uint8((4, 32, 32, 3))
    layer = _make_layer(kind, SOURCE_CONFIG, seed=3)
    for training in (False, None):
        y = layer(x, training=training)
        assert y.dtype == tf.float32
        np.testing.assert_array_equal(y.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(layer(x).numpy(), x.astype(np.float32))  # training unset: inference
    assert not np.allclose(layer(x, training=True).numpy(), x)


def test_seed_reproduces_and_draws_advance():
    x = _random_uint8((4, 32, 32, 3))
    a, b = augment.Augmenter(seed=7), augment.Augmenter(seed=7)
    first = a(x, training=True).numpy()
    np.testing.assert_array_equal(first, b(x, training=True).numpy())
    assert not np.allclose(first, a(x, training=True).numpy())  # the next batch gets new transforms
    t1 = geometry.sample_transforms(8, 32, 32, SOURCE_CONFIG, seed=11).numpy()
    np.testing.assert_array_equal(t1, geometry.sample_transforms(8, 32, 32, SOURCE_CONFIG, seed=11).numpy())


def test_fused_layer_is_not_jit_and_one_warp_op():
    layer = augment.Augmenter(seed=0)
    assert layer.supports_jit is False
    graph = tf.function(lambda im: layer(im, training=True)).get_concrete_function(
        tf.TensorSpec([None, 32, 32, 3], tf.uint8)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ImageProjectiveTransformV3") == 1


# ------------------------------------------------------------------------------------------------------------------
# Parameter distributions: the source's ImageDataGenerator ranges.


def test_sampled_parameters_match_the_source_ranges():
    n = 4000
    p = {k: v.numpy() for k, v in geometry.sample_params(n, SOURCE_H, SOURCE_W, SOURCE_CONFIG, seed=0).items()}
    limits = {"theta": 15.0, "tx": 0.1 * SOURCE_H, "ty": 0.1 * SOURCE_W, "shear": 0.1}
    for name, limit in limits.items():
        assert np.all(np.abs(p[name]) <= limit + 1e-4), name
        assert p[name].min() < -0.95 * limit and p[name].max() > 0.95 * limit, name  # spread over the range
        assert abs(np.mean(p[name])) < 0.05 * limit, name
    for name in ("zx", "zy"):
        assert p[name].min() >= 0.8 - 1e-6 and p[name].max() <= 1.2 + 1e-6
        assert p[name].min() < 0.81 and p[name].max() > 1.19
    assert abs(np.corrcoef(p["zx"], p["zy"])[0, 1]) < 0.1  # independent per axis
    assert abs(p["flip_horizontal"].mean() - 0.5) < 0.03
    # Uniform, as np.random.uniform: a KS test against U(-15, 15).
    assert stats.kstest(p["theta"], stats.uniform(loc=-15, scale=30).cdf).pvalue > 1e-3


def _decompose(transforms: np.ndarray, height: int, width: int):
    """Undo transforms_from_params for the centred geometry (idg_quirks=False): theta, shear, zoom, shift, flip."""
    out = {k: [] for k in ("theta", "shear", "zx", "zy", "dx", "dy", "flip")}
    o = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    for t in transforms.astype(np.float64):
        m = np.array([[t[0], t[1], t[2]], [t[3], t[4], t[5]], [0, 0, 1]])
        flip = np.linalg.det(m[:2, :2]) < 0
        if flip:  # M_total = M @ F with F its own inverse
            m = m @ np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]])
        a = m[:2, :2]
        theta = math.atan2(a[1, 0], a[0, 0])
        theta_plus_shear = math.atan2(-a[0, 1], a[1, 1])
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        shift = rot.T @ (m[:2, 2] + a @ o - o)
        for key, value in zip(out, (math.degrees(theta), math.degrees(theta_plus_shear - theta),
                                    np.linalg.norm(a[:, 0]), np.linalg.norm(a[:, 1]), shift[0], shift[1], flip)):
            out[key].append(value)
    return {k: np.array(v) for k, v in out.items()}


def test_matrices_decompose_into_the_source_ranges():
    config = AugmentConfig(idg_quirks=False)
    d = _decompose(geometry.sample_transforms(3000, SOURCE_H, SOURCE_W, config, seed=5).numpy(), SOURCE_H, SOURCE_W)
    assert np.all(np.abs(d["theta"]) <= 15.0 + 1e-3) and np.ptp(d["theta"]) > 28.0
    assert np.all(np.abs(d["shear"]) <= 0.1 + 1e-3) and np.ptp(d["shear"]) > 0.15
    assert np.all(np.abs(d["shear"]) <= 0.1 + 1e-3)
    for name in ("zx", "zy"):
        assert d[name].min() >= 0.8 - 1e-4 and d[name].max() <= 1.2 + 1e-4 and np.ptp(d[name]) > 0.38
    # Centred geometry: shifts of at most 10 % of each side, along that side.
    assert np.all(np.abs(d["dx"]) <= 0.1 * SOURCE_W + 1e-2) and d["dx"].max() > 0.095 * SOURCE_W
    assert np.all(np.abs(d["dy"]) <= 0.1 * SOURCE_H + 1e-2) and d["dy"].max() > 0.095 * SOURCE_H
    assert abs(d["flip"].mean() - 0.5) < 0.04


def test_transforms_from_params_is_idg_matrix_in_numpy():
    """The closed form equals ImageDataGenerator's own matrix chain (np.dot, offset_center, axis swap, flip)."""
    p = dict(theta=11.0, tx=-13.0, ty=6.5, shear=0.07, zx=0.87, zy=1.13, flip_horizontal=1.0)
    theta, shear = np.deg2rad(p["theta"]), np.deg2rad(p["shear"])
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, p["tx"]], [0, 1, p["ty"]], [0, 0, 1]])
    shear_m = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[p["zx"], 0, 0], [0, p["zy"], 0], [0, 0, 1]])
    m = rot @ shift @ shear_m @ zoom
    ox, oy = SOURCE_H / 2 - 0.5, SOURCE_W / 2 - 0.5  # transform_matrix_offset_center(m, h, w)
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    m = m @ np.array([[-1, 0, SOURCE_W - 1], [0, 1, 0], [0, 0, 1]])  # flip_axis after the warp
    ours = geometry.transforms_from_params({k: [v] for k, v in p.items()}, SOURCE_H, SOURCE_W, True).numpy()[0]
    np.testing.assert_allclose(ours[:6], m[:2].reshape(-1), rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(ours[6:], [0, 0])


# ------------------------------------------------------------------------------------------------------------------
# Equivalence with ImageDataGenerator itself (scipy's affine_transform, order=1, fill 'nearest').

IDG_PARAMS = [
    dict(theta=12.0, tx=-15.3, ty=9.7, shear=0.08, zx=0.85, zy=1.17, flip_horizontal=True),
    dict(theta=-7.5, tx=20.0, ty=-17.0, shear=-0.1, zx=1.2, zy=0.8, flip_horizontal=False),
    dict(theta=15.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip_horizontal=True),
]


@pytest.mark.parametrize("params", IDG_PARAMS)
def test_same_image_as_image_data_generator_at_source_size(params):
    x = _smooth_image(SOURCE_H, SOURCE_W)
    expected = _idg().apply_transform(x.copy(), params)
    transforms = geometry.transforms_from_params({k: [float(v)] for k, v in params.items()}, SOURCE_H, SOURCE_W,
                                                 idg_quirks=True)
    ours = geometry.apply_transforms(x[None], transforms).numpy()[0]
    diff = np.abs(ours - expected)
    assert diff[8:-8, 8:-8].mean() < 0.01  # measured ~3e-5: same coordinates, same bilinear, float32 round-off
    assert diff.mean() < 0.01  # borders too: TF's NEAREST fill is scipy's 'nearest'
    assert not np.allclose(expected, x)  # the test transforms do something


def test_centred_geometry_matches_image_data_generator_on_square_images():
    """idg_quirks=False differs from ImageDataGenerator only on non-square images (pivot, shift axes)."""
    x = _smooth_image(64, 64)
    params = dict(theta=-11.0, shear=0.05, zx=1.15, zy=0.9, flip_horizontal=True)
    expected = _idg().apply_transform(x.copy(), params)
    transforms = geometry.transforms_from_params({k: [float(v)] for k, v in params.items()}, 64, 64,
                                                 idg_quirks=False)
    ours = geometry.apply_transforms(x[None], transforms).numpy()[0]
    assert np.abs(ours - expected)[4:-4, 4:-4].mean() < 0.01


def test_centred_geometry_turns_about_the_true_centre():
    x = _random_uint8((1, SOURCE_H, SOURCE_W, 3)).astype(np.float32)
    half_turn = {"theta": [180.0]}
    centred = geometry.apply_transforms(x, geometry.transforms_from_params(half_turn, SOURCE_H, SOURCE_W, False))
    np.testing.assert_allclose(centred.numpy()[0], x[0, ::-1, ::-1], atol=0.05)  # float32 cos/sin(pi)
    # ImageDataGenerator's own pivot is off centre on 218x178: the same half turn is not a plain 180 flip.
    quirky = geometry.apply_transforms(x, geometry.transforms_from_params(half_turn, SOURCE_H, SOURCE_W, True))
    assert not np.allclose(quirky.numpy()[0], x[0, ::-1, ::-1], atol=1)
    # And its height shift moves the image sideways (tx scales with the height but acts on columns).
    dot = np.zeros((1, 40, 30, 1), np.float32)
    dot[0, 20, 15, 0] = 1.0
    moved = geometry.apply_transforms(dot, geometry.transforms_from_params({"tx": [4.0]}, 40, 30, True)).numpy()
    assert np.unravel_index(moved[0, ..., 0].argmax(), (40, 30)) == (20, 11)
    moved = geometry.apply_transforms(dot, geometry.transforms_from_params({"tx": [4.0]}, 40, 30, False)).numpy()
    assert np.unravel_index(moved[0, ..., 0].argmax(), (40, 30)) == (16, 15)


# ------------------------------------------------------------------------------------------------------------------
# Fused vs stacked: the same distribution, measured on the images.


def _blob_image(size: int) -> np.ndarray:
    """An off-centre Gaussian blob on black (uint8 RGB)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blob = 255 * np.exp(-((yy - 0.3 * size) ** 2 + (xx - 0.68 * size) ** 2) / (2 * (0.06 * size) ** 2))
    return np.repeat(blob[..., None], 3, axis=-1).round().astype(np.uint8)


def _bar_image(size: int) -> np.ndarray:
    """A horizontal bar through the centre, soft-edged (uint8 RGB)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    bar = np.exp(-((yy - c) ** 2) / (2 * 1.5**2)) * (np.abs(xx - c) < 0.25 * size)
    return np.repeat((255 * bar)[..., None], 3, axis=-1).round().astype(np.uint8)


def _centroids(images: np.ndarray):
    w = images[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:images.shape[1], 0:images.shape[2]]
    total = w.sum(axis=(1, 2))
    return (w * xx).sum(axis=(1, 2)) / total, (w * yy).sum(axis=(1, 2)) / total


def _orientations(images: np.ndarray) -> np.ndarray:
    """Principal-axis angle (degrees) of each image's intensity, from its second central moments."""
    cx, cy = _centroids(images)
    w = images[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:images.shape[1], 0:images.shape[2]]
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    mu20, mu02, mu11 = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02))


def _augment_copies(image: np.ndarray, n: int, kind: str, config, seed: int) -> np.ndarray:
    layer = _make_layer(kind, config, seed)
    batch = np.repeat(image[None], n, axis=0)
    return layer(batch, training=True).numpy()


@pytest.mark.parametrize("size,config", [((48, 48), SOURCE_CONFIG),
                                         ((72, 56), AugmentConfig(idg_quirks=False))])
def test_fused_and_stacked_agree_in_distribution(size, config):
    """Blob centroids: two-sample KS, fused vs Keras' stacked layers (on square images the IDG quirks vanish)."""
    h, w = size
    blob = _blob_image(max(size))[:h, :w]
    fused = _augment_copies(blob, 400, "fused", config, seed=21)
    stacked = _augment_copies(blob, 400, "stacked", config, seed=22)
    (fx, fy), (sx, sy) = _centroids(fused), _centroids(stacked)
    assert np.std(fx) > 2 and np.std(fy) > 2  # the blob really moves
    assert stats.ks_2samp(fx, sx).pvalue > 1e-3
    assert stats.ks_2samp(fy, sy).pvalue > 1e-3


def test_bar_orientation_fused_vs_stacked():
    bar = _bar_image(64)
    fused = _orientations(_augment_copies(bar, 400, "fused", SOURCE_CONFIG, seed=31))
    stacked = _orientations(_augment_copies(bar, 400, "stacked", SOURCE_CONFIG, seed=32))
    assert stats.ks_2samp(fused, stacked).pvalue > 1e-3


def test_measured_rotation_stays_within_15_degrees():
    # Zoom off: anisotropic zoom (zx != zy) tilts a rotated bar further, which is not rotation.
    config = AugmentConfig(zoom=0.0)
    angles = _orientations(_augment_copies(_bar_image(64), 400, "fused", config, seed=41))
    assert np.all(np.abs(angles) <= 15.0 + 1.0)
    assert np.abs(angles).max() > 13.0 and np.std(angles) > 6.0  # U(-15, 15) has std 8.7


# ------------------------------------------------------------------------------------------------------------------
# Where the layer runs: tf.data, tf.function, MirroredStrategy, a saved .keras model.


@pytest.mark.parametrize("kind", ["fused", "stacked"])
def test_tf_data_map_on_host(kind):
    x = _random_uint8((10, 32, 32, 3))
    y = np.arange(10, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    ds = ds.map(augment.host_augment_fn(_make_layer(kind, SOURCE_CONFIG, seed=5)))
    first = list(ds.as_numpy_iterator())
    second = list(ds.as_numpy_iterator())
    assert [a.shape for a, _ in first] == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    assert all(a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255 for a, _ in first)
    np.testing.assert_array_equal(np.concatenate([b for _, b in first]), y)  # labels untouched
    assert not np.allclose(first[0][0], x[:4])
    assert not np.allclose(first[0][0], second[0][0])  # new transforms every epoch


def test_host_augment_fn_uses_the_layer_it_is_given():
    """No cache behind the host function: each layer is its own random stream, and the given one advances."""
    x = _random_uint8((8, 32, 32, 3))
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(8))).batch(8)

    def first_batch(layer):
        return next(iter(ds.map(augment.host_augment_fn(layer))))[0].numpy()

    layer, twin, other = augment.Augmenter(seed=5), augment.Augmenter(seed=5), augment.Augmenter(seed=6)
    state = layer.seed_generator.state.numpy().copy()
    first = first_batch(layer)
    assert not np.array_equal(layer.seed_generator.state.numpy(), state)  # the given layer drew
    np.testing.assert_array_equal(first, first_batch(twin))  # same seed, its own state: the same first draw
    assert not np.allclose(first, first_batch(other))  # another seed: other draws
    assert not np.allclose(first, first_batch(layer))  # the same layer reused: its draws advance


def test_host_augment_fn_passes_labels_and_weights_through():
    x, labels, weights = _random_uint8((4, 16, 16, 3)), np.arange(4), np.linspace(0.5, 2, 4).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, labels, weights)).batch(4)
    images, out_labels, out_weights = next(iter(ds.map(augment.host_augment_fn(augment.Augmenter(seed=1)))))
    assert images.dtype == tf.float32 and images.shape == x.shape
    np.testing.assert_array_equal(out_labels.numpy(), labels)
    np.testing.assert_array_equal(out_weights.numpy(), weights)


def test_mirrored_strategy_replica_context():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        layer = augment.Augmenter(seed=9)
    x = _random_uint8((4, 32, 32, 3))

    @tf.function
    def step(images):
        return strategy.run(lambda im: layer(im, training=True), args=(images,))

    out = strategy.experimental_local_results(step(tf.constant(x)))[0].numpy()
    assert out.shape == x.shape and out.dtype == np.float32 and not np.allclose(out, x)


def test_saved_keras_model_round_trip(tmp_path):
    config = AugmentConfig(random_erasing=0.25)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    features = augment.Augmenter(config, seed=4, name="augment")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("augment")
    assert isinstance(layer, augment.Augmenter) and layer.config == config and layer.seed == 4
    x = _random_uint8((3, 32, 32, 3))
    np.testing.assert_array_equal(layer(x).numpy(), x.astype(np.float32))  # still identity at inference
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(layer(x, training=True).numpy(), x)
    # A bare Augmenter serialises too.
    restored = augment.Augmenter.from_config(augment.Augmenter(SOURCE_CONFIG, seed=3).get_config())
    assert restored.config == SOURCE_CONFIG and restored.seed == 3


def test_augmenter_with_every_policy_saves_and_loads(tmp_path):
    config = AugmentConfig(idg_quirks=True, randaugment=True, random_erasing=0.5, fill_mode="reflect")
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    outputs = keras.layers.GlobalAveragePooling2D()(augment.Augmenter(config, seed=12, name="augment")(inputs))
    path = str(tmp_path / "model.keras")
    keras.Model(inputs, outputs).save(path)
    layer = keras.models.load_model(path).get_layer("augment")
    assert type(layer) is augment.Augmenter and layer.config == config and layer.seed == 12
    assert layer.supports_jit is False and layer.randaugment is not None and layer.eraser is not None
    x = _random_uint8((4, 32, 32, 3))
    np.testing.assert_array_equal(layer(x).numpy(), x.astype(np.float32))
    # The random state round-trips: the loaded layer draws what a fresh one with the same seed draws.
    np.testing.assert_array_equal(layer(x, training=True).numpy(),
                                  augment.Augmenter(config, seed=12)(x, training=True).numpy())
    # Models saved while the layer still had a `kind` ('fused', the only one the engine used) load too.
    legacy = augment.Augmenter.from_config({**augment.Augmenter(config, seed=1).get_config(), "kind": "fused"})
    assert legacy.config == config and legacy.seed == 1


def test_stacked_reference_layer_arguments():
    """The stacked layers' own factors encode ImageDataGenerator's ranges (Keras 3.15 semantics)."""
    layers = {type(layer).__name__: layer for layer in augment_reference.stacked_reference(SOURCE_CONFIG).layers}
    assert list(layers) == ["RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom", "RandomFlip"]
    assert np.allclose(np.array(layers["RandomRotation"].factor) * 360, [-15, 15])
    t = layers["RandomTranslation"]
    assert (t.height_lower, t.height_upper, t.width_lower, t.width_upper) == (-0.1, 0.1, -0.1, 0.1)
    s = math.sin(math.radians(0.1))
    assert np.allclose(layers["RandomShear"].x_factor, [-s, s]) and tuple(layers["RandomShear"].y_factor) == (0, 0)
    z = layers["RandomZoom"]
    assert (z.height_lower, z.height_upper, z.width_lower, z.width_upper) == (-0.2, 0.2, -0.2, 0.2)
    assert all(getattr(layer, "fill_mode", "nearest") == "nearest" for layer in layers.values())
    assert layers["RandomFlip"].mode == "horizontal"


# ------------------------------------------------------------------------------------------------------------------
# Training targets: MixUp / CutMix, label smoothing.


def test_mix_batch_off_is_one_hot():
    x = _random_uint8((5, 16, 16, 3))
    labels = np.array([0, 1, 1, 0, 1])
    images, soft = training_targets(x, labels, 2, 0.0, SOURCE_CONFIG, seed=0)
    assert images.dtype == tf.float32 and soft.dtype == tf.float32 and tuple(soft.shape) == (5, 2)
    np.testing.assert_array_equal(images.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(soft.numpy(), np.eye(2)[labels])


def test_mixup_images_are_the_label_weighted_convex_combination():
    n = 8  # one class per image, so the soft label row is the mixing weight of every image
    x = _random_uint8((n, 16, 16, 3)).astype(np.float32)
    images, soft = training_targets(x, np.arange(n), n, 0.0, AugmentConfig(mixup=0.4), seed=1)
    images, soft = images.numpy(), soft.numpy()
    assert soft.shape == (n, n) and np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(soft >= 0) and np.all((soft > 1e-6).sum(axis=1) <= 2)
    np.testing.assert_allclose(images, np.einsum("ij,jhwc->ihwc", soft, x), atol=1e-3)
    assert not np.allclose(images, x)


def test_cutmix_pastes_a_box_whose_area_is_the_label_weight():
    n = 8
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None, None, None] * 20, 3, axis=-1) * np.ones((n, 20, 24, 3))
    images, soft = training_targets(x, np.arange(n), n, 0.0, AugmentConfig(cutmix=1.0), seed=2)
    images, soft = images.numpy(), soft.numpy()
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    for i in range(n):
        sources = images[i, ..., 0] / 20  # which image each pixel came from
        fractions = np.bincount(sources.round().astype(int).ravel(), minlength=n) / sources.size
        np.testing.assert_allclose(fractions, soft[i], atol=1e-5)
    assert np.any(soft.max(axis=1) < 1)  # something was pasted


def test_mixup_and_cutmix_together():
    x = _random_uint8((16, 16, 16, 3))
    labels = np.arange(16) % 2
    config = AugmentConfig(mixup=0.2, cutmix=1.0)
    images, soft = training_targets(x, labels, 2, 0.0, config, seed=3)
    assert tuple(images.shape) == x.shape and tuple(soft.shape) == (16, 2)
    assert np.allclose(soft.numpy().sum(axis=1), 1.0, atol=1e-5)
    fn = tf.function(lambda a, b: training_targets(a, b, 2, 0.0, config))  # graph mode, fresh seed per call
    first, second = fn(x, labels)[1].numpy(), fn(x, labels)[1].numpy()
    assert not np.allclose(first, second)


def test_label_smoothing_alone_is_the_smoothed_one_hot():
    labels = np.array([0, 1, 1, 0, 1])
    images, targets = training_targets(_random_uint8((5, 8, 8, 3)), labels, 2, 0.1, SOURCE_CONFIG, seed=0)
    np.testing.assert_allclose(targets.numpy(), np.eye(2)[labels] * 0.9 + 0.05, atol=1e-7)
    with pytest.raises(ValueError):
        training_targets(images, labels, 2, 1.0)


@pytest.mark.parametrize("mixing", [dict(mixup=0.4), dict(cutmix=1.0), dict(mixup=0.2, cutmix=1.0)],
                         ids=["mixup", "cutmix", "both"])
def test_label_smoothing_applies_to_mixed_targets(mixing):
    """Bug 1: with --mixup/--cutmix the training step replaced the smoothed targets by the mix's one-hot ones.

    Defined: the mixed soft targets t are smoothed, t * (1 - eps) + eps / K; the images are the same mix.
    """
    n, k, eps = 8, 4, 0.2
    x, labels = _random_uint8((n, 16, 16, 3)), np.arange(n) % k
    config = AugmentConfig(**mixing)
    images, mixed = training_targets(x, labels, k, 0.0, config, seed=4)
    smoothed_images, smoothed = training_targets(x, labels, k, eps, config, seed=4)
    mixed, smoothed = mixed.numpy(), smoothed.numpy()
    assert np.any((mixed > 1e-3) & (mixed < 1 - 1e-3))  # something was mixed
    np.testing.assert_array_equal(smoothed_images.numpy(), images.numpy())
    np.testing.assert_allclose(smoothed, mixed * (1 - eps) + eps / k, atol=1e-6)
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, atol=1e-5)
    assert smoothed.min() >= eps / k - 1e-6 and smoothed.max() <= 1 - eps + eps / k + 1e-6


# ------------------------------------------------------------------------------------------------------------------
# Optional image-only policies.


def test_randaugment_runs_and_keeps_range():
    x = _random_uint8((4, 32, 32, 3))
    layer = augment.Augmenter(AugmentConfig(randaugment=True), seed=6)
    y = layer(x, training=True).numpy()
    assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 255
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.astype(np.float32))


def test_random_erasing_probability():
    x = np.full((200, 16, 16, 3), 128, np.uint8)
    config = dataclasses.replace(NO_GEOMETRY, random_erasing=0.5)
    y = augment.Augmenter(config, seed=8)(x, training=True).numpy()
    assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 255
    erased = np.any(y != 128, axis=(1, 2, 3)).mean()
    assert 0.4 < erased < 0.6  # the probability is p itself (Keras' float factor alone would give ~p/4)
