"""Tests for celeba_gender.synthetic.generate: exact CelebA layouts, determinism, planted duplicates,
identity-disjoint partitions, that the Male label is learnable but not trivially so, the command line,
and how the converter's --synthetic treats a folder that already holds images."""

import configparser
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

import celeba_gender
from celeba_gender.core import worker_pool
from celeba_gender.synthetic import generate
from celeba_gender.shards.attributes import ATTRIBUTE_NAMES, CELEBA_SIZE

MALE = ATTRIBUTE_NAMES.index("Male")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG_NAMES = ("out_dir", "num_images", "seed", "layout", "workers")


def run_synthetic(*args: str) -> subprocess.CompletedProcess:
    """``python -m celeba_gender.cli.synthetic`` in a subprocess (its absl flags must not meet other commands')."""
    return subprocess.run([sys.executable, "-m", "celeba_gender.cli.synthetic", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def _names(n):
    return [f"{i:06d}.jpg" for i in range(1, n + 1)]


def _hashes(folder):
    """sha256 of every file under folder, keyed by path relative to it."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _read_original(info):
    """Parse the .txt annotations the way CelebA readers do (whitespace splitting)."""
    lines = open(info.attr_file).read().splitlines()
    attrs = {parts[0]: [int(v) for v in parts[1:]] for parts in map(str.split, lines[2:])}
    part = dict(line.split() for line in open(info.partition_file).read().splitlines())
    ident = dict(line.split() for line in open(info.identity_file).read().splitlines())
    return lines, attrs, {k: int(v) for k, v in part.items()}, {k: int(v) for k, v in ident.items()}


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float32)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    # 200 images: enough for at least one exact and one near duplicate.
    return generate.generate(tmp_path_factory.mktemp("original"), 200, seed=3)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    return generate.generate(tmp_path_factory.mktemp("learnable"), 600, seed=0, workers=2)


def test_original_layout_and_formats(original):
    n = 200
    assert sorted(os.listdir(original.out_dir)) == [
        "identity_CelebA.txt", "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"]
    assert original.image_dir == os.path.join(original.out_dir, "img_align_celeba")
    assert sorted(os.listdir(original.image_dir)) == _names(n)
    lines, attrs, part, ident = _read_original(original)
    assert lines[0] == str(n) and len(lines) == n + 2
    assert lines[1] == " ".join(ATTRIBUTE_NAMES) + " "  # CelebA's trailing space
    assert tuple(lines[1].split()) == ATTRIBUTE_NAMES
    assert list(attrs) == _names(n) and list(part) == _names(n) and list(ident) == _names(n)
    for line, (name, values) in zip(lines[2:], attrs.items()):
        assert len(values) == 40 and set(values) <= {-1, 1}
        assert line == name + " " + " ".join(f"{v:2d}" for v in values)  # width-2 fields
    assert set(part.values()) == {0, 1, 2}
    assert all(i > 0 for i in ident.values())
    assert original.num_images == n and original.identity_file.endswith("identity_CelebA.txt")
    assert original.num_identities == len(set(ident.values()))


def test_images_are_celeba_sized_rgb_jpegs(original):
    sizes = []
    for name in _names(original.num_images):
        path = os.path.join(original.image_dir, name)
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == CELEBA_SIZE[::-1]
            im.load()
        sizes.append(os.path.getsize(path))
    assert 6_000 < np.mean(sizes) < 15_000  # CelebA's files average about 10 KB


def test_kaggle_layout(tmp_path):
    info = generate.generate(tmp_path, 120, seed=3, layout="kaggle")
    assert sorted(os.listdir(tmp_path)) == ["img_align_celeba", "list_attr_celeba.csv", "list_eval_partition.csv"]
    assert info.identity_file is None  # Kaggle ships no identity file
    assert info.image_dir == os.path.join(str(tmp_path), "img_align_celeba", "img_align_celeba")
    assert sorted(os.listdir(info.image_dir)) == _names(120)
    attrs = pd.read_csv(info.attr_file)
    assert list(attrs.columns) == ["image_id", *ATTRIBUTE_NAMES]
    assert list(attrs["image_id"]) == _names(120)
    assert set(np.unique(attrs[list(ATTRIBUTE_NAMES)].to_numpy())) <= {-1, 1}
    part = pd.read_csv(info.partition_file)
    assert list(part.columns) == ["image_id", "partition"]
    assert list(part["image_id"]) == _names(120) and set(part["partition"]) <= {0, 1, 2}
    with Image.open(os.path.join(info.image_dir, "000120.jpg")) as im:
        assert im.size == CELEBA_SIZE[::-1] and im.mode == "RGB"


def test_deterministic_and_independent_of_workers(tmp_path, monkeypatch):
    # Spy on the worker pools: the images must go through parallel.imap, in each start method it uses.
    pools, methods = [], []
    imap, get_context = worker_pool.imap, multiprocessing.get_context
    monkeypatch.setattr(worker_pool, "imap", lambda fn, items, workers, ordered=True:
                        pools.append(workers) or imap(fn, items, workers, ordered))
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None:
                        methods.append(method) or get_context(method))
    a = generate.generate(tmp_path / "a", 80, seed=5, workers=1)
    b = generate.generate(tmp_path / "b", 80, seed=5, workers=2)
    assert pools == [1, 2] and len(methods) == 1
    assert _hashes(a.out_dir) == _hashes(b.out_dir)
    assert a.exact_duplicates == b.exact_duplicates and a.near_duplicates == b.near_duplicates
    # parallel.imap spawns once TensorFlow is loaded (forking it can deadlock): same bytes that way too.
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", types.ModuleType("tensorflow")))
    c = generate.generate(tmp_path / "c", 80, seed=5, workers=3)
    assert pools[-1] == 3 and methods[-1] == "spawn"
    assert _hashes(c.out_dir) == _hashes(a.out_dir)
    d = generate.generate(tmp_path / "d", 80, seed=6)
    assert _hashes(d.out_dir) != _hashes(a.out_dir)


def test_exact_duplicates_are_byte_copies_with_same_rows(original):
    _, attrs, part, ident = _read_original(original)
    assert len(original.exact_duplicates) >= 1
    for copy, orig in original.exact_duplicates:
        assert copy > orig  # the copy has the later id
        with open(os.path.join(original.image_dir, copy), "rb") as f1, \
                open(os.path.join(original.image_dir, orig), "rb") as f2:
            assert f1.read() == f2.read()
        assert attrs[copy] == attrs[orig] and ident[copy] == ident[orig] and part[copy] == part[orig]


def test_near_duplicates_are_visually_close(original):
    _, attrs, part, ident = _read_original(original)
    assert len(original.near_duplicates) >= 1
    for copy, orig in original.near_duplicates:
        assert copy > orig
        a, b = (os.path.join(original.image_dir, n) for n in (copy, orig))
        assert open(a, "rb").read() != open(b, "rb").read()
        assert np.abs(_pixels(a) - _pixels(b)).mean() < 6
        assert attrs[copy] == attrs[orig] and ident[copy] == ident[orig] and part[copy] == part[orig]


def test_no_unplanted_duplicates(original):
    hashes = _hashes(original.image_dir)
    planted = {copy for copy, _ in original.exact_duplicates}
    unique = {h for name, h in hashes.items() if name not in planted}
    assert len(unique) == len(hashes) - len(planted)


def test_partition_is_identity_disjoint_and_ordered_like_celeba(original):
    _, _, part, ident = _read_original(original)
    splits_of = {}
    for name, i in ident.items():
        splits_of.setdefault(i, set()).add(part[name])
    assert all(len(s) == 1 for s in splits_of.values())
    values = [part[n] for n in _names(original.num_images)]
    assert values == sorted(values)  # like CelebA: train ids, then validation, then test
    assert 0.65 < values.count(0) / len(values) < 0.92


def test_attributes_are_mutually_consistent(learnable):
    df = pd.read_csv(learnable.attr_file, sep=r"\s+", skiprows=1) == 1  # header line has 40 names
    assert (df[["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]].sum(axis=1) <= 1).all()
    assert not (df["Bald"] & (df["Black_Hair"] | df["Blond_Hair"] | df["Brown_Hair"])).any()
    assert not (df["Heavy_Makeup"] & ~df["Wearing_Lipstick"]).any()
    assert not (~df["Male"] & (df["Goatee"] | df["Mustache"] | df["5_o_Clock_Shadow"] | ~df["No_Beard"])).any()
    assert not (df["Goatee"] & df["No_Beard"]).any()
    lipstick = df.groupby("Male")["Wearing_Lipstick"].mean()
    assert lipstick[False] > 0.4 and lipstick[True] < 0.05
    assert 0.35 < learnable.male_fraction < 0.5
    assert learnable.male_fraction == pytest.approx(df["Male"].mean())


def test_tiny_datasets(tmp_path):
    for n in (1, 7, 49):
        info = generate.generate(tmp_path / str(n), n, seed=1)
        assert sorted(os.listdir(info.image_dir)) == _names(n)
        assert info.exact_duplicates == [] and info.near_duplicates == []
    with pytest.raises(generate.SyntheticError):
        generate.generate(tmp_path / "bad", 10, layout="tfds")
    generate.generate(tmp_path / "7", 7, seed=2)  # same names again: overwritten
    with pytest.raises(FileExistsError):  # fewer images than already there: refused
        generate.generate(tmp_path / "49", 20, seed=1)


def test_cli_prints_summary(tmp_path):
    done = run_synthetic(f"--out_dir={tmp_path}", "--num_images=60")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "60 images" in out and "Male fraction" in out and str(tmp_path) in out and "MB" in out
    assert "1 exact" in out
    assert len(os.listdir(os.path.join(tmp_path, "img_align_celeba"))) == 60
    assert open(os.path.join(tmp_path, "list_attr_celeba.txt")).readline() == "60\n"


def test_label_is_learnable_but_no_single_pixel_decides(learnable):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, attrs, _, ident = _read_original(learnable)
    names = _names(learnable.num_images)
    y = np.array([attrs[n][MALE] == 1 for n in names], np.int64)
    groups = np.array([ident[n] for n in names])
    colour, edges, grey = [], [], []
    for n in names:
        with Image.open(os.path.join(learnable.image_dir, n)) as im:
            colour.append(np.asarray(im.resize((18, 22), Image.BILINEAR), np.float32).ravel())
            g = im.convert("L")
            edges.append(np.asarray(g.filter(ImageFilter.FIND_EDGES).resize((18, 22), Image.BOX), np.float32).ravel())
            grey.append(np.asarray(g.resize((89, 109), Image.BILINEAR), np.float32).ravel())
    # A linear model on tiny colour + edge images, tested on held-out identities, beats chance.
    x = np.hstack([np.stack(colour), np.stack(edges)])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=2000))
    acc = cross_val_score(model, x, y, groups=groups, cv=GroupKFold(5)).mean()
    assert acc > 0.7, acc
    # ...but no single pixel's best threshold (either direction) separates the sexes.
    g = np.stack(grey)
    ys = y[np.argsort(g, axis=0, kind="stable")]
    below_male = np.cumsum(ys, axis=0)  # males among the k darkest images
    k = np.arange(1, len(y) + 1)[:, None]
    acc_dark_female = (k - below_male + (y.sum() - below_male)) / len(y)  # dark -> female
    best = np.maximum(acc_dark_female, 1 - acc_dark_female).max()
    assert best < 0.9, best


def test_cli_user_errors_are_one_line(tmp_path):
    out = tmp_path / "out"
    bad_value = run_synthetic(f"--out_dir={out}", "--num_images=0")
    assert "--num_images=0" in bad_value.stderr and not out.exists()
    bad_layout = run_synthetic(f"--out_dir={out}", "--num_images=3", "--layout=tfds")
    missing = run_synthetic("--num_images=3")
    os.makedirs(out / "img_align_celeba")
    open(out / "img_align_celeba" / "000009.jpg", "wb").close()  # not one of a 3-image set's names
    other_images = run_synthetic(f"--out_dir={out}", "--num_images=3")
    for done in (bad_value, bad_layout, missing, other_images):
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("synthetic: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "original|kaggle" in bad_layout.stderr and "--out_dir" in missing.stderr
    assert "another dataset" in other_images.stderr
    assert sorted(os.listdir(out / "img_align_celeba")) == ["000009.jpg"]


def test_cli_help_describes_every_flag():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].split("\n") if line)
    module, function = scripts["celeba-synthetic"].split(":")
    code = f"import sys; sys.argv[0] = 'celeba-synthetic'; from {module} import {function}; {function}()"
    console_script = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True,
                                    timeout=120, cwd=ROOT)
    for done in (console_script, run_synthetic("--help")):
        for name in FLAG_NAMES:
            assert f"  --{name}: " in done.stdout, done.stdout + done.stderr
        assert "0 = one per CPU" in done.stdout and "Traceback" not in done.stderr


def test_converter_replaces_a_synthetic_set_it_made_with_other_parameters(tmp_path, capsys):
    folder = str(tmp_path / "celeba")
    marker = tmp_path / "celeba" / "synthetic.json"
    generate.ensure(folder, 120, seed=1, workers=1)
    (tmp_path / "celeba" / "notes.txt").write_text("mine")  # not the set's: it stays
    # Fewer images than the folder's set: this raised FileExistsError (a traceback from make_tfrecords).
    generate.ensure(folder, 60, seed=2, workers=1)
    assert "Replacing the synthetic CelebA in" in capsys.readouterr().err
    expected = _hashes(generate.generate(tmp_path / "fresh", 60, seed=2).out_dir)
    expected["notes.txt"] = hashlib.sha256(b"mine").hexdigest()
    assert {k: v for k, v in _hashes(folder).items() if k != "synthetic.json"} == expected
    assert json.loads(marker.read_text()) == {"num_images": 60, "seed": 2, "version": celeba_gender.__version__}
    # The same command again has nothing to do.
    mtimes = {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in _hashes(folder)}
    generate.ensure(folder, 60, seed=2, workers=1)
    assert capsys.readouterr().err == ""
    assert {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in _hashes(folder)} == mtimes
    # A run interrupted while generating (its marker is written first) is redone by the next one.
    marker.write_text(json.dumps({"num_images": 60, "seed": 2, "version": celeba_gender.__version__,
                                  "complete": False}))
    os.remove(os.path.join(folder, "img_align_celeba", "000060.jpg"))
    generate.ensure(folder, 60, seed=2, workers=1)
    assert "Replacing the unfinished synthetic CelebA" in capsys.readouterr().err
    assert {k: v for k, v in _hashes(folder).items() if k != "synthetic.json"} == expected


def test_converter_refuses_a_folder_with_images_but_no_marker(tmp_path):
    # Files in CelebA's layout without synthetic.json: perhaps the user's real CelebA.
    celeba = generate.generate(tmp_path / "celeba", 60, seed=1).out_dir
    before = _hashes(celeba)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "make_tfrecords.py"), "--synthetic=30",
                           f"--celeba_dir={celeba}", f"--out_dir={tmp_path}/tfrecords", "--progress=false"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"make_tfrecords: error: {celeba} holds CelebA images")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "choose another --celeba_dir for --synthetic, or an empty folder" in done.stderr
    assert _hashes(celeba) == before and not os.path.exists(tmp_path / "tfrecords")
