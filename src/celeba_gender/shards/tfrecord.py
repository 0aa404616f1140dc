"""TFRecord files and ``tf.train.Example`` bytes, written without importing TensorFlow.

Why not ``tf.io.TFRecordWriter``: the converter writes shards from several worker processes, and importing
TensorFlow costs each of them ~3 s and ~500 MB before the first record; the converter's whole job on
20,000 images takes about that long. The two formats are small and frozen, and the tests check that
what is written here is byte-for-byte what TensorFlow writes (``SerializeToString(deterministic=True)``
and ``tf.io.TFRecordWriter``), and that TensorFlow reads it back with its CRC checks on.

Record framing (tensorflow/core/lib/io/record_writer.cc):
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``, little endian.
"""

from __future__ import annotations

import functools
import numbers
import os
import struct
from collections.abc import Mapping, Sequence

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's CRC: crc32c rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord entry holding ``data``."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data,
                     struct.pack("<I", masked_crc32c(data))))


def count_records(path: str) -> int:
    """Records in a local TFRecord file, by walking the length headers (no data is read or checked);
    ValueError when the file ends inside a record."""
    n = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            header = f.read(8)
            if len(header) < 8:
                raise ValueError(f"{path} ends inside a record header: the file is truncated.")
            pos += 8 + 4 + struct.unpack("<Q", header)[0] + 4
            f.seek(pos)
            n += 1
    if pos != size:
        raise ValueError(f"{path} ends inside a record: the file is truncated.")
    return n


# --- protobuf wire format, just enough for tf.train.Example ---------------------------------------------

# Single-byte varints (0..127) are by far the most common values here (labels, 0/1 attributes).
_SMALL_VARINTS = tuple(bytes([i]) for i in range(128))


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    if value < 0:  # int64 negatives are encoded as their 64-bit two's complement (10 bytes)
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _packed_ints(values: list) -> bytes:
    ints = [int(v) for v in values]
    if all(0 <= v < 128 for v in ints):
        return bytes(ints)  # each value is its own one-byte varint
    return b"".join(_varint(v) for v in ints)


def _feature(values: bytes | str | int | float | Sequence) -> bytes:
    """tf.train.Feature: bytes_list = 1, float_list = 2, int64_list = 3 (numbers packed)."""
    if isinstance(values, (bytes, str, numbers.Number)):
        values = [values]
    values = list(values)
    if values and isinstance(values[0], (bytes, str)):
        items = b"".join(_field(1, v.encode("utf-8") if isinstance(v, str) else v) for v in values)
        return _field(1, items)
    if values and not isinstance(values[0], numbers.Integral):  # floats (numpy's too)
        packed = struct.pack(f"<{len(values)}f", *(float(v) for v in values))
        return _field(2, _field(1, packed) if values else b"")
    return _field(3, _field(1, _packed_ints(values)) if values else b"")


@functools.lru_cache(maxsize=256)
def _key(key: str) -> bytes:
    return _field(1, key.encode("utf-8"))


def encode_example(features: Mapping[str, bytes | str | int | float | Sequence]) -> bytes:
    """Serialises a ``tf.train.Example`` from {key: value or list}; keys sorted like deterministic protobuf.

    Value types decide the list kind: bytes/str -> bytes_list, integers (numpy's too) -> int64_list,
    other numbers -> float_list. An empty list is written as an empty int64_list.
    """
    entries = b"".join(_field(1, _key(key) + _field(2, _feature(features[key]))) for key in sorted(features))
    return _field(1, entries)
