"""Shared fixtures: small synthetic CelebA folders and their shards, made once per test session."""

from __future__ import annotations

import os
import shutil

import pytest

# Quiet TensorFlow's C++ start-up banner in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from celeba_gender.convert import converter  # noqa: E402

from celeba_gender.convert.config import ConvertConfig
from celeba_gender.synthetic import generate  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Modules with slow tests first, their slow tests first within them: `make test` runs on two pytest-xdist
    workers, and a long test that starts last keeps one worker busy while the other idles. Whole modules move
    together so that a module-scoped fixture is made once per worker, not once per group."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (item.module.__name__ not in slow_modules, item.module.__name__,
                                 not item.get_closest_marker("slow"), order[id(item)]))


@pytest.fixture(scope="session")
def celeba_original_info(tmp_path_factory) -> generate.SyntheticInfo:
    """A 400-image synthetic CelebA in the original layout (read-only: copy it before damaging it)."""
    out = str(tmp_path_factory.mktemp("celeba_original"))
    return generate.generate(out, 400, seed=7, layout="original", workers=1)


@pytest.fixture(scope="session")
def celeba_original(celeba_original_info) -> str:
    """The folder of :func:`celeba_original_info`."""
    return celeba_original_info.out_dir


@pytest.fixture(scope="session")
def celeba_kaggle(tmp_path_factory) -> str:
    """The same kind of data in Kaggle's layout (nested image folder, CSV files, no identity file)."""
    out = str(tmp_path_factory.mktemp("celeba_kaggle"))
    generate.generate(out, 120, seed=3, layout="kaggle", workers=1)
    return out


@pytest.fixture
def celeba_copy(celeba_original, tmp_path) -> str:
    """A private copy of the original-layout folder that a test may damage."""
    dst = str(tmp_path / "celeba")
    shutil.copytree(celeba_original, dst)
    return dst


@pytest.fixture(scope="session")
def shards(celeba_original, tmp_path_factory) -> tuple[str, dict]:
    """(directory, manifest) of the original-layout folder converted with the defaults (read-only)."""
    out = str(tmp_path_factory.mktemp("shards"))
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_original, out_dir=out, workers=1,
                                               progress=False))
    return out, manifest


@pytest.fixture(scope="session")
def trained_run(shards, tmp_path_factory):
    """(config, result) of one epoch of the tiny CNN on :func:`shards`, with every optional artifact on."""
    from celeba_gender.train import trainer
    from celeba_gender.train import config as train_config

    data_dir, _ = shards
    run_dir = str(tmp_path_factory.mktemp("run") / "tiny-run")
    config = train_config.TrainConfig(arch="tiny", data_dir=data_dir, run_dir=run_dir, batch=16, epochs=1, lr=3e-3,
                                      precision="float32", progress=False, seed=1, profile_steps=(2, 4),
                                      checkpoint_steps=5, steps_per_execution=2)
    return config, trainer.train(config)


@pytest.fixture(scope="session")
def unbalanced_shards(tmp_path_factory) -> str:
    """3,000 synthetic faces (the `make demo` set), converted with every image kept (--nobalance), as
    multi-attribute runs want; enough for a model to learn in two epochs what the 400-image set cannot teach."""
    root = tmp_path_factory.mktemp("faces3000")
    generate.generate(str(root / "celeba"), 3000, seed=42, workers=2)
    out = str(root / "shards")
    converter.convert(ConvertConfig(celeba_dir=str(root / "celeba"), out_dir=out, balance=False,
                                    workers=2, progress=False))
    return out


@pytest.fixture(scope="session")
def astronaut() -> tuple:
    """(photo, landmarks [5, 2]): scikit-image's astronaut (a real face shipped in its wheel) and the five landmarks
    MTCNN finds on it (left eye, right eye, nose, mouth corners)."""
    import numpy as np
    from skimage import data

    from celeba_gender.serve import faces

    photo = data.astronaut()
    found = faces.MtcnnDetector()(photo)
    assert len(found) == 1, found
    return photo, np.array(found[0].landmarks)
