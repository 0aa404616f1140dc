"""Faces in users' photos: found with their landmarks, then framed the way CelebA's aligned images frame a face.

**Detection.** MTCNN (the ``mtcnn`` package 1.0: TensorFlow, the weights of its three small networks inside its
wheel, so it works offline) gives each face a box, a confidence and five landmarks: the two eyes, the nose and the
two mouth corners, the five points CelebA's landmark files annotate. Faces below ``min_confidence`` are dropped,
the others come most confident first. A photo larger than :data:`DETECT_MAX_SIDE` is searched in a reduced copy
(which bounds what a 12-megapixel photo costs); the landmarks are scaled back and the crop is cut from the
full-size photo. Without ``mtcnn``, OpenCV's Haar cascades are the fallback (:class:`HaarDetector`): a face box,
the two eyes when its eye cascade finds them, no confidence.

**Alignment: CelebA's own rule** (:data:`CELEBA`). CelebA's aligned images were made by ``align_face_celeba.m``
(published by CelebA's first author, Ziwei Liu, in github.com/liuziwei7/mobile-id): the non-reflective similarity
(rotation, one scale, shift) that maps the left eye, the right eye and the mouth's centre (the mean of its two
corners) onto ``(70.745, 112), (108.237, 112), (89.432, 153.514)`` by least squares (MATLAB's ``cp2tform(...,
'nonreflective similarity')``), the photo resampled (cubic, edges replicated) at MATLAB's 1-based pixel coordinates
1..178 x 1..218. :data:`CELEBA_TEMPLATE` is that constant in 0-based pixel-centre coordinates (one less on each
axis), OpenCV's convention and the landmarks'. Its eyes lie on the line y = 111 at x 69.7 and 107.2, symmetric
about the frame's centre column (88.5), so the mirror image of an aligned face is an aligned face (``--tta=flip``).
The least-squares fit leaves each face's eyes a pixel or a few from the template's, by how that face's mouth sits
relative to its eyes (2.2 px for scikit-image's astronaut), exactly as it left the faces of CelebA that the models
were trained on; it also keeps the face's scale when the head is turned sideways (the eyes come closer, the
eye-to-mouth distance does not). :data:`EYES` puts the two eyes exactly on the template's instead (the only rule
when just the eyes are known, as from the Haar fallback).

The aligned 218x178 crop then goes through the model's own decode rule
(:func:`celeba_gender.inputs.decode.fit_to_size`), as a 218x178 PNG of it would in training.

**An image that is already an aligned crop is left as it is** (:func:`already_aligned`): when aligning it would move
none of the template's points by more than :data:`ALIGNED_TOLERANCE` pixels from where the plain decoding of the
whole image puts them, the whole image goes through the decode rule unchanged, so that an image of CelebA gives the
very pixels training and evaluation saw.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np

from celeba_gender.core.errors import UserError

# The aligned crop's size (height, width): CelebA's img_align_celeba.
CELEBA_SIZE = (218, 178)
# Where CelebA's alignment puts the left eye, the right eye and the mouth's centre in that crop: align_face_celeba.m's
# pos_align (70.745, 112), (108.237, 112), (89.432, 153.514) in MATLAB's 1-based pixel coordinates, less one
# (0-based pixel centres). "Left" is the image's left, as in CelebA's landmark files and MTCNN's output.
CELEBA_TEMPLATE = np.array([[69.745, 111.0], [107.237, 111.0], [88.432, 152.514]])
# Largest side, in pixels, at which a photo is searched for faces (a larger photo is reduced for the search only).
DETECT_MAX_SIDE = 1280
# Smallest face MTCNN looks for, in pixels of the (possibly reduced) photo searched: its own default.
MIN_FACE_SIZE = 20
# Confidence (MTCNN's last stage) below which a detection is not a face; see benchmarks/README.md for how faces
# and false detections of the probe photos score.
DEFAULT_MIN_CONFIDENCE = 0.95
# An image is taken as an already aligned crop when aligning it would move each template point by at most this
# many pixels of the 218x178 frame.
ALIGNED_TOLERANCE = 4.0

# Haar fallback, a face whose eyes its eye cascade did not find: CelebA's aligned crops frame a face so that a
# frontal-face detector's box is about 1/1.5 of the crop's width, its centre a little above the middle. Calibrated
# on the synthetic faces; on the real face of benchmarks/face_alignment.py they put the eyes 17 px from CelebA's
# places (the eyes found by the eye cascade: 2 px).
CROP_WIDTH_PER_BOX = 1.5
BOX_CENTRE_HEIGHT = 0.52

# Alignment rules: CelebA's own (eyes and mouth, least squares), or the eyes alone (exactly on the template's).
CELEBA, EYES = "celeba", "eyes"
RULES = (CELEBA, EYES)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class Face:
    """One face found in a photo, in the photo's pixel coordinates."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float | None = None  # the detector's; None from the Haar fallback
    # (x, y) of LANDMARK_NAMES in that order, or of the two eyes only (the Haar fallback); None: no eyes found.
    landmarks: tuple[tuple[float, float], ...] | None = None

    def landmark_dict(self) -> dict[str, tuple[float, float]]:
        """The landmarks by name (empty without landmarks)."""
        return dict(zip(LANDMARK_NAMES, self.landmarks or ()))


