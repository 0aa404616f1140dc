"""Several attributes in one model: metrics, the report, and learning what the synthetic faces show."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.train import config as train_config
from celeba_gender.evaluate import markdown_report, published
from celeba_gender.evaluate.predictions import Context, load, predict_split
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.tasks import kinds, metrics
from celeba_gender.tasks.multi_attribute import MultiAttribute
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
    m = metrics.attribute_metrics(probs, labels, ["a", "b", "never"])
    for j, name in enumerate(["a", "b"]):
        assert m["attributes"][name]["accuracy"] == pytest.approx(((probs[:, j] >= 0.5) == labels[:, j]).mean())
        rate = labels[:, j].mean()
        assert m["attributes"][name]["majority_accuracy"] == pytest.approx(max(rate, 1 - rate))
    assert np.isnan(m["attributes"]["never"]["roc_auc"])  # one value only: no AUC, and no crash
    assert m["mean_accuracy"] == pytest.approx(np.mean([a["accuracy"] for a in m["attributes"].values()]))
    assert set(m) >= {"attributes", "mean_accuracy", "mean_balanced_accuracy", "mean_roc_auc", "log_loss"}


def test_the_published_figures_have_their_papers_means_and_every_name():
    assert np.mean(published.PUBLISHED["LNets+ANet"]) == pytest.approx(87.3)
    assert np.mean(published.PUBLISHED["MCNN-AUX"]) == pytest.approx(91.29, abs=0.005)
    assert published.published("MCNN-AUX", "Male") == 98.17 and published.published("LNets+ANet", "Bald") == 98
    assert kinds.resolve_attributes(("all",), ["Male", "Smiling"]) == ("Male", "Smiling")
    with pytest.raises(ValueError, match="Smilling not among the shards' attributes"):
        kinds.resolve_attributes(("Smilling",), ["Male", "Smiling"])


def test_multi_label_targets_are_the_attribute_vector_smoothed_towards_one_half():
    task = MultiAttribute(("a", "b", "c"), columns=(0, 1, 2))
    targets = task.smooth(task.targets(tf.constant([[1.0, 0.0, 1.0]])), 0.2)
    np.testing.assert_allclose(targets.numpy(), [[0.9, 0.1, 0.9]], atol=1e-6)


def test_thresholds_are_chosen_per_attribute_and_a_rare_attribute_below_one_half_is_found():
    # Issue item 14: a rare attribute whose probabilities rank the faces perfectly but never reach 0.5 was never
    # predicted. Its threshold, chosen on these predictions, falls between the negatives and the positives.
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 4)) < [0.04, 0.5, 0.0, 0.3]).astype(np.float32)
    probs = np.clip(labels * [0.3, 0.5, 0.0, 0.0] + rng.random((400, 4)) * [0.2, 0.4, 0.3, 1.0], 0, 1)
    probs[:5, 1] = 0.5  # ties at the threshold: present (>=)
    probs = probs.astype(np.float32)
    thresholds = metrics.choose_thresholds(probs, labels)
    rare, common, never, noise = thresholds
    assert probs[labels[:, 0] == 0, 0].max() < rare <= probs[labels[:, 0] == 1, 0].min() < 0.5
    assert never == 0.5  # one value only: every threshold above its probabilities is right, and 0.5 is one
    m = metrics.attribute_metrics(probs, labels, ["rare", "common", "never", "noise"], thresholds)
    assert m["attributes"]["rare"]["accuracy"] == 1.0 and m["attributes"]["rare"]["balanced_accuracy"] == 1.0
    assert m["attributes"]["rare"]["accuracy_at_0.5"] == m["attributes"]["rare"]["majority_accuracy"]  # never said
    assert m["attributes"]["rare"]["balanced_accuracy_at_0.5"] == 0.5
    for j, name in enumerate(["rare", "common", "never", "noise"]):  # no threshold does better on these predictions
        for t in np.linspace(0, 1, 41):
            assert ((probs[:, j] >= t) == labels[:, j]).mean() <= m["attributes"][name]["accuracy"] + 1e-12
    assert m["mean_accuracy_at_0.5"] < m["mean_accuracy"]
    balanced = metrics.choose_thresholds(probs, labels, "balanced_accuracy")
    assert balanced[2] == 0.5  # balanced accuracy needs both values
    # Balanced accuracy buys the noisy attribute's positives at the price of more false alarms than accuracy does.
    b = metrics.attribute_metrics(probs, labels, ["rare", "common", "never", "noise"], balanced)
    assert b["attributes"]["noise"]["balanced_accuracy"] >= m["attributes"]["noise"]["balanced_accuracy"]
    assert all(t == np.float32(t) for t in (*thresholds, *balanced))  # float32: the SavedModel decides alike
    table = markdown_report.attributes_table(m)
    assert "| attribute | threshold | accuracy | accuracy at 0.5 |" in table


def test_the_export_and_predict_py_decide_at_the_recorded_thresholds(celeba_original, tmp_path):
    # The SavedModel's `present` and predict.py's attributes present follow labels.json's thresholds, not 0.5.
    from celeba_gender.models import build, registry
    from celeba_gender.serve import export, inference

    core = build.build_model(registry.ModelConfig(arch="tiny", outputs=3, activation="sigmoid")).network
    thresholds = (0.0, 1.5, 0.5)  # always present, never present, the usual rule
    run_dir = tmp_path / "run"
    task = MultiAttribute(("Always", "Never", "Half"), columns=(0, 1, 2), thresholds=thresholds)
    paths = export.export(core, str(run_dir / "export"), (64, 52), task)
    labels = json.load(open(run_dir / "export" / "labels.json"))
    assert labels["thresholds"] == list(thresholds) and labels["threshold_metric"] == "accuracy"
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 64, 52, 3)), tf.uint8)
    out = tf.saved_model.load(paths["saved_model"]).signatures["serve_images"](images=images)
    present, probs = out["present"].numpy(), out["probabilities"].numpy()
    assert present[:, 0].all() and not present[:, 1].any()
    np.testing.assert_array_equal(present[:, 2], probs[:, 2] >= 0.5)
    face = os.path.join(celeba_original, "img_align_celeba", "000001.jpg")
    predictor = inference.Predictor(str(run_dir))
    [prediction] = predictor.predict([face])
    expected = ["Always"] + (["Half"] if prediction.probabilities["Half"] >= 0.5 else [])
    assert prediction.label.split(",") == expected


@pytest.mark.xdist_group("faces3000")
def test_the_tests_of_one_xdist_group_share_a_worker(request):
    """`make test` runs `-n 2 --dist=loadgroup` so that the tests marked faces3000 (here and in test_gradcam.py)
    build the 3,000-face shards and the runs on them on one worker only. pytest 9.2 stopped this silently (each
    worker built them again: 2-3 minutes more); setup.cfg holds pytest below it, and this test notices a return."""
    argv = " ".join(getattr(request.config, "workerinput", {}).get("mainargv", []))
    if "loadgroup" not in argv:
        pytest.skip("not run with -n N --dist=loadgroup")
    assert request.node.nodeid.endswith("@faces3000"), request.node.nodeid


@pytest.fixture(scope="session")  # one run per worker, however the tests interleave
def attribute_run(unbalanced_shards, tmp_path_factory) -> dict:
    """The shared multi-attribute run: plain4 on five visible attributes and an invisible one (its result)."""
    config = train_config.TrainConfig(arch="plain4", data_dir=unbalanced_shards,
                                      run_dir=str(tmp_path_factory.mktemp("attributes") / "run"),
                                      image_size=(55, 45), batch=32, epochs=6, lr=3e-3, precision="float32",
                                      attributes=(*VISIBLE, *INVISIBLE), progress=False, seed=1)
    return trainer.train(config)


@pytest.mark.slow
@pytest.mark.xdist_group("faces3000")  # unbalanced_shards is made once per pytest-xdist worker
def test_one_model_learns_the_visible_attributes_and_not_the_invisible_one(attribute_run, unbalanced_shards,
                                                                           tmp_path):
    result, attributes = attribute_run, (*VISIBLE, *INVISIBLE)
    report = json.load(open(os.path.join(result["report"], "report.json")))
    assert report["kind"] == "attributes" and set(report["attributes"]) == set(attributes)
    for m in report["attributes"].values():
        assert set(m) == {"accuracy", "balanced_accuracy", "roc_auc", "majority_accuracy", "positive_rate",
                          "threshold", "accuracy_at_0.5", "balanced_accuracy_at_0.5"}
    for name in VISIBLE:  # well above chance (0.5 balanced accuracy) and the majority guess on each
        m = report["attributes"][name]
        assert m["balanced_accuracy"] > 0.75 and m["accuracy"] > m["majority_accuracy"], (name, m)
    for name in INVISIBLE:  # no better than answering the majority value
        m = report["attributes"][name]
        assert m["accuracy"] < m["majority_accuracy"] + 0.05 and m["roc_auc"] < 0.65, (name, m)
    assert report["mean_accuracy"] > report["mean_majority_accuracy"]
    markdown = open(os.path.join(result["report"], "report.md")).read()
    assert "| LNets+ANet | MCNN-AUX |" in markdown and "| **mean** |" in markdown
    assert "| mean accuracy | " in markdown and "chosen for this checkpoint on the validation split" in markdown
    rows = list(csv.DictReader(open(os.path.join(result["report"], "predictions.csv"))))
    assert len(rows) == report["count"] and {f"p_{a}" for a in attributes} <= set(rows[0])
    # The SavedModel returns every attribute's probability.
    serving = tf.saved_model.load(result["export"]["saved_model"])
    image = tf.zeros([2, 55, 45, 3], tf.uint8)
    out = serving.signatures["serve_images"](images=image)
    assert out["probabilities"].shape == (2, len(attributes)) and out["present"].dtype == tf.bool
    labels = json.load(open(os.path.join(result["run_dir"], "export", "labels.json")))
    assert labels["kind"] == "attributes" and labels["class_names"] == list(attributes)
    # Grad-CAM of the chosen attribute, TTA beside the plain means, and predict.py's attributes present.
    evaluated = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), f"--run_dir={result['run_dir']}",
                                "--tta=flip", "--gradcam_attribute=Eyeglasses", "--gradcam_size=3"],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.load(open(os.path.join(result["report"], "report.json")))
    assert again["tta"]["mode"] == "flip" and 0 <= again["tta"]["mean_accuracy"] <= 1
    assert again["gradcam_attribute"] == "Eyeglasses" and "gradcam_correct" in again["files"]
    assert all(os.path.getsize(path) > 0 for key, path in again["files"].items() if key.startswith("gradcam_"))
    # evaluate.py chose the same thresholds as training did: on the validation split, for the same checkpoint.
    for name, t in zip(attributes, labels["thresholds"]):
        assert again["attributes"][name]["threshold"] == pytest.approx(t, abs=1e-3), name
    face = os.path.join(os.path.dirname(unbalanced_shards), "celeba", "img_align_celeba", "000001.jpg")
    predicted = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), f"--run_dir={result['run_dir']}",
                                "--explain", f"--explain_dir={tmp_path / 'explain'}", face],
                               capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    line = [row for row in predicted.stdout.splitlines() if row.startswith(face)][0]
    assert "whole image" in line and os.listdir(tmp_path / "explain")


@pytest.mark.slow
@pytest.mark.xdist_group("faces3000")
def test_the_tested_and_exported_decisions_use_thresholds_chosen_on_validation(attribute_run, unbalanced_shards):
    # Issue item 14: each attribute's threshold is chosen on the validation split's predictions of the exported
    # (best) checkpoint, recorded in labels.json, summary.json and the report, and used on the test split.
    result, attributes = attribute_run, list((*VISIBLE, *INVISIBLE))
    labels = json.load(open(os.path.join(result["run_dir"], "export", "labels.json")))
    assert labels["threshold_metric"] == "accuracy" == result["best_metric"]  # no weights: auto is accuracy
    run = RunDirectory(result["run_dir"])
    manifest = json.load(open(os.path.join(unbalanced_shards, "manifest.json")))
    context = Context(run, unbalanced_shards, manifest)
    trained = load(run, "best")
    validation = predict_split(trained, context, "validation")
    chosen = metrics.choose_thresholds(validation.probs, validation.labels)
    np.testing.assert_allclose(labels["thresholds"], chosen, atol=1e-3)
    assert result["task"]["thresholds"] == labels["thresholds"]
    report = json.load(open(os.path.join(result["report"], "report.json")))
    assert report["thresholds_chosen_on"] == "validation" and report["split"] == "test"
    rows = list(csv.DictReader(open(os.path.join(result["report"], "predictions.csv"))))
    for name, t in zip(attributes, labels["thresholds"]):
        m = report["attributes"][name]
        assert m["threshold"] == t
        p = np.array([float(r[f"p_{name}"]) for r in rows])
        truth = np.array([int(r[f"true_{name}"]) for r in rows])
        present = np.array([int(r[f"present_{name}"]) for r in rows])
        far = np.abs(p - t) > 1e-5  # the file's probabilities have 6 decimals
        np.testing.assert_array_equal(present[far], (p >= t)[far])
        assert m["accuracy"] == pytest.approx((present == truth).mean())
        assert m["accuracy_at_0.5"] == pytest.approx(((p >= 0.5) == truth).mean(), abs=2 / len(rows))
    assert result["test"]["mean_accuracy_at_0.5"] == report["mean_accuracy_at_0.5"]
    # The SavedModel's `present` is the thresholds' decision on real test faces.
    images = np.stack(list(context.images(trained, "test", {r["filename"] for r in rows}).values())[:8])
    out = tf.saved_model.load(result["export"]["saved_model"]).signatures["serve_images"](images=images)
    np.testing.assert_array_equal(out["present"].numpy(),
                                  out["probabilities"].numpy() >= np.asarray(labels["thresholds"], np.float32))
    # model.tflite (one sigmoid per attribute) gives the SavedModel's probabilities, and at labels.json's
    # thresholds its decisions (what predict.py --model=.../model.tflite prints).
    from celeba_gender.serve import tflite

    lite = tflite.TFLiteModel(result["export"]["tflite"])(images)
    np.testing.assert_allclose(lite, out["probabilities"].numpy(), atol=1e-5)
    far = np.abs(lite - np.asarray(labels["thresholds"], np.float32)) > 1e-5
    np.testing.assert_array_equal((lite >= np.asarray(labels["thresholds"], np.float32))[far],
                                  out["present"].numpy()[far])


@pytest.mark.slow
def test_balanced_attribute_weights_train_and_one_attribute_balanced_shards_are_warned_about(shards, tmp_path):
    # Issue item 10: with balanced weights the validation loss is the training loss (weighted alike), and the best
    # checkpoint is the one with the best mean balanced accuracy, the figure the weighting serves.
    from celeba_gender.inputs import pipeline

    data_dir, manifest = shards
    run_dir = str(tmp_path / "run")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch=tiny", f"--data_dir={data_dir}",
                           f"--run_dir={run_dir}", "--batch=16", "--epochs=2", "--attributes=all",
                           "--attribute_weights=balanced", "--evaluate_test=false", "--noprogress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    balanced = manifest["options"]["balance"]
    assert ("warning: these shards were balanced on Male" in done.stdout) == balanced
    assert "best validation balanced accuracy" in done.stdout
    assert re.search(r"epoch 2/2: .* \| val loss [\d.]+ acc [\d.]+ bal acc [\d.]+ auc", done.stdout)  # *best*'s figure
    history = list(csv.DictReader(open(os.path.join(run_dir, "history.csv"))))
    # The last checkpoint's validation predictions, and the training loss on them: weighted as training weighs.
    validation = predict_split(load(RunDirectory(run_dir), "last"), Context(RunDirectory(run_dir), data_dir, manifest),
                               "validation")
    probs, labels = validation.probs, validation.labels
    rates = np.array(pipeline.positive_rates(pipeline.split_info(data_dir, "train"), tuple(range(labels.shape[1]))))
    weights = np.minimum((1 - rates) / np.maximum(rates, 1e-6), 100.0)
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    weighted = -(weights * labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    assert float(history[-1]["val_loss"]) == pytest.approx(weighted, abs=1e-4)
    assert abs(metrics.binary_cross_entropy(probs, labels) - weighted) > 0.01  # the weights matter here
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    scores = [float(row["val_balanced_accuracy"]) for row in history]
    assert summary["best_metric"] == "balanced_accuracy"
    assert summary["best_validation_balanced_accuracy"] == pytest.approx(max(scores), abs=1e-6)
    best_epoch = int(history[scores.index(max(scores))]["global_step"])
    best = os.path.basename(open(os.path.join(run_dir, "checkpoints", "best", "checkpoint")).read().split('"')[1])
    assert best == f"best-{best_epoch}"
    labels_json = json.load(open(os.path.join(run_dir, "export", "labels.json")))
    assert labels_json["threshold_metric"] == "balanced_accuracy" and len(labels_json["thresholds"]) == 40
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch=tiny", f"--data_dir={data_dir}",
                          "--attributes=Smilling", f"--runs_root={tmp_path}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "Smilling not among the shards' attributes" in bad.stderr
