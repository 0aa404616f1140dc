"""Probe photos for the face detection and alignment: a real face whose landmarks are known, cut out as CelebA's
alignment frames it, turned, scaled and placed at random on a larger blurred photo. The face's landmarks in the
probe are known exactly (the transform that made it), which is what the checks measure the detector's alignment
against (``tests/test_faces.py``, ``benchmarks/face_alignment.py``).

Numpy and OpenCV only; the caller brings the face and the backgrounds (the tests and the benchmark use the photos
that scikit-image ships in its wheel).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from celeba_gender.serve import faces

# The probe's face: CelebA's aligned frame scaled by this much (its eyes ~45-90 px apart), as in issue 21's probe.
SCALES = (1.2, 2.4)
MAX_ANGLE = 15.0  # degrees either way
CANVAS = (720, 960)  # height, width
BLUR_SIGMA = 6.0  # of the background, in pixels


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe photo and where its face's landmarks are."""

    image: np.ndarray  # uint8 [H, W, 3]
    landmarks: np.ndarray  # [5, 2]: the face's landmarks in the probe (faces.LANDMARK_NAMES)
    angle: float  # degrees the face was turned (counter-clockwise as seen)
    scale: float  # the face's size over CelebA's aligned frame's


def blurred_background(photo: np.ndarray, rng: np.random.Generator, size=CANVAS, sigma: float = BLUR_SIGMA):
    """A random region of ``photo`` (at least half of each side) resized to ``size`` and blurred."""
    import cv2

    h, w = photo.shape[:2]
    ch, cw = int(rng.uniform(0.5, 1.0) * h), int(rng.uniform(0.5, 1.0) * w)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    region = np.ascontiguousarray(photo[top:top + ch, left:left + cw])
    if region.ndim == 2:
        region = np.stack([region] * 3, -1)
    resized = cv2.resize(region[..., :3], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(resized, (0, 0), sigma)


def make_probe(photo: np.ndarray, landmarks, background: np.ndarray, rng: np.random.Generator,
               scales=SCALES, max_angle: float = MAX_ANGLE) -> Probe:
    """The face of ``photo`` (its five ``landmarks`` known), framed as CelebA's alignment frames it, turned by up to
    ``max_angle`` degrees, scaled ``scales`` times the 218x178 frame and pasted at a random place of
    ``background`` (whose size the probe takes), its edge feathered over two pixels."""
    import cv2

    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    height, width = faces.CELEBA_SIZE
    scale, angle = float(rng.uniform(*scales)), float(rng.uniform(-max_angle, max_angle))
    # frame -> probe: turn and scale about the frame's centre, then put that centre at a random place where the
    # whole turned frame fits.
    rad = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(rad), np.sin(rad)], [-np.sin(rad), np.cos(rad)]])  # counter-clockwise on screen
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    corners = (np.array([[0, 0], [width, 0], [0, height], [width, height]]) - centre) @ rot.T
    low, high = -corners.min(0), np.array(background.shape[1::-1]) - corners.max(0)
    if np.any(high <= low):
        raise ValueError(f"a {background.shape[1]}x{background.shape[0]} background cannot hold the face at "
                         f"scale {scale:.2f}")
    place = rng.uniform(low, high)
    frame_to_probe = np.hstack([rot, (place - rot @ centre)[:, None]])
    photo_to_probe = faces.compose(frame_to_probe, faces.alignment_matrix(landmarks))
    size = (background.shape[1], background.shape[0])
    face = cv2.warpAffine(photo, photo_to_probe, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(np.ones((height, width), np.float32), frame_to_probe, size, flags=cv2.INTER_LINEAR)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    image = np.clip(np.round(mask * face + (1 - mask) * background), 0, 255).astype(np.uint8)
    return Probe(image, faces.apply(photo_to_probe, landmarks), angle, scale)
