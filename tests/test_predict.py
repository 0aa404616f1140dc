"""predict.py: the same pixels as training, any image file (and hostile ones), folders with junk in them, face
detection, RGB order, test-time augmentation, Grad-CAM overlays, CSV/JSON output, exit codes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from celeba_gender.train import config as train_config
from celeba_gender.serve import inference, photos
from celeba_gender.serve import faces, probes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _face(celeba_original, number: int = 1) -> str:
    return os.path.join(celeba_original, "img_align_celeba", f"{number:06d}.jpg")


@pytest.fixture
def photos_dir(celeba_original, tmp_path) -> str:
    """A folder with two face crops (JPEG and PNG), a text file, a truncated JPEG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(_face(celeba_original, 1), folder / "a.jpg")
    Image.open(_face(celeba_original, 2)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not a picture")
    data = open(_face(celeba_original, 3), "rb").read()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    return str(folder)


@pytest.fixture(scope="module")
def run_at_half_size(shards, tmp_path_factory) -> dict:
    """The tiny CNN trained one epoch at 109x89: half of the stored 218x178, so JPEGs take libjpeg's DCT
    scaling in training, evaluation, the SavedModel and (it must) predict.py."""
    from celeba_gender.train import trainer

    data_dir, _ = shards
    config = train_config.TrainConfig(arch="tiny", data_dir=data_dir,
                                      run_dir=str(tmp_path_factory.mktemp("run109") / "r"),
                                      image_size=(109, 89), batch=16, epochs=1, lr=3e-3, precision="float32",
                                      progress=False, seed=1, evaluate_test=False)
    return trainer.train(config)


def canvas_with_face(face_path: str, top: int = 100, left: int = 300) -> np.ndarray:
    canvas = np.full((480, 640, 3), 128, np.uint8)
    face = np.asarray(Image.open(face_path).convert("RGB"))
    canvas[top:top + face.shape[0], left:left + face.shape[1]] = face
    return canvas


def test_predict_decodes_exactly_as_evaluation_and_the_savedmodel_on_every_test_image(run_at_half_size, shards,
                                                                                      celeba_original):
    import tensorflow as tf

    from celeba_gender.evaluate.predictions import Context, load, predict_split
    from celeba_gender.rundir.directory import RunDirectory
    from celeba_gender.inputs import decode

    data_dir, manifest = shards
    run_dir = run_at_half_size["run_dir"]
    assert decode.jpeg_ratio((218, 178), (109, 89)) == 2  # the DCT path is the one under test
    run = RunDirectory(run_dir)
    trained, context = load(run, run_at_half_size["checkpoint"]), Context(run, data_dir, manifest)
    predicted = predict_split(trained, context, "test", 16)
    probs, names = predicted.probs, predicted.names
    inputs = context.images(trained, "test", set(names))
    assert len(names) == manifest["splits"]["test"]["count"] > 10
    files = [os.path.join(celeba_original, "img_align_celeba", n) for n in names]
    predictor = inference.Predictor(run_dir)
    for name, file in zip(names, files):  # the very pixels evaluation fed the model
        np.testing.assert_array_equal(photos.model_input(photos.open_photo(file), (109, 89)), inputs[name])
    ours = predictor.predict(files)
    saved_model = tf.saved_model.load(os.path.join(run_dir, "export", "saved_model"))  # kept: it owns the weights
    served = saved_model.serve_jpeg(tf.constant([open(f, "rb").read() for f in files]))
    assert [p.label for p in ours] == [["Female", "Male"][k] for k in probs.argmax(-1)] == \
        [n.decode() for n in served["class_name"].numpy()]
    np.testing.assert_allclose([p.probabilities["Male"] for p in ours], probs[:, 1], atol=1e-5)
    np.testing.assert_allclose(served["probabilities"].numpy(), probs, atol=1e-5)


def test_the_tflite_model_answers_as_the_savedmodel_on_every_test_image(run_at_half_size, shards, celeba_original,
                                                                        tmp_path):
    """Training exports model.tflite (float32 by default) beside the SavedModel; predict.py's --model runs it and
    gives the SavedModel's answers; float16 and dynamic_int8 conversions of the same model stay close."""
    import tensorflow as tf

    from celeba_gender.evaluate.predictions import Context, load, predict_split
    from celeba_gender.rundir.directory import RunDirectory
    from celeba_gender.serve import tflite

    data_dir, manifest = shards
    run_dir = run_at_half_size["run_dir"]
    export_dir = os.path.join(run_dir, "export")
    assert run_at_half_size["export"]["tflite"] == os.path.join(export_dir, "model.tflite")
    run = RunDirectory(run_dir)
    names = predict_split(load(run, run_at_half_size["checkpoint"]), Context(run, data_dir, manifest), "test").names
    files = [os.path.join(celeba_original, "img_align_celeba", n) for n in names]
    saved_model = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    served = saved_model.serve_jpeg(tf.constant([open(f, "rb").read() for f in files]))
    ours = inference.Predictor("", model=os.path.join(export_dir, "model.tflite")).predict(files, batch=7)
    assert [p.label for p in ours] == [n.decode() for n in served["class_name"].numpy()]
    np.testing.assert_allclose([[p.probabilities[c] for c in ("Female", "Male")] for p in ours],
                               served["probabilities"].numpy(), atol=1e-5)

    import keras

    inputs = np.stack([photos.model_input(photos.open_photo(f), (109, 89)) for f in files])
    reference = served["probabilities"].numpy()
    model = keras.models.load_model(os.path.join(export_dir, "model.keras"))
    sizes = {"float32": os.path.getsize(os.path.join(export_dir, "model.tflite"))}
    for quantize, tolerance in (("float16", 1e-3), ("dynamic_int8", 0.05)):
        path = tflite.write(model, str(tmp_path / quantize), (109, 89), quantize)
        sizes[quantize] = os.path.getsize(path)
        probs = tflite.TFLiteModel(path).predict(inputs, batch_size=16)
        assert np.abs(probs - reference).max() < tolerance, (quantize, np.abs(probs - reference).max())
    assert sizes["dynamic_int8"] < sizes["float16"] < sizes["float32"], sizes


def test_a_mixed_precision_model_converts_to_tflite_computing_in_float32(tmp_path):
    """mixed_float16, the GPU default, computes in float16, which TensorFlow Lite's builtin kernels do not: the
    conversion stopped with ERROR_NEEDS_FLEX_OPS at the end of such a run. It converts a float32 copy."""
    import keras

    from celeba_gender.models import build, registry
    from celeba_gender.serve import export, tflite

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        network = build.build_model(registry.ModelConfig(arch="tiny", image_size=(64, 52), weights="none")).network
        model = export.inference_model(network, (64, 52))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    images = np.random.default_rng(0).integers(0, 256, (6, 64, 52, 3), dtype=np.uint8)
    path = tflite.write(model, str(tmp_path), (64, 52))
    # The float16 computation of the model itself differs from float32 by float16's rounding.
    np.testing.assert_allclose(tflite.TFLiteModel(path)(images), np.asarray(model(images), np.float32), atol=2e-3)


def test_predict_runs_the_tflite_model_from_the_command_line(run_at_half_size, celeba_original, tmp_path):
    """``predict.py --model=RUN/export/model.tflite`` prints what ``--run_dir=RUN`` (model.keras) answers."""
    run_dir = run_at_half_size["run_dir"]
    files = [_face(celeba_original, n) for n in (1, 2, 3)]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"),
                           f"--model={os.path.join(run_dir, 'export', 'model.tflite')}", *files],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XNNPACK" not in done.stderr and "deprecated" not in done.stderr, done.stderr[-2000:]
    printed = [line.split("\t") for line in done.stdout.splitlines()]
    keras_answers = inference.Predictor(run_dir).predict(files)
    assert [(row[0], row[2], float(row[3])) for row in printed] == \
        [(p.file, p.label, pytest.approx(p.probability, abs=1e-4)) for p in keras_answers]


