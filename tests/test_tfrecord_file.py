"""The TensorFlow-free TFRecord writer must produce exactly what TensorFlow writes and reads."""

import numpy as np
import pytest
import tensorflow as tf

from celeba_gender.convert import writer
from celeba_gender.shards import schema, tfrecord


def _tf_example(features: dict) -> bytes:
    example = tf.train.Example()
    for key, value in features.items():
        feature = example.features.feature[key]
        values = value if isinstance(value, list) else [value]
        if isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif isinstance(values[0], float):
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    return example.SerializeToString(deterministic=True)


def test_example_bytes_equal_tensorflow_deterministic_serialisation():
    features = {"image/encoded": b"\xff\xd8\xff" + bytes(range(256)) * 3, "image/height": 218,
                "image/identity": -1, "big": 2**40, "negative_list": [-5, 0, 7, -(2**63)],
                "floats": [1.5, -2.25], "image/class/text": b"Male", "a": [b"x", b"", b"yz"]}
    assert tfrecord.encode_example(features) == _tf_example(features)


def test_numpy_integers_and_text_are_encoded_like_python_values():
    ours = tfrecord.encode_example({"n": np.int64(3), "l": list(np.array([0, 1], np.int8)), "t": "Male"})
    assert ours == _tf_example({"n": 3, "l": [0, 1], "t": b"Male"})


def test_framing_equals_tf_writer_and_reads_back_with_crc_checks(tmp_path):
    payloads = [b"", b"a", bytes(range(256)) * 40]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    with open(ours, "wb") as f:
        for p in payloads:
            f.write(tfrecord.frame_record(p))
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for p in payloads:
            w.write(p)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == payloads


def test_records_are_counted_from_the_headers_and_truncation_is_caught(tmp_path):
    path = tmp_path / "shard.tfrecord"
    data = b"".join(tfrecord.frame_record(p) for p in (b"", b"a", bytes(range(256)) * 40))
    path.write_bytes(data)
    assert tfrecord.count_records(str(path)) == 3
    for cut, where in ((len(data) - 1, "ends inside a record:"), (len(data) - 1 - 10240 - 12 - 4 + 3, "header")):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=where):
            tfrecord.count_records(str(path))


def test_a_flipped_bit_is_caught_by_tensorflow(tmp_path):
    path = tmp_path / "bad.tfrecord"
    data = bytearray(tfrecord.frame_record(b"hello world" * 10))
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        list(tf.data.TFRecordDataset(str(path)))
    except tf.errors.DataLossError:
        return
    raise AssertionError("a corrupted record was read without a DataLossError")


def test_shard_writer_is_atomic_and_reports_the_file_checksum(tmp_path):
    final = tmp_path / "train-00000-of-00001.tfrecord"
    w = writer.ShardWriter(str(final))
    w.write(b"one")
    assert not final.exists()  # only the temporary file exists until commit
    sha = w.commit()
    assert final.exists() and sha == writer.file_sha256(str(final))
    assert not list(tmp_path.glob(".*tmp*"))
    aborted = writer.ShardWriter(str(tmp_path / "x.tfrecord"))
    aborted.write(b"two")
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_record_schema_round_trip_through_parse_example():
    fields = schema.ExampleFields(filename="000001.jpg", label=1, class_text="Male", sha256="ab" * 32,
                                  height=218, width=178, identity=2880, attributes=(0, 1, 1))
    serialized = schema.encode_example(b"\xff\xd8\xffjpeg", fields)
    parsed = schema.parse_example(tf.constant(serialized), num_attributes=3)
    assert set(parsed) == {f.key for f in schema.FEATURES}
    assert parsed[schema.ENCODED].numpy() == b"\xff\xd8\xffjpeg"
    assert parsed[schema.LABEL].numpy() == 1 and parsed[schema.IDENTITY].numpy() == 2880
    assert parsed[schema.CLASS_TEXT].numpy() == b"Male" and parsed[schema.FORMAT].numpy() == b"jpeg"
    assert list(parsed[schema.ATTRIBUTES].numpy()) == [0, 1, 1]
    batch = schema.parse_example(tf.constant([serialized] * 2), 3, keys=[schema.LABEL])
    assert list(batch) == [schema.LABEL] and list(batch[schema.LABEL].numpy()) == [1, 1]
