"""Several attributes in one model: metrics, the report, and learning what the synthetic faces show."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.tasks import multilabel
from celeba_gender.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Drawn on the synthetic faces (synthetic_faces.py / synthetic_drawing.py), big enough to see at 55x45.
VISIBLE = ("Eyeglasses", "Blond_Hair", "Bangs", "Wearing_Hat", "Male")
# Drawn by no visible cue that survives: the jaw's superellipse exponent varies too little to see at 55x45.
INVISIBLE = ("Oval_Face",)


def test_attribute_metrics_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < [0.1, 0.5, 0.0]).astype(np.float32)
    probs = np.clip(labels * 0.6 + rng.random((200, 3)) * 0.5, 0, 1)
    m = multilabel.attribute_metrics(probs, labels, ["a", "b", "never"])
    for j, name in enumerate(["a", "b"]):
        assert m["attributes"][name]["accuracy"] == pytest.approx(((probs[:, j] >= 0.5) == labels[:, j]).mean())
        rate = labels[:, j].mean()
        assert m["attributes"][name]["majority_accuracy"] == pytest.approx(max(rate, 1 - rate))
    assert np.isnan(m["attributes"]["never"]["roc_auc"])  # one value only: no AUC, and no crash
    assert m["mean_accuracy"] == pytest.approx(np.mean([a["accuracy"] for a in m["attributes"].values()]))
    assert set(m) >= {"attributes", "mean_accuracy", "mean_balanced_accuracy", "mean_roc_auc", "log_loss"}


def test_the_published_figures_have_their_papers_means_and_every_name():
    assert np.mean(multilabel.PUBLISHED["LNets+ANet"]) == pytest.approx(87.3)
    assert np.mean(multilabel.PUBLISHED["MCNN-AUX"]) == pytest.approx(91.29, abs=0.005)
    assert multilabel.published("MCNN-AUX", "Male") == 98.17 and multilabel.published("LNets+ANet", "Bald") == 98
    assert multilabel.resolve(("all",), ["Male", "Smiling"]) == ("Male", "Smiling")
    with pytest.raises(ValueError, match="Smilling not among the shards' attributes"):
        multilabel.resolve(("Smilling",), ["Male", "Smiling"])


def test_multi_label_targets_are_the_attribute_vector_smoothed_towards_one_half():
    from celeba_gender.inputs.augment import training_targets

    labels = tf.constant([[1.0, 0.0, 1.0]])
    _, targets = training_targets(tf.zeros([1, 4, 4, 3]), labels, 3, 0.2, multi_label=True)
    np.testing.assert_allclose(targets.numpy(), [[0.9, 0.1, 0.9]], atol=1e-6)


@pytest.mark.slow
@pytest.mark.xdist_group("faces3000")  # unbalanced_shards is made once per pytest-xdist worker
def test_one_model_learns_the_visible_attributes_and_not_the_invisible_one(unbalanced_shards, tmp_path):
    attributes = (*VISIBLE, *INVISIBLE)
    config = trainer.TrainConfig(arch="plain4", data_dir=unbalanced_shards, run_dir=str(tmp_path / "run"),
                                 image_size=(55, 45), batch=32, epochs=6, lr=3e-3, precision="float32",
                                 attributes=attributes, progress=False, seed=1)
    result = trainer.train(config)
    report = json.load(open(os.path.join(result["report"], "report.json")))
    assert report["multi_label"] and set(report["attributes"]) == set(attributes)
    for m in report["attributes"].values():
        assert set(m) == {"accuracy", "balanced_accuracy", "roc_auc", "majority_accuracy", "positive_rate"}
    for name in VISIBLE:  # well above chance (0.5 balanced accuracy) on each
        assert report["attributes"][name]["balanced_accuracy"] > 0.75, (name, report["attributes"][name])
    for name in INVISIBLE:  # no better than answering the majority value
        m = report["attributes"][name]
        assert m["accuracy"] < m["majority_accuracy"] + 0.05 and m["roc_auc"] < 0.65, (name, m)
    assert report["mean_accuracy"] > report["mean_majority_accuracy"]
    markdown = open(os.path.join(result["report"], "report.md")).read()
    assert "| LNets+ANet | MCNN-AUX |" in markdown and "| **mean** |" in markdown
    rows = list(csv.DictReader(open(os.path.join(result["report"], "predictions.csv"))))
    assert len(rows) == report["count"] and {f"p_{a}" for a in attributes} <= set(rows[0])
    # The SavedModel returns every attribute's probability.
    serving = tf.saved_model.load(result["export"]["saved_model"])
    image = tf.zeros([2, 55, 45, 3], tf.uint8)
    out = serving.signatures["serve_images"](images=image)
    assert out["probabilities"].shape == (2, len(attributes)) and out["present"].dtype == tf.bool
    labels = json.load(open(os.path.join(result["run_dir"], "export", "labels.json")))
    assert labels["multi_label"] and labels["class_names"] == list(attributes)
    # Grad-CAM of the chosen attribute, TTA beside the plain means, and predict.py's attributes present.
    evaluated = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), f"--run_dir={result['run_dir']}",
                                "--tta=flip", "--gradcam_attribute=Eyeglasses", "--gradcam_size=3"],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.load(open(os.path.join(result["report"], "report.json")))
    assert again["tta"]["mode"] == "flip" and 0 <= again["tta"]["mean_accuracy"] <= 1
    assert again["gradcam_attribute"] == "Eyeglasses" and "gradcam_correct" in again["files"]
    assert all(os.path.getsize(path) > 0 for key, path in again["files"].items() if key.startswith("gradcam_"))
    face = os.path.join(os.path.dirname(unbalanced_shards), "celeba", "img_align_celeba", "000001.jpg")
    predicted = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), f"--run_dir={result['run_dir']}",
                                "--explain", f"--explain_dir={tmp_path / 'explain'}", face],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    line = [row for row in predicted.stdout.splitlines() if row.startswith(face)][0]
    assert "whole image" in line and os.listdir(tmp_path / "explain")


def test_balanced_attribute_weights_train_and_one_attribute_balanced_shards_are_warned_about(shards, tmp_path):
    data_dir, _ = shards
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch=tiny", f"--data_dir={data_dir}",
                           f"--run_dir={tmp_path / 'run'}", "--batch=16", "--epochs=1", "--attributes=all",
                           "--attribute_weights=balanced", "--evaluate_test=false", "--noprogress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    balanced = json.load(open(os.path.join(data_dir, "manifest.json")))["options"]["balance"]
    assert ("warning: these shards were balanced on Male" in done.stdout) == balanced
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch=tiny", f"--data_dir={data_dir}",
                          "--attributes=Smilling", f"--runs_root={tmp_path}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "Smilling not among the shards' attributes" in bad.stderr
