"""Evaluation: numbers equal a direct computation, names follow label ids, galleries hold the right errors."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.inputs import config as input_config
from celeba_gender.convert import converter
from celeba_gender.convert.config import ConvertConfig
from celeba_gender.evaluate import class_report, evaluator
from celeba_gender.evaluate.evaluator import EvaluationOptions
from celeba_gender.evaluate.predictions import Context, Predictions, load, predict_split
from celeba_gender.rundir.directory import RunDirectory
from celeba_gender.tasks import metrics
from celeba_gender.inputs import pipeline

NAMES = ["Female", "Male"]


def test_metrics_equal_a_direct_computation_and_class_names_follow_label_ids():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
    p_male = np.array([0.1, 0.2, 0.7, 0.4, 0.9, 0.3, 0.8, 0.6, 0.55, 0.05])
    probs = np.stack([1 - p_male, p_male], axis=1)
    m = metrics.class_metrics(probs, labels, NAMES)
    preds = (p_male > 0.5).astype(int)  # 0 0 1 0 1 0 1 1 1 0
    tp = int(((preds == 1) & (labels == 1)).sum())  # 3 Male right
    tn = int(((preds == 0) & (labels == 0)).sum())  # 4 Female right
    fp, fn = int(((preds == 1) & (labels == 0)).sum()), int(((preds == 0) & (labels == 1)).sum())
    assert (tp, tn, fp, fn) == (3, 4, 2, 1)
    assert m["accuracy"] == pytest.approx(0.7) and m["count"] == 10
    assert m["confusion_matrix"] == [[tn, fp], [fn, tp]]  # rows actual Female, Male
    assert m["per_class"]["Female"]["recall"] == pytest.approx(tn / (tn + fp))  # 4/6, not Male's 3/4
    assert m["per_class"]["Male"]["recall"] == pytest.approx(tp / (tp + fn))
    assert m["per_class"]["Male"]["precision"] == pytest.approx(tp / (tp + fp))
    assert m["per_class"]["Female"]["support"] == 6 and m["per_class"]["Male"]["support"] == 4
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    pairs = [(i, j) for i in np.flatnonzero(labels == 1) for j in np.flatnonzero(labels == 0)]
    auc = np.mean([1.0 if p_male[i] > p_male[j] else 0.5 if p_male[i] == p_male[j] else 0.0 for i, j in pairs])
    assert m["roc_auc"] == pytest.approx(auc)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(10), labels])))
    lo, hi = m["accuracy_ci95"]
    assert lo < 0.7 < hi


def test_wilson_interval_known_values():
    lo, hi = metrics.wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    lo, hi = metrics.wilson_interval(5000, 5000)
    assert hi == pytest.approx(1.0) and lo > 0.999


def test_subgroups_are_sorted_worst_first_and_skip_small_groups():
    labels = np.array([0, 1] * 20)
    probs = np.tile([[0.9, 0.1], [0.1, 0.9]], (20, 1))
    attrs = np.zeros((40, 3), int)
    attrs[:10, 0] = 1  # group A: its first 10 examples, made half wrong below
    probs[:10:2] = probs[:10:2][:, ::-1]
    attrs[:3, 1] = 1  # group B: too small
    rows = class_report.subgroup_accuracy(Predictions(probs, labels, [], attrs), ["A", "B", "Male"], "Male",
                                          min_support=5)
    assert rows[0]["group"] == "A" and rows[0]["count"] == 10 and rows[0]["accuracy"] == pytest.approx(0.5)
    assert rows[0]["gap"] == pytest.approx(0.5 - 35 / 40)
    assert "B" not in {r["group"] for r in rows} and "Male" not in {r["attribute"] for r in rows}
    assert [r["gap"] for r in rows] == sorted(r["gap"] for r in rows)


def test_worst_errors_are_the_right_direction_most_confident_first():
    labels = np.array([1, 1, 1, 0, 0])
    p_male = np.array([0.2, 0.45, 0.9, 0.8, 0.1])
    probs = np.stack([1 - p_male, p_male], 1)
    names = [f"{i}.jpg" for i in range(5)]
    male_as_female = class_report.worst_errors(Predictions(probs, labels, names, None), actual=1, predicted=0, limit=5)
    assert [e["filename"] for e in male_as_female] == ["0.jpg", "1.jpg"]
    assert male_as_female[0]["probability"] == pytest.approx(0.8)
    worst = class_report.worst_errors(Predictions(probs, labels, names, None), 0, 1, 5)
    assert [e["filename"] for e in worst] == ["3.jpg"]


def test_evaluate_run_writes_a_report_that_matches_the_model(trained_run, shards):
    _, result = trained_run
    run_dir = result["run_dir"]
    data_dir, manifest = shards
    report = evaluator.evaluate_run(run_dir, EvaluationOptions(gallery_size=50, min_subgroup=5))
    out = os.path.join(run_dir, "report")
    for name in ("report.json", "report.md", "confusion_matrix.png", "curves.png", "errors_Male_as_Female.png",
                 "errors_Female_as_Male.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    # Every test example exactly once, and the numbers are those of the model's own predictions.
    predicted = predict_split(load(RunDirectory(run_dir)), Context(RunDirectory(run_dir), data_dir, manifest), "test")
    probs, labels, names = predicted.probs, predicted.labels, predicted.names
    assert report["count"] == manifest["splits"]["test"]["count"] == len(set(names))
    assert report["accuracy"] == pytest.approx(float((probs.argmax(-1) == labels).mean()))
    assert sum(map(sum, report["confusion_matrix"])) == report["count"]
    truth = dict(zip(names, labels))
    predicted = dict(zip(names, probs.argmax(-1)))
    for key, actual, wrong in (("Male_as_Female", 1, 0), ("Female_as_Male", 0, 1)):
        errors = report["errors"][key]
        assert len(errors) == int(((labels == actual) & (probs.argmax(-1) == wrong)).sum())
        assert all(truth[e["filename"]] == actual and predicted[e["filename"]] == wrong for e in errors)
        assert [e["probability"] for e in errors] == sorted((e["probability"] for e in errors), reverse=True)
    saved = json.load(open(os.path.join(out, "report.json")))
    assert saved["accuracy"] == report["accuracy"] and saved["config"]["model"]["arch"] == "tiny"
    markdown = open(os.path.join(out, "report.md")).read()
    assert "| Female |" in markdown and "Where it fails" in markdown
    events = [p for p in os.listdir(os.path.join(run_dir, "evaluation_test_best")) if "tfevents" in p]
    assert events


def test_evaluation_dataset_sees_every_example_with_its_metadata(shards):
    data_dir, manifest = shards
    ds = pipeline.eval_dataset(input_config.DataConfig(data_dir, batch=16), "test", with_metadata=True)
    names, attrs = [], []
    for images, labels, batch_names, batch_attrs in ds:
        assert images.dtype == tf.uint8
        names += [n.decode() for n in batch_names.numpy()]
        attrs.append(batch_attrs.numpy())
    assert len(names) == len(set(names)) == manifest["splits"]["test"]["count"]
    assert np.concatenate(attrs).shape[1] == len(manifest["attribute_names"])


def test_flip_tta_is_reported_beside_the_plain_figures(trained_run, shards):
    _, result = trained_run
    run_dir = result["run_dir"]
    data_dir, _ = shards
    report = evaluator.evaluate_run(run_dir, EvaluationOptions(split="validation", tta="flip", gradcam_size=0,
                                                               min_subgroup=5))
    trained = load(RunDirectory(run_dir))
    model, size = trained.model, trained.image_size
    validation = predict_split(trained, Context(RunDirectory(run_dir), data_dir, shards[1]), "validation")
    plain, labels = validation.probs, validation.labels
    mirrored = np.concatenate([np.asarray(model(tf.cast(images[:, :, ::-1], tf.float32), training=False))
                               for images, *_ in pipeline.eval_dataset(
                                   input_config.DataConfig(data_dir, tuple(size), 32),
                                                                       "validation", with_metadata=True)])
    both = (plain + mirrored) / 2  # the image's and its mirror's probabilities, averaged
    tta = report["tta"]
    assert tta["mode"] == "flip" and tta["accuracy"] == pytest.approx(float((both.argmax(-1) == labels).mean()))
    assert tta["log_loss"] == pytest.approx(metrics.class_metrics(both, labels, NAMES)["log_loss"], rel=1e-5)
    assert tta["changed_predictions"] == int((both.argmax(-1) != plain.argmax(-1)).sum())
    assert tta["fixed"] - tta["broken"] == int((both.argmax(-1) == labels).sum() - (plain.argmax(-1) == labels).sum())
    assert report["accuracy"] == pytest.approx(float((plain.argmax(-1) == labels).mean()))  # plain stays plain
    out = RunDirectory(run_dir).report_dir("validation", "best")
    assert json.load(open(os.path.join(out, "report.json")))["tta"] == tta
    markdown = open(os.path.join(out, "report.md")).read()
    assert "plain vs flip" in markdown and f"| accuracy | {100 * report['accuracy']:.2f}% | " \
        f"{100 * tta['accuracy']:.2f}% |" in markdown
    assert not any(name.startswith("gradcam_") for name in report["files"])  # --gradcam_size=0


def test_the_report_shows_gradcam_of_the_errors_and_of_correct_answers(trained_run, shards):
    from celeba_gender.models import registry
    from celeba_gender.serve import export, gradcam

    _, result = trained_run
    run_dir = result["run_dir"]
    data_dir, manifest = shards
    report = evaluator.evaluate_run(run_dir, EvaluationOptions(gradcam_size=3, min_subgroup=5))
    out = os.path.join(run_dir, "report")
    markdown = open(os.path.join(out, "report.md")).read()
    for group in ("Male_as_Female", "Female_as_Male", "correct"):
        path = report["files"][f"gradcam_{group}"]
        assert path == os.path.join(out, f"gradcam_{group}.png") and os.path.getsize(path) > 0
        assert f"](gradcam_{group}.png)" in markdown
    for key in ("Male_as_Female", "Female_as_Male"):  # the gallery's most confident errors, explained as predicted
        shown = report["gradcam"][key]
        assert [e["filename"] for e in shown] == [e["filename"] for e in report["errors"][key][:3]]
        assert all(e["explained"] == key.split("_as_")[1] != e["actual"] for e in shown)
    correct = report["gradcam"]["correct"]
    assert correct and all(e["explained"] == e["actual"] for e in correct)
    # The recorded peak is that of the model's own Grad-CAM on the image it evaluated.
    trained = load(RunDirectory(run_dir))
    entry = correct[0]
    image = Context(RunDirectory(run_dir), data_dir, manifest).images(trained, "test", {entry["filename"]})
    heatmap = gradcam.heatmaps(export.inference_model(trained.model, trained.image_size),
                               image[entry["filename"]][None], entry["output_index"],
                               registry.get("tiny").gradcam_layer)
    row, col = gradcam.peak(heatmap[0])
    assert entry["peak"] == [row / heatmap.shape[1], col / heatmap.shape[2]]


def _copy_run(trained_run, tmp_path) -> str:
    """A private copy of the session's trained run (a test that may write into it must not touch the shared one)."""
    _, result = trained_run
    return shutil.copytree(result["run_dir"], str(tmp_path / "run"))


