"""One way to turn image bytes into the model's input, used by training, evaluation, the SavedModel's JPEG
signature and predict.py, so that all of them see the same pixels for the same file.

The rule, for a model input of ``size`` (height, width):

1. a JPEG whose stored size divided by 1, 2, 4 or 8 (rounded up) is exactly ``size`` is decoded straight at
   that scale by libjpeg (far cheaper than decoding in full and resizing: CelebA's 218x178 -> 109x89);
2. anything else (other sizes, PNG, BMP, GIF's first frame) is decoded in full, and the largest central crop
   with the target's aspect ratio is resized to ``size`` (antialiased bilinear); an image already of that
   size comes back unchanged.

When the caller knows every image's stored size (the shards' manifest says so), the choice is made once when
the graph is built; otherwise it is made per image from the JPEG header. Both give the same pixels.
"""

from __future__ import annotations

import math

import tensorflow as tf

# libjpeg's DCT scaling factors (besides 1).
JPEG_RATIOS = (2, 4, 8)


def jpeg_ratio(stored_size: tuple[int, int], size: tuple[int, int]) -> int | None:
    """The scale (1, 2, 4 or 8) at which libjpeg decodes ``stored_size`` straight to ``size``, else None."""
    for r in (1, *JPEG_RATIOS):
        if (math.ceil(stored_size[0] / r), math.ceil(stored_size[1] / r)) == tuple(size):
            return r
    return None


def fit_to_size(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 ``size``: the largest central crop with the target's aspect ratio, resized
    (antialiased bilinear). An image already of that size comes back unchanged."""
    h, w = size
    shape = tf.shape(image)
    src_h, src_w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.minimum(src_h / h, src_w / w)
    crop_h = tf.cast(tf.round(h * scale), tf.int32)
    crop_w = tf.cast(tf.round(w * scale), tf.int32)
    image = tf.image.crop_to_bounding_box(image, (shape[0] - crop_h) // 2, (shape[1] - crop_w) // 2, crop_h, crop_w)
    image = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
    return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), (h, w, 3))


def _decode_any(encoded: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return fit_to_size(image, size)


def decode_image(encoded: tf.Tensor, size: tuple[int, int] | None,
                 stored_size: tuple[int, int] | None = None) -> tf.Tensor:
    """Image bytes -> uint8 [height, width, 3] by the module's rule.

    ``size`` None keeps the stored size (which must then be known or the images all alike). ``stored_size``:
    the size of every image that will pass through here, when known (shards); None for arbitrary files.
    """
    if size is None:
        image = tf.io.decode_jpeg(encoded, channels=3)
        return image if stored_size is None else tf.ensure_shape(image, (*stored_size, 3))
    size = tuple(int(s) for s in size)
    if stored_size is not None:
        r = jpeg_ratio(stored_size, size)
        if r is None:
            return _decode_any(encoded, size)
        return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3, ratio=r), (*size, 3))

    # Unknown size: read the JPEG header, then take the same branch the known-size path would take.
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")

    def jpeg_branch():
        shape = tf.image.extract_jpeg_shape(encoded)
        branches = []
        for r in (1, *JPEG_RATIOS):
            exact = tf.logical_and(tf.equal((shape[0] + r - 1) // r, size[0]),
                                   tf.equal((shape[1] + r - 1) // r, size[1]))
            branches.append((exact, lambda r=r: tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3, ratio=r),
                                                                (*size, 3))))
        return tf.case(branches, default=lambda: _decode_any(encoded, size), exclusive=False)

    return tf.cond(is_jpeg, jpeg_branch, lambda: _decode_any(encoded, size))
