"""predict.py: any image files, folders with junk in them, face detection, RGB order, CSV/JSON output."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from celeba_gender import inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def photos(celeba_original, tmp_path) -> str:
    """A folder with two face crops (JPEG and PNG), a text file, a truncated JPEG and a face on a big canvas."""
    folder = tmp_path / "photos"
    folder.mkdir()
    img = os.path.join(celeba_original, "img_align_celeba")
    shutil.copy(os.path.join(img, "000001.jpg"), folder / "a.jpg")
    Image.open(os.path.join(img, "000002.jpg")).save(folder / "b.png")
    (folder / "notes.txt").write_text("not a picture")
    data = open(os.path.join(img, "000003.jpg"), "rb").read()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])
    return str(folder)


def canvas_with_face(face_path: str, top: int = 100, left: int = 300) -> np.ndarray:
    canvas = np.full((480, 640, 3), 128, np.uint8)
    face = np.asarray(Image.open(face_path).convert("RGB"))
    canvas[top:top + face.shape[0], left:left + face.shape[1]] = face
    return canvas


def test_face_detection_crops_the_face_from_a_larger_canvas(celeba_original):
    face_path = os.path.join(celeba_original, "img_align_celeba", "000001.jpg")
    canvas = canvas_with_face(face_path)
    boxes = inference.detect_faces(canvas)
    assert boxes, "no face found on the canvas"
    x, y, w, h = boxes[0]
    assert 300 <= x + w / 2 <= 478 and 100 <= y + h / 2 <= 318  # the box is on the pasted face
    crop = inference.crop_like_celeba(canvas, boxes[0], (218, 178))
    assert crop.shape == (218, 178, 3) and crop.dtype == np.uint8
    # The crop frames the pasted aligned face (300, 100, 178, 218) closely, not some other part of the canvas.
    left, top, width, height = inference.crop_window(boxes[0], (218, 178))
    ix = max(0.0, min(left + width, 478) - max(left, 300))
    iy = max(0.0, min(top + height, 318) - max(top, 100))
    iou = ix * iy / (width * height + 178 * 218 - ix * iy)
    assert iou > 0.6
    assert abs(width / height - 178 / 218) < 1e-6
    window = canvas[int(top):int(top + height), int(left):int(left + width)]
    resized = np.asarray(Image.fromarray(window).resize((178, 218), Image.BILINEAR), np.float32)
    assert np.abs(resized - crop.astype(np.float32)).mean() < 12  # the crop shows that window
    assert inference.detect_faces(np.full((480, 640, 3), 128, np.uint8)) == []


def test_images_are_read_as_rgb_whatever_the_format(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    for ext in ("png", "bmp", "jpg"):
        Image.fromarray(red).save(tmp_path / f"red.{ext}")
        image = inference.read_image(str(tmp_path / f"red.{ext}"))
        assert image.shape == (20, 30, 3) and image[..., 0].mean() > 240 and image[..., 2].mean() < 15
    with pytest.raises(ValueError, match="no such file"):
        inference.read_image(str(tmp_path / "missing.jpg"))


def test_a_folder_with_junk_is_predicted_file_by_file(trained_run, photos, tmp_path):
    _, result = trained_run
    predictor = inference.Predictor(result["run_dir"])
    files = inference.list_inputs([photos, str(tmp_path / "missing.jpg")])
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


def test_the_model_sees_the_same_pixels_as_in_training(trained_run, celeba_original):
    """A CelebA-sized crop through predict equals the exported model on the pipeline's decode."""
    import keras
    import tensorflow as tf

    from celeba_gender.decode import fit_to_size

    _, result = trained_run
    predictor = inference.Predictor(result["run_dir"])
    path = os.path.join(celeba_original, "img_align_celeba", "000005.jpg")
    (p,) = predictor.predict([path])
    model = keras.models.load_model(result["export"]["keras"])
    image = fit_to_size(tf.io.decode_jpeg(open(path, "rb").read(), channels=3), predictor.image_size).numpy()
    ours = inference.centre_crop(inference.read_image(path), predictor.image_size)
    np.testing.assert_array_equal(ours, image)  # the same decoder and the same crop/resize as training
    expected = model(image[None], training=False).numpy()[0]
    assert p.probabilities["Male"] == pytest.approx(float(expected[1]), abs=1e-5)


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
        np.testing.assert_array_equal(inference.read_image(str(path)), expected)


def test_predict_cli_detects_faces_and_reports_files_without_one(trained_run, photos, celeba_original, tmp_path):
    _, result = trained_run
    Image.fromarray(canvas_with_face(os.path.join(celeba_original, "img_align_celeba", "000001.jpg"))).save(
        os.path.join(photos, "group.png"))
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(os.path.join(photos, "wall.png"))
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), f"--run_dir={result['run_dir']}", "--detect_faces",
           f"--output={tmp_path}/out.csv", photos]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-2000:]  # some inputs could not be predicted
    lines = {line.split("\t")[0].rsplit("/", 1)[-1]: line for line in done.stdout.splitlines() if "\t" in line}
    assert "box x=" in lines["group.png"] and ("\tFemale\t" in lines["group.png"] or "\tMale\t" in lines["group.png"])
    assert "error: no face found" in lines["wall.png"]
    assert "error: not an image" in lines["notes.txt"]
    assert "input(s) without a prediction" in done.stderr and "Traceback" not in done.stderr
    assert os.path.exists(tmp_path / "out.csv")