def test_the_haar_fallback_crops_the_face_from_a_larger_canvas(celeba_original):
    face_path = _face(celeba_original, 1)
    canvas = canvas_with_face(face_path)
    boxes = faces.haar_faces(canvas)
    assert boxes, "no face found on the canvas"
    x, y, w, h = boxes[0]
    assert 300 <= x + w / 2 <= 478 and 100 <= y + h / 2 <= 318  # the box is on the pasted face
    crop = faces.crop_like_celeba(canvas, boxes[0], (218, 178))
    assert crop.shape == (218, 178, 3) and crop.dtype == np.uint8
    # The crop frames the pasted aligned face (300, 100, 178, 218) closely, not some other part of the canvas.
    left, top, width, height = faces.crop_window(boxes[0], (218, 178))
    ix = max(0.0, min(left + width, 478) - max(left, 300))
    iy = max(0.0, min(top + height, 318) - max(top, 100))
    iou = ix * iy / (width * height + 178 * 218 - ix * iy)
    assert iou > 0.6
    assert abs(width / height - 178 / 218) < 1e-6
    window = canvas[int(top):int(top + height), int(left):int(left + width)]
    resized = np.asarray(Image.fromarray(window).resize((178, 218), Image.BILINEAR), np.float32)
    assert np.abs(resized - crop.astype(np.float32)).mean() < 12  # the crop shows that window
    assert faces.haar_faces(np.full((480, 640, 3), 128, np.uint8)) == []


