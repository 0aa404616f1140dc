"""The TFRecord schema: the one place the feature keys live, for writing and for reading.

Keys follow TF Model Garden's image classification decoder (``image/encoded``, ``image/class/label``...),
so its readers work on these shards too. Writing needs no TensorFlow (see tfrecord_file.py); reading
imports it lazily, so the converter never loads TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from celeba_gender import tfrecord_file

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"
SHA256 = "image/key/sha256"
IDENTITY = "image/identity"
ATTRIBUTES = "image/attributes"

# key -> (kind, what it holds). `attributes` has one 0/1 entry per attribute column of the source, in the
# order of manifest.json's "attribute_names".
FEATURES = {
    ENCODED: ("bytes", "the original JPEG file, never re-encoded"),
    FORMAT: ("bytes", "b'jpeg'"),
    HEIGHT: ("int64", "decoded height in pixels"),
    WIDTH: ("int64", "decoded width in pixels"),
    FILENAME: ("bytes", "CelebA image id, e.g. b'000001.jpg'"),
    LABEL: ("int64", "class id: 0 = Female / not_<attribute>, 1 = Male / <attribute>"),
    CLASS_TEXT: ("bytes", "class name of the label"),
    SHA256: ("bytes", "hex sha256 of the JPEG bytes"),
    IDENTITY: ("int64", "CelebA identity, -1 when unknown"),
    ATTRIBUTES: ("int64 list", "every attribute of the source row, 0/1"),
}


@dataclasses.dataclass(frozen=True)
class ExampleFields:
    """What one record holds besides the JPEG bytes."""

    filename: str
    label: int
    class_text: str
    sha256: str
    height: int
    width: int
    identity: int
    attributes: Sequence[int]


def encode_example(image_bytes: bytes, fields: ExampleFields) -> bytes:
    """Serialised ``tf.train.Example`` for one image (no TensorFlow needed)."""
    return tfrecord_file.encode_example({
        ENCODED: image_bytes,
        FORMAT: b"jpeg",
        HEIGHT: int(fields.height),
        WIDTH: int(fields.width),
        FILENAME: fields.filename,
        LABEL: int(fields.label),
        CLASS_TEXT: fields.class_text,
        SHA256: fields.sha256,
        IDENTITY: int(fields.identity),
        ATTRIBUTES: [int(a) for a in fields.attributes],
    })


def feature_spec(num_attributes: int) -> dict:
    """The ``tf.io.parse_example`` spec for records with ``num_attributes`` attributes."""
    import tensorflow as tf  # lazily: writing records must not import TensorFlow

    spec = {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        FILENAME: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        CLASS_TEXT: tf.io.FixedLenFeature([], tf.string),
        SHA256: tf.io.FixedLenFeature([], tf.string),
        IDENTITY: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        ATTRIBUTES: tf.io.FixedLenFeature([num_attributes], tf.int64),
    }
    assert set(spec) == set(FEATURES), "FEATURES and feature_spec() must name the same keys"
    return spec


def parse_example(serialized, num_attributes: int, keys: Sequence[str] | None = None) -> dict:
    """Parses one serialised example (or a batch of them) into tensors; ``keys`` limits what is parsed.

    Parsing only the keys a pipeline needs (image and label) skips the rest of the work.
    """
    import tensorflow as tf

    spec = feature_spec(num_attributes)
    if keys is not None:
        spec = {k: spec[k] for k in keys}
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, spec)
    return tf.io.parse_example(serialized, spec)