# ----------------------------------------------------------------------------------------------------------------
# The alignment's arithmetic (numpy only).


class FaceError(UserError):
    """Face detection cannot run here; the message says what to install."""


def opencv():
    """The ``cv2`` module (cropping and the Haar fallback), or a FaceError saying how to install it: OpenCV is an
    extra (``celeba-gender[detect]``), so that a user's own opencv-python is not fought over."""
    try:
        import cv2
    except ImportError:
        raise FaceError("--detect_faces needs OpenCV (and MTCNN, which finds the landmarks): pip install "
                        "'celeba-gender[detect]' (or keep your own opencv-python, below version 5: the 5.x wheels ship "
                        "no face cascades, and pip install mtcnn).") from None
    return cv2


def similarity_transform(src, dst) -> np.ndarray:
    """The 2x3 matrix ``[[a, -b, tx], [b, a, ty]]`` (rotation, one scale, shift; no reflection) that maps the
    points ``src`` [N, 2] closest to ``dst`` [N, 2] by least squares (exactly for two distinct points): what
    MATLAB's ``cp2tform(src, dst, 'nonreflective similarity')`` computes."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two or more matching (x, y) points, got {src.shape} and {dst.shape}")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    # u = a x - b y + tx ; v = b x + a y + ty, stacked for every point.
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def apply(matrix: np.ndarray, points) -> np.ndarray:
    """Points [N, 2] mapped by a 2x3 affine matrix."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner`` (2x3 matrices)."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def celeba_points(landmarks) -> np.ndarray:
    """The points CelebA's alignment uses, from five landmarks (left eye, right eye, mouth's centre) or from the
    two eyes alone."""
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if len(landmarks) == 2:
        return landmarks
    if len(landmarks) != 5:
        raise ValueError(f"need the two eyes or the five landmarks {LANDMARK_NAMES}, got {len(landmarks)} points")
    return np.stack([landmarks[0], landmarks[1], landmarks[3:5].mean(0)])


def alignment_matrix(landmarks, rule: str = CELEBA) -> np.ndarray:
    """2x3: photo -> CelebA's 218x178 aligned frame. ``rule`` :data:`CELEBA` (the module's docstring): the eyes and
    the mouth's centre onto :data:`CELEBA_TEMPLATE` by least squares (the eyes alone when only they are given);
    :data:`EYES`: the two eyes onto the template's eyes exactly."""
    if rule not in RULES:
        raise ValueError(f"unknown alignment rule {rule!r}: choose one of {', '.join(RULES)}")
    points = celeba_points(landmarks)[:2 if rule == EYES else None]
    return similarity_transform(points, CELEBA_TEMPLATE[:len(points)])


def decode_geometry(shape: tuple[int, int], size: tuple[int, int] = CELEBA_SIZE) -> np.ndarray:
    """2x3: photo of ``shape`` (height, width) -> the frame of ``size`` that the decode rule
    (:func:`celeba_gender.inputs.decode.fit_to_size`: the largest central crop with the aspect ratio of ``size``,
    resized with half-pixel centres) makes of it."""
    h, w = size
    scale = min(shape[0] / h, shape[1] / w)
    crop_h, crop_w = round(h * scale), round(w * scale)
    top, left = (shape[0] - crop_h) // 2, (shape[1] - crop_w) // 2
    sy, sx = crop_h / h, crop_w / w
    # photo = offset + (frame + 0.5) * crop/size - 0.5, inverted.
    to_photo = np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5]])
    return invert(to_photo)


