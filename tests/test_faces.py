"""Faces in photos (celeba_gender.serve.faces): CelebA's alignment arithmetic on known coordinates, the crop and the
decode geometry on drawn points, and MTCNN on probe photos made from a real face (scikit-image's astronaut)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from celeba_gender.serve import faces, probes

TEMPLATE = faces.CELEBA_TEMPLATE


def _similarity(angle_deg: float, scale: float, shift) -> np.ndarray:
    """2x3: turn by ``angle_deg`` (counter-clockwise as seen, y pointing down), scale, then shift."""
    rad = np.deg2rad(angle_deg)
    c, s = scale * np.cos(rad), scale * np.sin(rad)
    return np.array([[c, s, shift[0]], [-s, c, shift[1]]])


def _frame_face(mouth_drop: float = 0.0) -> np.ndarray:
    """Five landmarks in the 218x178 frame: the template's eyes, a nose, mouth corners either side of the
    template's mouth centre (moved down by ``mouth_drop``)."""
    mouth = TEMPLATE[2] + [0, mouth_drop]
    return np.array([TEMPLATE[0], TEMPLATE[1], [88.5, 130.0], mouth - [15, 0], mouth + [15, 0]])


def _blobs(shape, centres, sigma: float) -> np.ndarray:
    """uint8 RGB image, black, with a white Gaussian spot at each (x, y) centre."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    image = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)) for x, y in centres)
    return np.repeat(np.clip(np.round(255 * image), 0, 255).astype(np.uint8)[..., None], 3, -1)


def _spot(image: np.ndarray, near, radius: int = 7) -> np.ndarray:
    """The intensity-weighted centre (x, y) of the spot around ``near``."""
    x0, y0 = int(round(near[0])), int(round(near[1]))
    window = image[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    return np.array([(window * xx).sum(), (window * yy).sum()]) / window.sum()


def test_the_template_is_celebas_alignment_constant_in_zero_based_pixels():
    # align_face_celeba.m's pos_align, MATLAB pixel coordinates (1-based).
    pos_align = np.array([[70.745, 112], [108.237, 112], [89.432, 153.514]])
    np.testing.assert_allclose(TEMPLATE, pos_align - 1)
    left, right, mouth = TEMPLATE
    assert left[1] == right[1] == 111  # level eyes
    # Symmetric about the frame's centre column: the mirror image of an aligned face is aligned (--tta=flip).
    assert (left[0] + right[0]) / 2 == pytest.approx((faces.CELEBA_SIZE[1] - 1) / 2, abs=0.01)
    assert mouth[0] == pytest.approx((faces.CELEBA_SIZE[1] - 1) / 2, abs=0.1)


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(0)
    for _ in range(20):
        true = _similarity(rng.uniform(-180, 180), rng.uniform(0.2, 5), rng.uniform(-500, 500, 2))
        src = rng.uniform(0, 1000, (int(rng.integers(2, 6)), 2))
        np.testing.assert_allclose(faces.similarity_transform(src, faces.apply(true, src)), true, atol=1e-8)
    # Points that no similarity maps exactly: the least-squares one (every small change of a, b, tx, ty costs more).
    src, dst = rng.uniform(0, 100, (3, 2)), rng.uniform(0, 100, (3, 2))
    best = faces.similarity_transform(src, dst)

    def cost(m):
        return ((faces.apply(m, src) - dst) ** 2).sum()

    for k in range(4):
        step = np.zeros(4)
        step[k] = 1e-3
        for sign in (1, -1):
            a, b, tx, ty = np.array([best[0, 0], best[1, 0], best[0, 2], best[1, 2]]) + sign * step
            assert cost(np.array([[a, -b, tx], [b, a, ty]])) > cost(best)
    with pytest.raises(ValueError, match="two or more"):
        faces.similarity_transform(src[:1], dst[:1])


def test_alignment_puts_known_landmarks_on_the_template_and_turns_the_face_upright():
    to_photo = _similarity(25, 3.0, (400, 300))  # the face turned 25 degrees, 3 times CelebA's size
    landmarks = faces.apply(to_photo, _frame_face())
    for rule in faces.RULES:
        matrix = faces.alignment_matrix(landmarks, rule)
        np.testing.assert_allclose(matrix, faces.invert(to_photo), atol=1e-9)
        np.testing.assert_allclose(faces.apply(matrix, landmarks[:2]), TEMPLATE[:2], atol=1e-9)  # level: upright
    # A face whose mouth sits 10 px lower than the template's: CelebA's least squares draws the longer face smaller,
    # its eyes still level and centred (the template being symmetric within 0.06 px) but closer together; the eyes
    # rule puts them on the template's exactly.
    long_face = faces.apply(to_photo, _frame_face(mouth_drop=10))
    celeba = faces.apply(faces.alignment_matrix(long_face), long_face[:2])
    assert celeba[0, 1] == pytest.approx(celeba[1, 1], abs=0.05)
    assert (celeba[:, 0].mean() == pytest.approx(TEMPLATE[:2, 0].mean(), abs=0.1)
            and celeba[1, 0] - celeba[0, 0] < TEMPLATE[1, 0] - TEMPLATE[0, 0] - 2)
    np.testing.assert_allclose(faces.apply(faces.alignment_matrix(long_face, faces.EYES), long_face[:2]),
                               TEMPLATE[:2], atol=1e-9)
    # The eyes alone (the Haar fallback): onto the template's eyes exactly, whatever the rule.
    np.testing.assert_allclose(faces.apply(faces.alignment_matrix(long_face[:2]), long_face[:2]), TEMPLATE[:2],
                               atol=1e-9)
    with pytest.raises(ValueError, match="five landmarks"):
        faces.alignment_matrix(landmarks[:3])
    with pytest.raises(ValueError, match="rule"):
        faces.alignment_matrix(landmarks, "nose")


@pytest.mark.parametrize("scale", [0.6, 1.0, 3.3])  # a face smaller than the crop, its size, larger (reduced first)
def test_the_crop_puts_the_landmarks_on_the_template(scale):
    to_photo = _similarity(-12, scale, (60 * scale + 5, 30 * scale + 7))
    points = faces.apply(to_photo, TEMPLATE)
    photo = _blobs((int(260 * scale), int(240 * scale)), points, sigma=2.0 * scale)
    crop = faces.warp_to_celeba(photo, faces.invert(to_photo))
    assert crop.shape == (218, 178, 3) and crop.dtype == np.uint8
    for where in TEMPLATE:
        np.testing.assert_allclose(_spot(crop, where), where, atol=0.35)


def test_the_crop_replicates_the_photos_edges_where_the_frame_leaves_it():
    photo = np.full((120, 100, 3), 200, np.uint8)
    photo[:, :50] = 40
    # The face's eyes at the photo's top-left corner: most of the frame lies outside the photo.
    crop = faces.warp_to_celeba(photo, faces.similarity_transform([[5, 5], [25, 5]], TEMPLATE[:2]))
    # The frame spans the photo's x -32..63 and y -54..62: left of x 0 and above y 0 the edge pixels are repeated.
    assert crop[0, 0, 0] == crop[-1, 0, 0] == 40 and crop[0, -1, 0] == crop[-1, -1, 0] == 200
    assert crop.min() > 25  # never black (cubic rings a little at the 40 | 200 step)


@pytest.mark.parametrize("shape", [(218, 178), (436, 356), (300, 400), (500, 200)])
def test_decode_geometry_is_where_the_decode_rule_puts_each_pixel(shape):
    from celeba_gender.serve.faces import decode_geometry

    to_frame = decode_geometry(shape)
    spots = faces.apply(faces.invert(to_frame), [[50, 60], [120, 160], [89, 109]])  # frame points, in the photo
    scale = min(shape[0] / 218, shape[1] / 178)
    decoded = faces.model_crop(_blobs(shape, spots, sigma=3.0 * scale), (218, 178))
    for where in ([50, 60], [120, 160], [89, 109]):
        np.testing.assert_allclose(_spot(decoded, where), where, atol=0.3)


def test_an_image_that_already_is_an_aligned_crop_is_recognised():
    frame_face = _frame_face()
    for shape in ((218, 178), (436, 356), (109, 89), (240, 300)):  # the last: its central crop is the aligned one
        landmarks = faces.apply(faces.invert(faces.decode_geometry(shape)), frame_face)
        # (0 but for the decode rule rounding the central crop to whole pixels: a hair anisotropic)
        assert faces.alignment_shift(faces.alignment_matrix(landmarks), shape) == pytest.approx(0, abs=0.01)
        scale = min(shape[0] / 218, shape[1] / 178)
        moved = landmarks + [3 * scale, 0]  # 3 px of the frame to the right: within the tolerance
        assert faces.already_aligned(faces.alignment_matrix(moved), shape)
        moved = landmarks + [6 * scale, 0]
        assert not faces.already_aligned(faces.alignment_matrix(moved), shape)
        centre = landmarks[:2].mean(0)
        turned = faces.apply(_similarity(10, 1.0, [0, 0]), landmarks - centre) + centre
        assert not faces.already_aligned(faces.alignment_matrix(turned), shape)


def _backgrounds():
    from skimage import data

    return [data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field()]


def test_mtcnn_finds_the_face_of_every_probe_photo_and_puts_its_eyes_in_place(astronaut):
    """Each probe knows where its face's eyes are (the transform that made it); the alignment is computed from the
    landmarks MTCNN detects, and the known eyes are mapped through it: the check never reuses the landmarks the
    alignment was fitted to."""
    photo, landmarks = astronaut
    rule_eyes = faces.apply(faces.alignment_matrix(landmarks), landmarks[:2])  # CelebA's rule on known landmarks
    # For this face the rule leaves the eyes about 2 px from the template's (the template is an average).
    assert 1 < np.linalg.norm(rule_eyes - TEMPLATE[:2], axis=1).max() < 3
    detect, rng, pool = faces.MtcnnDetector(), np.random.default_rng(21), _backgrounds()
    angles = []
    for i in range(8):
        probe = probes.make_probe(photo, landmarks, probes.blurred_background(pool[i % len(pool)], rng), rng)
        found = detect(probe.image)
        assert len(found) == 1 and found[0].confidence >= faces.DEFAULT_MIN_CONFIDENCE, (i, found)
        face = found[0]
        x, y, w, h = face.box
        assert all(x <= px <= x + w and y <= py <= y + h for px, py in probe.landmarks)
        for rule, target in ((faces.CELEBA, rule_eyes), (faces.EYES, TEMPLATE[:2])):
            landed = faces.apply(faces.alignment_matrix(face.landmarks, rule), probe.landmarks[:2])
            assert np.linalg.norm(landed - target, axis=1).max() <= 3.0, (i, rule, landed, target)
        angles.append(probe.angle)
    assert max(np.abs(angles)) > 8  # turned faces among them, and they came out upright (eyes on y = 111)


def test_mtcnn_finds_no_face_where_there_is_none_and_reads_large_photos_reduced(astronaut):
    import cv2

    photo, landmarks = astronaut
    detect, rng = faces.MtcnnDetector(), np.random.default_rng(5)
    for background in _backgrounds():
        assert detect(probes.blurred_background(background, rng)) == []
    assert detect(np.zeros((10, 7, 3), np.uint8)) == []  # smaller than MTCNN's smallest window
    # A 2880x2160 photo is searched at 1280x960: the landmarks come back in the full photo's pixels.
    probe = probes.make_probe(photo, landmarks, probes.blurred_background(_backgrounds()[1], rng), rng)
    large = cv2.resize(probe.image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    found = detect(large)
    assert len(found) == 1
    known = (probe.landmarks + 0.5) * 3 - 0.5  # the face's landmarks in the large photo
    x, y, w, h = found[0].box
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in known)
    landed = faces.apply(faces.alignment_matrix(found[0].landmarks), known[:2])
    rule_eyes = faces.apply(faces.alignment_matrix(landmarks), landmarks[:2])
    assert np.linalg.norm(landed - rule_eyes, axis=1).max() <= 3.0


def test_without_mtcnn_the_haar_cascades_find_the_face_and_its_eyes(astronaut, monkeypatch):
    photo, landmarks = astronaut
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # import mtcnn raises ImportError
    detect = faces.detector()
    assert isinstance(detect, faces.HaarDetector)
    rng = np.random.default_rng(3)
    probe = probes.make_probe(photo, landmarks, probes.blurred_background(_backgrounds()[1], rng), rng,
                              max_angle=5)
    found = detect(probe.image)
    face = found[0]
    assert face.confidence is None and len(face.landmarks) == 2 and "Haar" in detect.note(face)
    landed = faces.apply(faces.alignment_matrix(face.landmarks), probe.landmarks[:2])
    assert np.linalg.norm(landed - TEMPLATE[:2], axis=1).max() <= 4.0
