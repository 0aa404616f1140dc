"""The TFRecord schema: one table of features drives writing, the parse spec and the documentation.

Keys follow TF Model Garden's image classification decoder (``image/encoded``, ``image/class/label``...),
so its readers work on these shards too. Writing needs no TensorFlow (see shards/tfrecord.py); reading
imports it lazily, so the converter never loads TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from celeba_gender.shards import tfrecord

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
    format: str = "jpeg"


@dataclasses.dataclass(frozen=True)
class Feature:
    """One key of the schema: its kind, where its value comes from, and what it holds."""

    key: str
    kind: str  # "bytes", "int64" or "int64 list"
    source: str  # the ExampleFields attribute holding the value ("image": the JPEG bytes)
    doc: str
    default: bytes | int | None = None  # parse default for records written without it; None = required


# The schema. `attributes` has one 0/1 entry per attribute column of the source, in the order of
# manifest.json's "attribute_names".
FEATURES = (
    Feature(ENCODED, "bytes", "image", "the original JPEG file, never re-encoded"),
    Feature(FORMAT, "bytes", "format", "b'jpeg'", default=b"jpeg"),
    Feature(HEIGHT, "int64", "height", "decoded height in pixels"),
    Feature(WIDTH, "int64", "width", "decoded width in pixels"),
    Feature(FILENAME, "bytes", "filename", "CelebA image id, e.g. b'000001.jpg'"),
    Feature(LABEL, "int64", "label", "class id: 0 = Female / not_<attribute>, 1 = Male / <attribute>"),
    Feature(CLASS_TEXT, "bytes", "class_text", "class name of the label"),
    Feature(SHA256, "bytes", "sha256", "hex sha256 of the JPEG bytes"),
    Feature(IDENTITY, "int64", "identity", "CelebA identity, -1 when unknown", default=-1),
    Feature(ATTRIBUTES, "int64 list", "attributes", "every attribute of the source row, 0/1"),
)


def encode_example(image_bytes: bytes, fields: ExampleFields) -> bytes:
    """Serialised ``tf.train.Example`` for one image (no TensorFlow needed)."""
    values = {}
    for f in FEATURES:
        value = image_bytes if f.source == "image" else getattr(fields, f.source)
        if f.kind == "int64":
            value = int(value)
        elif f.kind == "int64 list":
            value = [int(v) for v in value]
        values[f.key] = value
    return tfrecord.encode_example(values)


def feature_spec(num_attributes: int) -> dict:
    """The ``tf.io.parse_example`` spec for records with ``num_attributes`` attributes."""
    import tensorflow as tf  # lazily: writing records must not import TensorFlow

    spec = {}
    for f in FEATURES:
        dtype = tf.string if f.kind == "bytes" else tf.int64
        shape = [num_attributes] if f.kind == "int64 list" else []
        defaults = {} if f.default is None else {"default_value": f.default}
        spec[f.key] = tf.io.FixedLenFeature(shape, dtype, **defaults)
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


def schema_markdown() -> str:
    """The schema as a Markdown table (key, kind, what it holds), for the README."""
    rows = ["| key | kind | holds |", "|---|---|---|"]
    rows += [f"| `{f.key}` | {f.kind} | {f.doc} |" for f in FEATURES]
    return "\n".join(rows)