def test_shards_converted_for_another_attribute_are_refused(trained_run, celeba_original, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    smiling = str(tmp_path / "smiling")
    converter.convert(ConvertConfig(celeba_dir=celeba_original, out_dir=smiling, attribute="Smiling",
                                    workers=1, progress=False))
    with pytest.raises(evaluator.EvaluationError) as e:
        evaluator.evaluate_run(run_dir, EvaluationOptions(data_dir=smiling))
    message = str(e.value)
    assert f"this run was trained for Male (classes Female, Male), but the shards in {smiling} were converted for " \
           "Smiling (classes not_Smiling, Smiling)" in message and "--attribute=Male" in message
    assert "\n" not in message
    assert json.load(open(os.path.join(run_dir, "report", "report.json")))["attribute"] == "Male"  # not rewritten


def test_shards_without_an_attribute_of_a_multi_attribute_run_are_refused(trained_run, shards, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    config = json.load(open(os.path.join(run_dir, "config.json")))
    config["model"]["activation"] = "sigmoid"  # two sigmoids: the same weights
    config["task"] = {"kind": "attributes", "outputs": ["Male", "Bald"]}
    json.dump(config, open(os.path.join(run_dir, "config.json"), "w"))
    data_dir, manifest = shards
    fewer = tmp_path / "fewer"  # the same shards, from a CelebA whose attributes lack Bald
    fewer.mkdir()
    for entry in os.listdir(data_dir):
        os.symlink(os.path.join(data_dir, entry), fewer / entry)
    os.remove(fewer / "manifest.json")
    manifest = {**manifest, "attribute_names": [a for a in manifest["attribute_names"] if a != "Bald"]}
    json.dump(manifest, open(fewer / "manifest.json", "w"))
    with pytest.raises(evaluator.EvaluationError, match=rf"the shards in {fewer} do not hold Bald, which this run "
                                                         "predicts"):
        evaluator.evaluate_run(run_dir, EvaluationOptions(data_dir=str(fewer)))