def _aligned_astronaut(astronaut) -> np.ndarray:
    """The astronaut's 218x178 crop as CelebA's alignment makes it from her landmarks."""
    photo, landmarks = astronaut
    return faces.warp_to_celeba(photo, faces.alignment_matrix(landmarks))


def _two_faces(astronaut, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 600x1000 photo of the astronaut twice (large on the left, small on the right, each turned and on its own
    blurred background) and each face's known landmarks."""
    from skimage import data

    photo, landmarks = astronaut
    rng = np.random.default_rng(seed)
    halves, known = [], []
    for i, (background, scales) in enumerate(((data.coffee(), (1.5, 1.8)), (data.rocket(), (0.8, 0.9)))):
        probe = probes.make_probe(photo, landmarks, probes.blurred_background(background, rng, size=(600, 500)),
                                  rng, scales=scales)
        halves.append(probe.image)
        known.append(probe.landmarks + [500 * i, 0])
    return np.hstack(halves), known


def test_detect_faces_leaves_an_already_aligned_face_crop_as_it_is(trained_run, astronaut, tmp_path):
    """An aligned crop (here the astronaut as CelebA's alignment frames her, as a 178x218 JPEG and at twice the size
    as a PNG) gives with --detect_faces exactly what it gives without: the same pixels, the same answer."""
    _, result = trained_run
    crop = Image.fromarray(_aligned_astronaut(astronaut))
    crop.save(tmp_path / "aligned.jpg", quality=95)
    crop.resize((356, 436), Image.BICUBIC).save(tmp_path / "aligned_x2.png")
    files = [str(tmp_path / "aligned.jpg"), str(tmp_path / "aligned_x2.png")]
    predictor = inference.Predictor(result["run_dir"])
    plain, detected = predictor.predict(files), predictor.predict(files, faces=True)
    assert len(detected) == 2
    for p, q in zip(plain, detected):
        assert q.error is None and q.note == inference.ALREADY_ALIGNED, q
        assert q.probabilities == p.probabilities and q.label == p.label
        assert q.box is not None and q.confidence >= faces.DEFAULT_MIN_CONFIDENCE and len(q.landmarks) == 5


def test_detect_faces_aligns_each_face_like_celeba_most_confident_first(trained_run, astronaut, tmp_path):
    _, result = trained_run
    image, known = _two_faces(astronaut)
    path = str(tmp_path / "two.png")
    Image.fromarray(image).save(path)
    predictor = inference.Predictor(result["run_dir"], inference.PredictOptions(face_confidence=0.5))
    found = predictor.predict([path], faces=True)
    assert len(found) == 2 and found[0].confidence >= found[1].confidence, found
    eyes = [np.array([p.landmarks["left_eye"], p.landmarks["right_eye"]]) for p in found]
    for truth in known:  # each face found once, its eyes within a tenth of their distance
        distance = np.linalg.norm(truth[1] - truth[0])
        assert sum(np.abs(e - truth[:2]).max() < 0.1 * distance for e in eyes) == 1
    # Each face's model input is the astronaut's aligned crop (as made from her known landmarks) within a few
    # levels, whatever its size and turn in the photo; the Haar box framing of the same photo is far off.
    size = predictor.image_size
    reference = faces.model_crop(_aligned_astronaut(astronaut), size).astype(np.float32)
    photo = photos.open_photo(path)
    for face in predictor.find_faces(image):
        crop, note = predictor.face_input(photo, image, face)
        assert note is None and crop.shape == (*size, 3) and np.abs(crop - reference).mean() < 8
    boxed = [faces.crop_like_celeba(image, box, size) for box in faces.haar_faces(image)]
    assert boxed and min(np.abs(b - reference).mean() for b in boxed) > 12
    # --max_faces keeps the most confident; --face_confidence drops the others.
    one = inference.Predictor(result["run_dir"], inference.PredictOptions(max_faces=1)).predict([path], faces=True)
    assert [p.confidence for p in one] == [found[0].confidence]
    middle = (found[0].confidence + found[1].confidence) / 2
    strict = inference.Predictor(result["run_dir"], inference.PredictOptions(face_confidence=middle)).predict(
        [path], faces=True)
    assert [p.confidence for p in strict] == [found[0].confidence]
    # --align=eyes: the eyes exactly on the template's, so a different crop for this face (CelebA's rule leaves her
    # eyes 2 px off it); an unknown rule is refused.
    eyes_only = inference.Predictor(result["run_dir"], inference.PredictOptions(align=faces.EYES))
    face = predictor.find_faces(image)[0]
    assert np.abs(eyes_only.face_input(photo, image, face)[0].astype(np.float32)
                  - predictor.face_input(photo, image, face)[0]).mean() > 1
    with pytest.raises(inference.PredictError, match="--align=nose"):
        inference.Predictor(result["run_dir"], inference.PredictOptions(align="nose"))
    # The CSV has each face's confidence and landmarks.
    inference.write_predictions(found, str(tmp_path / "faces.csv"))
    rows = list(csv.DictReader(open(tmp_path / "faces.csv")))
    for row, p in zip(rows, found):
        assert float(row["face_confidence"]) == pytest.approx(p.confidence, abs=1e-6)
        for name, (x, y) in p.landmarks.items():
            assert float(row[f"{name}_x"]) == pytest.approx(x, abs=0.01)
            assert float(row[f"{name}_y"]) == pytest.approx(y, abs=0.01)


def test_images_are_read_as_rgb_whatever_the_format(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    for ext in ("png", "bmp", "jpg", "webp", "tiff"):
        Image.fromarray(red).save(tmp_path / f"red.{ext}")
        image = photos.read_image(str(tmp_path / f"red.{ext}"))
        assert image.shape == (20, 30, 3) and image[..., 0].mean() > 240 and image[..., 2].mean() < 15, ext
    with pytest.raises(ValueError, match="no such file"):
        photos.read_image(str(tmp_path / "missing.jpg"))


def test_a_folder_with_junk_is_predicted_file_by_file(trained_run, photos_dir, tmp_path):
    _, result = trained_run
    predictor = inference.Predictor(result["run_dir"])
    files = inference.list_inputs([photos_dir, str(tmp_path / "missing.jpg")])
    predictions = predictor.predict(files)
    by_file = {os.path.basename(p.file): p for p in predictions}
    assert set(by_file) == {"a.jpg", "b.png", "notes.txt", "broken.jpg", "missing.jpg"}
    assert "not an image" in by_file["notes.txt"].error
    assert "corrupt" in by_file["broken.jpg"].error and "function_node" not in by_file["broken.jpg"].error
    assert by_file["missing.jpg"].error == "no such file"
    for name in ("a.jpg", "b.png"):
        p = by_file[name]
        assert p.error is None and p.label in ("Female", "Male") and 0.5 <= p.probability <= 1
        assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
    out_csv, out_json = str(tmp_path / "p.csv"), str(tmp_path / "p.json")
    inference.write_predictions(predictions, out_csv)
    inference.write_predictions(predictions, out_json)
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 5 and {r["file"].rsplit("/", 1)[-1] for r in rows if r["error"]} == {
        "notes.txt", "broken.jpg", "missing.jpg"}
    assert len(json.load(open(out_json))) == 5


def test_exif_orientation_is_applied(tmp_path):
    from PIL import ImageOps

    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pixels[:10, :10] = 255  # a corner to follow
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(pixels).save(path, exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        np.testing.assert_array_equal(photos.read_image(str(path)), expected)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _variants(face: np.ndarray, folder) -> dict[str, tuple[str, float]]:
    """name -> (path, pixel tolerance): the face stored in every awkward way, each upright once decoded right.
    Tolerance 0: lossless (the model's input must be identical); else the mean pixel error re-encoding allows."""
    import cv2

    out = {}

    def save(name, image, tolerance=0.0, **kwargs):
        path = str(folder / name)
        image.save(path, **kwargs)
        out[name] = (path, tolerance)

    save("exif6.png", Image.fromarray(np.ascontiguousarray(np.rot90(face, 1))), exif=_exif(6))
    save("exif3.png", Image.fromarray(np.ascontiguousarray(face[::-1, ::-1])), exif=_exif(3))
    save("exif6.jpg", Image.fromarray(np.ascontiguousarray(np.rot90(face, 1))), 3.0, quality=95, exif=_exif(6))
    save("cmyk.jpg", Image.fromarray(face).convert("CMYK"), 3.0, quality=95)
    rgba = np.dstack([face, np.linspace(0, 255, face.shape[1], dtype=np.uint8)[None].repeat(face.shape[0], 0)])
    save("rgba.png", Image.fromarray(rgba))  # alpha is dropped: the colour channels are the face
    save("lossless.webp", Image.fromarray(face), lossless=True)
    cv2.imwrite(str(folder / "rgb16.png"), face[..., ::-1].astype(np.uint16) * 257)  # 16 bits a channel
    out["rgb16.png"] = (str(folder / "rgb16.png"), 0.0)
    return out


def test_awkward_files_predict_like_the_same_face_in_plain_rgb(trained_run, celeba_original, tmp_path):
    import tensorflow as tf

    from celeba_gender.inputs.decode import fit_to_size

    _, result = trained_run
    predictor = inference.Predictor(result["run_dir"])
    face = np.asarray(Image.open(_face(celeba_original, 4)).convert("RGB"))
    Image.fromarray(face).save(tmp_path / "plain.png")
    gray = np.asarray(Image.fromarray(face).convert("L"))
    Image.fromarray(np.dstack([gray] * 3)).save(tmp_path / "gray_rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray).save(tmp_path / "gray.jpg", quality=95)
    frames = [Image.fromarray(face).quantize(256), Image.fromarray(255 - face).quantize(256)]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(np.asarray(frames[0].convert("RGB"))).save(tmp_path / "gif_frame0.png")

    cases = {name: (path, tol, "plain.png") for name, (path, tol) in _variants(face, tmp_path).items()}
    cases["gray.png"] = (str(tmp_path / "gray.png"), 0.0, "gray_rgb.png")
    cases["gray.jpg"] = (str(tmp_path / "gray.jpg"), 3.0, "gray_rgb.png")
    cases["animated.gif"] = (str(tmp_path / "animated.gif"), 0.0, "gif_frame0.png")
    size = predictor.image_size
    for name, (path, tolerance, reference) in cases.items():
        ours = photos.model_input(photos.open_photo(path), size).astype(np.float32)
        theirs = photos.model_input(photos.open_photo(str(tmp_path / reference)), size).astype(np.float32)
        error = np.abs(ours - theirs).mean()
        assert error <= tolerance, (name, error)
    # ... where the upside-down file read as stored would be far off.
    stored = fit_to_size(tf.io.decode_image(open(cases["exif3.png"][0], "rb").read(), channels=3), size).numpy()
    upright = photos.model_input(photos.open_photo(str(tmp_path / "plain.png")), size)
    assert np.abs(stored.astype(np.float32) - upright).mean() > 20
    predictions = {os.path.basename(p.file): p for p in predictor.predict(
        [path for path, *_ in cases.values()] + [str(tmp_path / r) for r in ("plain.png", "gray_rgb.png",
                                                                             "gif_frame0.png")])}
    for name, (_, tolerance, reference) in cases.items():
        p, q = predictions[name], predictions[reference]
        assert p.error is None, (name, p.error)
        assert p.probabilities["Male"] == pytest.approx(q.probabilities["Male"], abs=1e-6 if tolerance == 0 else 0.02)
    assert predictions["exif6.png"].note == "turned upright (EXIF orientation 6)"
    assert predictions["animated.gif"].note == "first of 2 frames"


def test_deep_and_huge_images_are_refused_with_their_reason_before_decoding(trained_run, celeba_original, tmp_path,
                                                                            monkeypatch):
    _, result = trained_run
    # A JPEG whose header claims 20000x20000 pixels (its SOF0 patched): Pillow reads the size from the header.
    data = bytearray(open(_face(celeba_original, 5), "rb").read())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # height, width
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    gray16 = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50)
    Image.fromarray(gray16).save(tmp_path / "deep.tiff")  # 16-bit TIFF: Pillow would clip it to white
    frames = [Image.fromarray(np.full((218, 178, 3), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:])
    shutil.copy(_face(celeba_original, 5), tmp_path / "face.jpg")

    files = [str(tmp_path / n) for n in ("bomb.jpg", "deep.tiff", "long.gif", "face.jpg")]
    refused = set(files[:2])
    decode_model_input = photos.model_input

    def model_input(photo, size):
        assert photo.path not in refused, f"{photo.path} was decoded"
        return decode_model_input(photo, size)

    monkeypatch.setattr(photos, "model_input", model_input)
    by_name = {os.path.basename(p.file): p for p in inference.Predictor(result["run_dir"]).predict(files)}
    assert by_name["bomb.jpg"].error == ("too large: 20000x20000 = 400,000,000 pixels, over --max_pixels=40,000,000 "
                                         "(checked from the header, nothing decoded; raise --max_pixels to read it)")
    assert "16-bit or floating-point" in by_name["deep.tiff"].error and "PNG" in by_name["deep.tiff"].error
    assert by_name["long.gif"].error is None and by_name["face.jpg"].error is None
    # A lower limit: the 3-frame GIF counts 3 x 38,804 pixels, a single CelebA image fits.
    refused.add(files[2])
    limited = inference.Predictor(result["run_dir"], inference.PredictOptions(max_pixels=100_000))
    by_name = {os.path.basename(p.file): p for p in limited
               .predict(files)}
    assert by_name["long.gif"].error.startswith("too large: 178x218 x 3 frames = 116,412 pixels, over "
                                                "--max_pixels=100,000")
    assert by_name["face.jpg"].error is None


def test_flip_tta_averages_the_face_and_its_mirror(trained_run, celeba_original, tmp_path):
    _, result = trained_run
    # At the model's size (64x52), so that the mirror's input is exactly the mirror of the face's input.
    face = np.asarray(Image.open(_face(celeba_original, 6)).convert("RGB").resize((52, 64)))
    Image.fromarray(face).save(tmp_path / "face.png")
    Image.fromarray(np.ascontiguousarray(face[:, ::-1])).save(tmp_path / "mirror.png")
    files = [str(tmp_path / "face.png"), str(tmp_path / "mirror.png")]
    plain = inference.Predictor(result["run_dir"]).predict(files)
    flip = inference.Predictor(result["run_dir"], inference.PredictOptions(tta="flip")).predict(files)
    # The average of a face and its mirror is the same for the face and for its mirror...
    assert flip[0].probabilities["Male"] == pytest.approx(flip[1].probabilities["Male"], abs=1e-6)
    # ... and it is the mean of the two plain predictions.
    mean = (plain[0].probabilities["Male"] + plain[1].probabilities["Male"]) / 2
    assert flip[0].probabilities["Male"] == pytest.approx(mean, abs=1e-6)
    assert plain[0].probabilities["Male"] != pytest.approx(plain[1].probabilities["Male"], abs=1e-6)


def test_explain_writes_a_gradcam_overlay_per_prediction(trained_run, photos_dir, celeba_original, tmp_path):
    _, result = trained_run
    Image.fromarray(canvas_with_face(_face(celeba_original, 1))).save(os.path.join(photos_dir, "group.png"))
    predictor = inference.Predictor(result["run_dir"])
    out = str(tmp_path / "explain")
    plain = predictor.predict(inference.list_inputs([photos_dir]), explain_dir=out)
    faces = predictor.predict([os.path.join(photos_dir, "group.png")], faces=True, explain_dir=out)
    predicted = [p for p in plain + faces if p.error is None]
    assert len(predicted) == 4 and all(p.explanation and os.path.dirname(p.explanation) == out for p in predicted)
    assert len({p.explanation for p in predicted}) == 4  # group.png, whole and as a face, gets two names
    for p in predicted:
        overlay = Image.open(p.explanation)
        assert overlay.format == "PNG" and overlay.size[0] > 2 * 89  # the input and its overlay side by side
    assert all(p.explanation is None for p in plain if p.error)


def test_without_mtcnn_detect_faces_falls_back_on_haar_and_says_so(trained_run, astronaut, tmp_path, monkeypatch):
    _, result = trained_run
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # import mtcnn raises ImportError
    Image.fromarray(_two_faces(astronaut, seed=3)[0]).save(tmp_path / "two.png")
    found = inference.Predictor(result["run_dir"]).predict([str(tmp_path / "two.png")], faces=True)
    assert found and all(p.error is None and "Haar" in p.note and p.confidence is None for p in found)
    assert any(p.landmarks and set(p.landmarks) == {"left_eye", "right_eye"} for p in found)  # aligned by the eyes


def test_tta_and_explain_work_on_aligned_faces(trained_run, astronaut, tmp_path):
    _, result = trained_run
    image, _ = _two_faces(astronaut, seed=1)
    path = str(tmp_path / "two.png")
    Image.fromarray(image).save(path)
    predictor = inference.Predictor(result["run_dir"], inference.PredictOptions(tta="flip", face_confidence=0.5))
    found = predictor.predict([path], faces=True, explain_dir=str(tmp_path / "explain"))
    assert len(found) == 2 and len({p.explanation for p in found}) == 2
    assert all(Image.open(p.explanation).format == "PNG" for p in found)
    # Each face's flip average is that of its aligned crop and the crop's mirror image.
    photo = photos.open_photo(path)
    for p, face in zip(found, predictor.find_faces(image)):
        crop, _ = predictor.face_input(photo, image, face)
        both = np.asarray(predictor.model(np.stack([crop, crop[:, ::-1]]), training=False))
        assert p.probabilities["Male"] == pytest.approx(both[:, 1].mean(), abs=1e-5)


def _cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_predict_cli_detects_faces_and_reports_files_without_one(trained_run, photos_dir, celeba_original, astronaut,
                                                                 tmp_path):
    _, result = trained_run
    Image.fromarray(canvas_with_face(_face(celeba_original, 1))).save(os.path.join(photos_dir, "group.png"))
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(os.path.join(photos_dir, "wall.png"))
    image, known = _two_faces(astronaut, seed=2)
    Image.fromarray(image).save(os.path.join(photos_dir, "two.png"))
    done = _cli(f"--run_dir={result['run_dir']}", "--detect_faces", f"--output={tmp_path}/out.csv", "--max_faces=1",
                "--face_confidence=0.9", photos_dir)
    assert done.returncode == 1, done.stderr[-2000:]  # some inputs could not be predicted
    lines = {line.split("\t")[0].rsplit("/", 1)[-1]: line for line in done.stdout.splitlines() if "\t" in line}
    assert "box x=" in lines["group.png"] and ("\tFemale\t" in lines["group.png"] or "\tMale\t" in lines["group.png"])
    assert re.search(r"\tbox x=\d+ y=\d+ w=\d+ h=\d+ face (0\.9\d\d|1\.000)\t", lines["two.png"])
    assert "error: no face found" in lines["wall.png"]
    assert "error: not an image" in lines["notes.txt"]
    assert "input(s) without a prediction" in done.stderr and "Traceback" not in done.stderr
    rows = [r for r in csv.DictReader(open(tmp_path / "out.csv")) if r["file"].endswith("two.png")]
    assert len(rows) == 1  # --max_faces=1: the more confident face, its eyes where one of the faces has them
    eyes = np.array([[float(rows[0][f"{e}_{a}"]) for a in "xy"] for e in ("left_eye", "right_eye")])
    assert min(np.abs(eyes - k[:2]).max() / np.linalg.norm(k[1] - k[0]) for k in known) < 0.1


@pytest.mark.slow
def test_predict_cli_exit_codes(trained_run, celeba_original, tmp_path):
    _, result = trained_run
    good = [_face(celeba_original, 7), _face(celeba_original, 8)]
    # 0 (every input predicted, --explain beside --output): tests/test_docs.py runs the README's commands.
    # 1: some inputs unreadable; the others are still printed and written, each failure listed with its reason.
    Image.open(good[1]).resize((356, 436)).save(tmp_path / "big.png")  # 155,216 pixels
    done = _cli(f"--run_dir={result['run_dir']}", f"--output={tmp_path}/some.csv", "--max_pixels=100000",
                good[0], str(tmp_path / "big.png"), str(tmp_path / "missing.jpg"))
    assert done.returncode == 1
    rows = list(csv.DictReader(open(tmp_path / "some.csv")))
    assert [r["error"] for r in rows] == [
        "", "too large: 356x436 = 155,216 pixels, over --max_pixels=100,000 (checked from the header, nothing "
        "decoded; raise --max_pixels to read it)", "no such file"]
    assert rows[0]["label"] in ("Female", "Male") and f"{good[0]}\twhole image\t{rows[0]['label']}" in done.stdout
    assert f"{tmp_path / 'missing.jpg'}: no such file" in done.stderr and "2 of 3 input(s)" in done.stderr
    # 2: user errors, one line each: a run without export/, a bad flag value.
    (tmp_path / "not_a_run").mkdir()
    for args, message in (([f"--run_dir={tmp_path / 'not_a_run'}", good[0]], "export/model.keras does not exist"),
                          ([f"--run_dir={result['run_dir']}", "--tta=rotate", good[0]], "--tta"),
                          ([f"--run_dir={result['run_dir']}", "--align=nose", good[0]], "--align")):
        done = _cli(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith("predict: error: ") and message in done.stderr
        assert "Traceback" not in done.stderr
