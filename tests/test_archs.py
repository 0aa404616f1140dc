"""The architecture registry: builds, preprocessing, heads, trainable layers, weights handling."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from celeba_gender.models import build, registry
from celeba_gender.models import imagenet_weights
from celeba_gender.models.layers import preprocessing


@pytest.mark.parametrize("name", registry.ARCH_NAMES)
def test_every_arch_builds_at_its_minimum_size_and_predicts_probabilities(name):
    spec = registry.get(name)
    model = build.build_model(registry.ModelConfig(arch=name, image_size=spec.min_size))
    x = np.random.default_rng(0).integers(0, 256, (2, *spec.min_size, 3)).astype("float32")
    probs = model.network(x, training=False)
    assert probs.shape == (2, 2) and probs.dtype == "float32"
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
    smaller = (spec.min_size[0] - 1, spec.min_size[1])
    with pytest.raises(registry.ArchError, match=rf"below {name}'s minimum of {spec.min_size[0]}x{spec.min_size[1]}"):
        build.build_model(registry.ModelConfig(arch=name, image_size=smaller))


def test_the_five_source_archs_default_to_celeba_size_and_the_source_head():
    for name in ("resnet50v2", "inceptionv3", "vgg16", "densenet201"):
        assert registry.get(name).default_size == (218, 178) and registry.get(name).default_head == "source"
    assert registry.get("alexnet").default_size == (218, 178) and registry.get("alexnet").default_head == "fc4096"
    model = build.build_model(registry.ModelConfig(arch="vgg16", image_size=(32, 32)))
    dense = [layer.units for layer in model.network.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [1024, 256, 64, 32, 2]
    assert model.network.layers[-1].dtype_policy.name == "float32"  # the softmax stays float32
    # The head was named "seed" in earlier versions: their runs' config.json still load (evaluate, predict).
    old = registry.ModelConfig.from_record({"arch": "vgg16", "head": "seed", "num_classes": 2, "multi_label": False})
    assert (old.head, old.outputs, old.activation) == ("source", 2, "softmax")


def test_softmax_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build.build_model(registry.ModelConfig(arch="tiny"))
        probs = model.network(np.zeros((1, 64, 52, 3), "float32"))
        assert probs.dtype == "float32"
        assert model.backbone.layers[1].compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode,module", [("tf", keras.applications.resnet_v2), ("tf", keras.applications.inception_v3),
                                         ("torch", keras.applications.densenet), ("caffe", keras.applications.vgg16)])
def test_preprocess_layer_equals_keras_applications_preprocess_input(mode, module):
    x = np.random.default_rng(1).integers(0, 256, (2, 8, 6, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(preprocessing(mode)(x)), module.preprocess_input(x.copy()), rtol=1e-5,
                               atol=1e-4)


def test_the_registry_asks_each_arch_for_its_own_preprocessing():
    assert {n: registry.get(n).preprocess for n in ("resnet50v2", "inceptionv3", "vgg16", "densenet201", "alexnet")} \
        == {"resnet50v2": "tf", "inceptionv3": "tf", "vgg16": "caffe", "densenet201": "torch", "alexnet": "rescale"}


def _trainable(model: build.Model) -> int:
    return build.count_params(model.network)[0]


def test_trainable_layers_means_the_last_n_backbone_layers():
    # Trainable parameter counts at 218x178 (documented in README.md): head only, last 5 layers, all.
    config = registry.ModelConfig(arch="resnet50v2")
    head_only = _trainable(build.build_model(dataclass_replace(config, trainable_layers=0)))
    last5 = build.build_model(dataclass_replace(config, trainable_layers=5))
    everything = _trainable(build.build_model(config))
    assert head_only == 2_379_170  # GAP -> 1024 -> 256 -> 64 -> 32 -> 2 on 2048 features
    assert _trainable(last5) == 3_433_890 and everything == 25_898_530
    layers = [layer for layer in last5.backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [layer.trainable for layer in layers[-5:]] == [True] * 5
    assert not any(layer.trainable for layer in layers[:-5])
    frozen_bn = [layer for layer in layers[:-5] if isinstance(layer, keras.layers.BatchNormalization)]
    x = np.random.default_rng(2).normal(100, 50, (4, 64, 64, 3)).astype("float32")
    small = build.build_model(registry.ModelConfig(arch="resnet50v2", image_size=(64, 64), trainable_layers=5))
    small_layers = [layer for layer in small.backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    frozen = [w for layer in small_layers[:-5] if isinstance(layer, keras.layers.BatchNormalization)
              for w in layer.weights]
    before = [np.asarray(v).copy() for v in frozen]
    small.network(x, training=True)  # frozen BatchNorm runs in inference mode: its moving statistics stay put
    assert frozen_bn and all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, frozen))


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def _offline(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3] "
                    "Temporary failure in name resolution")


def test_imagenet_weights_offline_fail_at_once_naming_the_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", _offline)
    with pytest.raises(registry.ArchError) as err:
        build.build_model(registry.ModelConfig(arch="resnet50v2", weights="imagenet"))
    message = str(err.value)
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert os.path.join(str(tmp_path / "keras"), "models") in message and "--weights=none" in message
    with pytest.raises(registry.ArchError, match="alexnet has no ImageNet weights"):
        build.build_model(registry.ModelConfig(arch="alexnet", weights="imagenet"))


def test_a_wrong_weights_file_is_reported_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    os.makedirs(tmp_path / "models")
    bad = tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"not weights")
    with pytest.raises(imagenet_weights.WeightsError, match="has MD5 .* not 6d6bbae143d832006294945121d1f1fc"):
        build.build_model(registry.ModelConfig(arch="vgg16", weights="imagenet"))
    assert bad.exists()  # Keras would have deleted it


def test_train_fetches_imagenet_weights_before_tensorflow_into_where_keras_looks(tmp_path, monkeypatch):
    """A served file is downloaded, checked and renamed into $KERAS_HOME/models/; a wrong one leaves nothing
    behind; without a connection the message names the file, its place and --weights=none."""
    import functools
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served" / "resnet"
    served.mkdir(parents=True)
    (served / "w.h5").write_bytes(b"weights" * 1000)
    good = hashlib.md5(b"weights" * 1000).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(imagenet_weights, "WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1")
    models = tmp_path / "keras" / "models"
    try:
        with pytest.raises(imagenet_weights.WeightsError, match="arrived with MD5"):
            imagenet_weights.fetch("resnet50v2", "w.h5", "resnet/", "0" * 32)
        assert not models.exists() or os.listdir(models) == []
        path = imagenet_weights.fetch("resnet50v2", "w.h5", "resnet/", good)
        assert path == str(models / "w.h5") and os.listdir(models) == ["w.h5"]
        assert imagenet_weights.fetch("resnet50v2", "w.h5", "resnet/", good) == path  # there: not fetched again
        with pytest.raises(imagenet_weights.WeightsError) as err:
            imagenet_weights.fetch("resnet50v2", "missing.h5", "resnet/", good)
    finally:
        server.shutdown()
    message = str(err.value)
    assert "missing.h5" in message and str(models / "missing.h5") in message and "--weights=none" in message
    # Nothing is fetched for an arch without ImageNet weights or a run that does not ask for them.
    imagenet_weights.fetch_for("alexnet", None, "auto")
    imagenet_weights.fetch_for("resnet50v2", registry.get("resnet50v2").imagenet, "none")
    assert os.listdir(models) == ["w.h5"]


def test_weights_from_a_local_file(tmp_path):
    source = build.build_model(registry.ModelConfig(arch="vgg16", image_size=(32, 32)))
    path = str(tmp_path / "vgg16_backbone.weights.h5")
    source.backbone.save_weights(path)
    loaded = build.build_model(registry.ModelConfig(arch="vgg16", image_size=(32, 32), weights=path))
    for a, b in zip(source.backbone.weights, loaded.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(registry.ArchError, match="no such file"):
        build.build_model(registry.ModelConfig(arch="vgg16", weights=str(tmp_path / "missing.h5")))


def test_unknown_arch_and_head_are_clear():
    with pytest.raises(registry.ArchError, match="Unknown arch 'resnet': choose one of alexnet, resnet50v2"):
        registry.get("resnet")
    with pytest.raises(registry.ArchError, match="--head=big"):
        build.build_model(registry.ModelConfig(arch="tiny", head="big"))