def alignment_shift(matrix: np.ndarray, shape: tuple[int, int]) -> float:
    """How far (pixels of the 218x178 frame) the alignment ``matrix`` moves the template's points from where the
    plain decoding of the whole photo (of ``shape``) puts them: the largest of the three."""
    plain_to_aligned = compose(matrix, invert(decode_geometry(shape)))
    return float(np.abs(apply(plain_to_aligned, CELEBA_TEMPLATE) - CELEBA_TEMPLATE).max())


def already_aligned(matrix: np.ndarray, shape: tuple[int, int], tolerance: float = ALIGNED_TOLERANCE) -> bool:
    """Whether the photo (of ``shape``) is already framed as the alignment ``matrix`` would frame it, within
    ``tolerance`` pixels of the 218x178 frame (an aligned CelebA crop, at any scale)."""
    return alignment_shift(matrix, shape) <= tolerance


# ----------------------------------------------------------------------------------------------------------------
# The crop.


def warp_to_celeba(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 218x178 aligned crop, uint8: ``image`` resampled through ``matrix`` (photo -> frame), cubic, the photo's
    edges replicated where the frame reaches past them (as CelebA's alignment did). A face larger than the crop is
    first reduced by an integer factor with area averaging, so that the cubic resampling does not alias."""
    cv2 = opencv()

    height, width = CELEBA_SIZE
    to_photo = invert(matrix)
    factor = int(math.floor(1.0 / math.sqrt(abs(np.linalg.det(matrix[:, :2])))))  # photo pixels per frame pixel
    corners = apply(to_photo, [[-1, -1], [width, -1], [-1, height], [width, height]])
    # The part of the photo that the frame covers, plus the cubic kernel's reach (2 pixels, of the reduced photo
    # below), clipped to the photo.
    margin = 3 * max(1, factor)
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - margin, 0, [image.shape[1] - 1, image.shape[0] - 1])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + margin, 1, [image.shape[1], image.shape[0]])
    region = image[y0:y1, x0:x1]
    offset = np.array([[1.0, 0, x0], [0, 1.0, y0]])  # region -> photo
    if factor >= 2:
        rh, rw = region.shape[0] // factor, region.shape[1] // factor
        if rh >= 1 and rw >= 1:
            region = cv2.resize(region[:rh * factor, :rw * factor], (rw, rh), interpolation=cv2.INTER_AREA)
            # Reduced pixel i averages region pixels factor*i .. factor*i + factor - 1: its centre is below.
            offset = compose(offset, np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]]))
    region_to_frame = compose(matrix, offset)
    return cv2.warpAffine(np.ascontiguousarray(region), region_to_frame.astype(np.float64), (width, height),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def model_crop(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 218x178 crop at the model's input ``size`` by the decode rule (unchanged when ``size`` is 218x178)."""
    import tensorflow as tf

    from celeba_gender.inputs.decode import fit_to_size

    return fit_to_size(tf.constant(crop), tuple(int(s) for s in size)).numpy()


def crop_window(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the region that frames a face box (no landmarks: the Haar fallback) like
    CelebA's aligned crops, with the aspect ratio of ``size`` (height, width)."""
    x, y, w, h = box
    crop_w = CROP_WIDTH_PER_BOX * w
    crop_h = crop_w * size[0] / size[1]
    return x + w / 2 - crop_w / 2, y + h / 2 - BOX_CENTRE_HEIGHT * crop_h, crop_w, crop_h


def crop_like_celeba(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The :func:`crop_window` of a face box, resized to ``size`` (edges replicated where the region leaves
    the photo)."""
    cv2 = opencv()

    height, width = size
    left, top, crop_w, crop_h = crop_window(box, size)
    # An affine warp samples the region directly, replicating edge pixels outside the photo.
    matrix = np.array([[crop_w / width, 0, left], [0, crop_h / height, top]], np.float32)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


# ----------------------------------------------------------------------------------------------------------------
# Detectors.


def haar_faces(image: np.ndarray, min_size: int = 40) -> list[tuple[int, int, int, int]]:
    """Frontal faces found by OpenCV's bundled Haar cascade, largest first, as (x, y, w, h)."""
    cv2 = opencv()


    path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FaceError(f"OpenCV's face cascade is missing ({path}); install opencv-python-headless<5.")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in f) for f in faces), key=lambda b: -b[2] * b[3])


def haar_eyes(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[tuple[float, float], ...] | None:
    """The centres of the two eyes that OpenCV's bundled eye cascade finds in the upper part of a face box, one in
    each half (the image's left first), or None."""
    cv2 = opencv()

    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_eye.xml"))
    x, y, w, h = box
    top = gray[max(0, y):max(0, y) + int(0.6 * h), max(0, x):max(0, x) + w]
    if cascade.empty() or top.size == 0:
        return None
    found = cascade.detectMultiScale(top, scaleFactor=1.1, minNeighbors=5, minSize=(max(8, w // 8),) * 2)
    centres = [(max(0, x) + ex + ew / 2, max(0, y) + ey + eh / 2, ew) for ex, ey, ew, eh in found]
    left = [c for c in centres if c[0] < x + w / 2]
    right = [c for c in centres if c[0] >= x + w / 2]
    if not left or not right:
        return None
    largest = [max(side, key=lambda c: c[2]) for side in (left, right)]
    return tuple((float(cx), float(cy)) for cx, cy, _ in largest)


class HaarDetector:
    """The fallback without ``mtcnn``: OpenCV's Haar cascades. Each face box gets the two eyes its eye cascade
    finds (aligned by them), or none (framed by the box, :func:`crop_window`). The boxes with eyes, larger first;
    only when no box has them, the boxes without (most of those are not faces: on the probe photos of
    benchmarks/face_alignment.py, 95 false boxes in 300 photos, 7 of them with eyes). No confidence."""

    name = "haar"

    def __call__(self, image: np.ndarray) -> list[Face]:
        cv2 = opencv()

        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found = [Face(box, None, haar_eyes(gray, box)) for box in haar_faces(image)]
        return [f for f in found if f.landmarks] or found

    @staticmethod
    def note(face: Face) -> str:
        """What the user is told about a face it found."""
        how = "aligned by its eyes" if face.landmarks else "framed by its box (no eyes found)"
        return f"found by OpenCV's Haar cascade, mtcnn not being installed: {how}"


@functools.cache
def _mtcnn():
    from mtcnn import MTCNN

    return MTCNN(stages="face_and_landmarks_detection", device="CPU:0")


class MtcnnDetector:
    """MTCNN's faces with their five landmarks, at least ``min_confidence``, most confident first."""

    name = "mtcnn"

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_side: int = DETECT_MAX_SIDE):
        self.min_confidence, self.max_side = min_confidence, max_side
        self._net = _mtcnn()

    def __call__(self, image: np.ndarray) -> list[Face]:
        cv2 = opencv()

        scale = min(1.0, self.max_side / max(image.shape[:2]))
        searched = image
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            searched = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # A threshold below MTCNN's own last-stage default (0.8) is passed on, so that it takes effect.
        rows = self._net.detect_faces(searched, output_type="numpy", box_format="xyxy",
                                      threshold_onet=min(0.8, self.min_confidence), min_face_size=MIN_FACE_SIZE)
        faces = []
        for row in np.asarray(rows, np.float64).reshape(-1, 16):
            confidence = float(row[5])
            if confidence < self.min_confidence:
                continue
            fx, fy = image.shape[1] / searched.shape[1], image.shape[0] / searched.shape[0]
            # MTCNN's columns 6-15: the five x, then the five y. Back to the full photo: a reduced pixel i covers
            # the full ones around (i + 0.5) * f - 0.5.
            points = (np.stack([row[6:11], row[11:16]], 1) + 0.5) * [fx, fy] - 0.5
            x0, y0, x1, y1 = row[1] * fx, row[2] * fy, row[3] * fx, row[4] * fy
            box = (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
            faces.append(Face(box, confidence, tuple((float(x), float(y)) for x, y in points)))
        return sorted(faces, key=lambda f: -f.confidence)

    @staticmethod
    def note(face: Face) -> None:
        """Nothing to tell: the normal case."""
        return None


def detector(min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """MTCNN when the ``mtcnn`` package can be imported, else the Haar fallback (whose ``note`` says so)."""
    try:
        import mtcnn  # noqa: F401
    except ImportError:
        return HaarDetector()
    return MtcnnDetector(min_confidence)
