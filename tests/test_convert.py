"""make_tfrecords end to end on synthetic CelebA: counts, round trips, bad input, resume, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import tensorflow as tf

from celeba_gender import convert, records, writer
from celeba_gender.celeba import detect_layout, read_celeba
from celeba_gender.storage import MANIFEST as FILENAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_split(out_dir: str, manifest: dict, split: str) -> list[dict]:
    """Every record of a split as a dict of numpy values, shard by shard in manifest order."""
    files = [os.path.join(out_dir, s["file"]) for s in manifest["splits"][split]["shards"]]
    if not files:
        return []
    n = len(manifest["attribute_names"])
    return [{k: v.numpy() for k, v in records.parse_example(r, n).items()}
            for r in tf.data.TFRecordDataset(files)]


def shard_bytes(out_dir: str) -> dict[str, bytes]:
    return {f: open(os.path.join(out_dir, f), "rb").read() for f in sorted(os.listdir(out_dir))
            if f.endswith(".tfrecord")}


def run_cli(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """make_tfrecords.py in a subprocess (or ``script`` run before it, to interrupt it)."""
    cmd = [sys.executable, os.path.join(ROOT, "make_tfrecords.py"), *args, "--progress=false"]
    if script is not None:
        cmd = [sys.executable, "-c", script, *args, "--progress=false"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_shards_hold_exactly_the_plan_and_the_source_bytes(celeba_original, shards):
    out_dir, manifest = shards
    assert manifest["status"] == "complete" and manifest["class_names"] == ["Female", "Male"]
    table, _ = read_celeba(detect_layout(celeba_original))
    by_id = table.set_index("image_id")
    seen = set()
    for split, info in manifest["splits"].items():
        recs = read_split(out_dir, manifest, split)
        assert len(recs) == info["count"] > 0
        labels = [int(r[records.LABEL]) for r in recs]
        assert {"Female": labels.count(0), "Male": labels.count(1)} == info["class_counts"]
        for shard in info["shards"]:  # the manifest's checksums and sizes are the files'
            path = os.path.join(out_dir, shard["file"])
            assert writer.file_sha256(path) == shard["sha256"] and os.path.getsize(path) == shard["bytes"]
        assert sum(s["records"] for s in info["shards"]) == info["count"]
        for r in recs:
            image_id = r[records.FILENAME].decode()
            row = by_id.loc[image_id]
            data = open(row["path"], "rb").read()
            assert r[records.ENCODED] == data  # the original bytes, never re-encoded
            assert r[records.SHA256].decode() == hashlib.sha256(data).hexdigest()
            assert r[records.LABEL] == row["Male"]
            assert r[records.CLASS_TEXT].decode() == ("Male" if row["Male"] else "Female")
            assert list(r[records.ATTRIBUTES]) == [row[a] for a in manifest["attribute_names"]]
            assert r[records.IDENTITY] == row["identity"]
            assert ("train", "validation", "test")[row["partition"]] == split  # official partition kept
            assert (r[records.HEIGHT], r[records.WIDTH]) == (218, 178)
            seen.add(image_id)
    assert len(seen) == sum(i["count"] for i in manifest["splits"].values())
    assert len(seen) + manifest["dropped_counts"].get("duplicate", 0) == len(table)
    image = tf.io.decode_jpeg(read_split(out_dir, manifest, "test")[0][records.ENCODED], channels=3)
    assert image.shape == (218, 178, 3)


def test_exact_and_near_copies_never_straddle_splits(celeba_original_info, tmp_path):
    info = celeba_original_info
    assert info.exact_duplicates and info.near_duplicates
    manifest = convert.convert(convert.ConvertConfig(celeba_dir=info.out_dir, out_dir=str(tmp_path),
                                                     dedupe="near", workers=2, progress=False))
    split_of = {}
    for split in manifest["splits"]:
        for r in read_split(str(tmp_path), manifest, split):
            split_of[r[records.FILENAME].decode()] = split
    for copy, original in info.exact_duplicates + info.near_duplicates:
        assert not (copy in split_of and original in split_of), (copy, original)
        assert original in split_of  # the smaller id is the one kept
    reasons = {d["image_id"]: d["reason"] for d in manifest["dropped"]}
    assert {reasons[c] for c, _ in info.exact_duplicates} == {"duplicate"}
    assert {reasons[c] for c, _ in info.near_duplicates} == {"near_duplicate"}
    # Different images of the same identity are not mistaken for near copies.
    assert manifest["dropped_counts"]["near_duplicate"] == len(info.near_duplicates)


def _damage(celeba_dir: str) -> dict[str, str]:
    """Breaks files and rows the ways real downloads break; returns {image_id: expected reason}."""
    img = os.path.join(celeba_dir, "img_align_celeba")
    data = open(os.path.join(img, "000010.jpg"), "rb").read()
    open(os.path.join(img, "000010.jpg"), "wb").write(data[: len(data) // 2])  # truncated download
    open(os.path.join(img, "000011.jpg"), "wb").write(b"\xff\xd8\xff" + os.urandom(3000))  # garbage
    open(os.path.join(img, "000012.jpg"), "wb").write(b"")
    from PIL import Image
    Image.new("RGB", (178, 218), "red").save(os.path.join(img, "000013.jpg"), format="PNG")  # a PNG in disguise
    os.remove(os.path.join(img, "000014.jpg"))
    attr = os.path.join(celeba_dir, "list_attr_celeba.txt")
    lines = open(attr).read().splitlines()
    lines[2 + 14] = lines[2 + 14].replace("-1", " 7", 1)  # 000015.jpg: a value that is not -1/0/1
    lines.append("../escape.jpg " + " ".join(["1"] * 40))
    lines.append("999999.jpg " + " ".join(["1"] * 40))  # a row whose file does not exist
    open(attr, "w").write("\n".join(lines) + "\n")
    return {"000010.jpg": "corrupt", "000011.jpg": "corrupt", "000012.jpg": "not_jpeg", "000013.jpg": "not_jpeg",
            "000014.jpg": "missing", "000015.jpg": "bad_label", "../escape.jpg": "unsafe_path",
            "999999.jpg": "missing"}


def test_bad_input_is_skipped_and_reported(celeba_copy, tmp_path):
    expected = _damage(celeba_copy)
    truncated = open(os.path.join(celeba_copy, "img_align_celeba", "000010.jpg"), "rb").read()
    with pytest.raises(tf.errors.InvalidArgumentError):  # what the scan rejects, TensorFlow cannot decode
        tf.io.decode_jpeg(truncated)
    out = str(tmp_path / "out")
    manifest = convert.convert(convert.ConvertConfig(celeba_dir=celeba_copy, out_dir=out, max_bad_fraction=0.05,
                                                     workers=2, progress=False))
    reasons = {d["image_id"]: d["reason"] for d in manifest["dropped"]}
    assert {k: reasons.get(k) for k in expected} == expected
    written = {r[records.FILENAME].decode() for s in manifest["splits"] for r in read_split(out, manifest, s)}
    assert not written & set(expected)
    assert manifest["dropped_counts"]["missing"] == 2 and manifest["dropped_counts"]["corrupt"] == 2


def test_too_much_bad_input_fails_after_writing_the_report(celeba_copy, tmp_path):
    _damage(celeba_copy)
    out = str(tmp_path / "out")
    result = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={out}", "--max_bad_fraction=0.001")
    assert result.returncode == 2
    assert "are unusable, more than --max_bad_fraction=0.001" in result.stderr
    assert "Traceback" not in result.stderr
    manifest = json.load(open(os.path.join(out, FILENAME)))
    assert manifest["status"] == "failed" and manifest["dropped_counts"]["corrupt"] == 2
    assert not [f for f in os.listdir(out) if f.endswith(".tfrecord")]


# Runs the converter in this process and kills it with `signal` in the middle of shard number 3.
_INTERRUPT = textwrap.dedent("""
    import os, signal, sys
    from celeba_gender import writer
    from celeba_gender.cli import convert
    original_commit, commits = writer.ShardWriter.commit, []
    def write(self, data, _original=writer.ShardWriter.write):
        _original(self, data)
        if len(commits) == 3:
            self._file.flush()
            os.kill(os.getpid(), signal.{signal})
    def commit(self):
        commits.append(self.path)
        return original_commit(self)
    writer.ShardWriter.write, writer.ShardWriter.commit = write, commit
    sys.argv[0] = "make_tfrecords.py"
    convert.run()
""")


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_an_interrupted_run_resumes_to_the_shards_of_a_clean_run(celeba_original, tmp_path, sig):
    args = [f"--celeba_dir={celeba_original}", "--num_shards=6", "--workers=1"]
    clean = run_cli(*args, f"--out_dir={tmp_path / 'clean'}")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "resumed"
    killed = run_cli(*args, f"--out_dir={out}", script=_INTERRUPT.format(signal=sig))
    if sig == "SIGKILL":
        assert killed.returncode == -signal.SIGKILL
        assert [f for f in os.listdir(out) if ".tmp-" in f]  # a half-written shard was left behind
    else:
        assert killed.returncode == 130 and "run the same command again to resume" in killed.stderr
        assert "Traceback" not in killed.stderr
    partial = json.load(open(out / FILENAME))
    assert partial["status"] == "in_progress"
    kept = {s["file"]: s for split in partial["splits"].values() for s in split["shards"]}
    assert len(kept) == 3
    before = {f: os.stat(out / f).st_mtime_ns for f in kept}
    resumed = run_cli(*args, f"--out_dir={out}")
    assert resumed.returncode == 0, resumed.stderr
    assert shard_bytes(str(out)) == shard_bytes(str(tmp_path / "clean"))
    assert {f: os.stat(out / f).st_mtime_ns for f in kept} == before  # finished shards were not rewritten
    assert not [f for f in os.listdir(out) if ".tmp-" in f]
    final = json.load(open(out / FILENAME))
    assert final["status"] == "complete" and final["splits"] == json.load(open(tmp_path / "clean" / FILENAME))["splits"]


def test_a_changed_shard_is_rewritten_and_other_options_need_overwrite(celeba_original, tmp_path):
    out = str(tmp_path / "out")
    config = convert.ConvertConfig(celeba_dir=celeba_original, out_dir=out, num_shards=2, workers=1, progress=False)
    manifest = convert.convert(config)
    first = manifest["splits"]["train"]["shards"][0]["file"]
    good = open(os.path.join(out, first), "rb").read()
    open(os.path.join(out, first), "ab").write(b"junk")
    convert.convert(config)
    assert open(os.path.join(out, first), "rb").read() == good
    with pytest.raises(convert.ConvertError, match=r"other options \(dedupe: 'exact' -> 'none'\).*--overwrite"):
        convert.convert(convert.ConvertConfig(**{**config.__dict__, "dedupe": "none"}))
    manifest = convert.convert(convert.ConvertConfig(**{**config.__dict__, "dedupe": "none", "overwrite": True}))
    assert manifest["options"]["dedupe"] == "none" and "duplicate" not in manifest["dropped_counts"]


def test_copies_left_in_different_splits_are_warned_about():
    plan = pd.DataFrame({"sha256": ["a", "a", "b", "b"], "split": ["train", "test", "train", "train"]})
    none = convert.ConvertConfig(dedupe="none")
    assert convert._straddling_copies(plan, none) == [
        "1 groups of byte-identical images are in more than one split (--dedupe=none): the test set sees "
        "training images."]
    assert convert._straddling_copies(plan[plan["sha256"] == "b"], none) == []


def test_identity_split_and_balance_end_to_end(celeba_original, tmp_path):
    out = str(tmp_path / "out")
    manifest = convert.convert(convert.ConvertConfig(celeba_dir=celeba_original, out_dir=out, split="identity",
                                                     balance=True, workers=1, progress=False))
    identities = {}
    for split, info in manifest["splits"].items():
        assert info["class_counts"]["Female"] == info["class_counts"]["Male"]
        identities[split] = {int(r[records.IDENTITY]) for r in read_split(out, manifest, split)}
    assert not identities["train"] & identities["test"] and not identities["train"] & identities["validation"]
    assert not identities["validation"] & identities["test"]
    assert manifest["dropped_counts"]["balanced_out"] > 0


def test_seed_split_end_to_end_records_the_protocol(celeba_original, tmp_path):
    out = str(tmp_path / "out")
    manifest = convert.convert(convert.ConvertConfig(celeba_dir=celeba_original, out_dir=out, split="seed",
                                                     limit=300, balance=True, workers=1, progress=False))
    protocol = manifest["seed_protocol"]
    assert protocol["sampled"] == 300
    counts = protocol["sampled_class_counts"]
    assert protocol["selected"] == 2 * min(counts.values())
    sizes = protocol["split_sizes"]
    assert sizes["test"] + sizes["validation"] == -(-protocol["selected"] * 2 // 10)  # ceil(0.2 n)
    written = sum(i["count"] for i in manifest["splits"].values())
    assert written == protocol["selected"] - manifest["dropped_counts"].get("duplicate", 0)


def test_kaggle_layout_converts(celeba_kaggle, tmp_path):
    manifest = convert.convert(convert.ConvertConfig(celeba_dir=celeba_kaggle, out_dir=str(tmp_path),
                                                     workers=1, progress=False))
    assert manifest["source"]["form"] == "kaggle"
    assert sum(i["count"] for i in manifest["splits"].values()) >= 118


def test_cli_whole_input_errors_are_one_clear_line(celeba_copy, tmp_path):
    bad_attr = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={tmp_path}/a", "--attribute=male")
    assert bad_attr.returncode == 2 and "Did you mean --attribute=Male?" in bad_attr.stderr
    os.remove(os.path.join(celeba_copy, "list_eval_partition.txt"))
    no_partition = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={tmp_path}/b")
    assert no_partition.returncode == 2 and "--split=official needs list_eval_partition.txt" in no_partition.stderr
    open(os.path.join(celeba_copy, "list_eval_partition.txt"), "w").write("nothing.jpg 0\n")
    empty = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={tmp_path}/c")
    assert empty.returncode == 2 and "Nothing left to write" in empty.stderr
    os.remove(os.path.join(celeba_copy, "list_attr_celeba.txt"))
    no_attr = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={tmp_path}/d")
    assert no_attr.returncode == 2 and "No attribute file" in no_attr.stderr
    bad_flag = run_cli(f"--celeba_dir={celeba_copy}", "--dedupe=fuzzy")
    assert bad_flag.returncode == 2 and "value should be one of <none|exact|near>" in bad_flag.stderr
    for r in (bad_attr, no_partition, empty, no_attr, bad_flag):
        assert "Traceback" not in r.stderr


def test_cli_synthetic_prints_the_summary(tmp_path):
    result = run_cli("--synthetic=120", f"--out_dir={tmp_path}/tfrecords", "--workers=2")
    assert result.returncode == 0, result.stderr
    assert "split" in result.stdout and "Female" in result.stdout and "images/s" in result.stdout
    assert os.path.exists(tmp_path / "synthetic_celeba_120_seed42" / "list_attr_celeba.txt")
    manifest = json.load(open(tmp_path / "tfrecords" / FILENAME))
    assert manifest["source"]["synthetic"] == 120
    again = run_cli("--synthetic=120", f"--out_dir={tmp_path}/tfrecords", "--workers=2")
    assert again.returncode == 0 and shard_bytes(str(tmp_path / "tfrecords"))


def test_summary_table_lists_splits_and_drops(shards):
    out_dir, manifest = shards
    text = convert.format_summary(manifest, out_dir)
    assert text.splitlines()[0].split() == ["split", "images", "Female", "Male", "shards", "MB"]
    assert "dropped: duplicate" in text


def test_every_converter_flagfile_parses():
    code = textwrap.dedent("""
        import glob
        from absl import flags
        from celeba_gender import convert
        from celeba_gender.cli import config_flags, convert as _  # defines the flags
        FLAGS = flags.FLAGS
        for f in sorted(glob.glob("flags/convert/*.flags") + glob.glob("flags/studies/*_data.flags")):
            FLAGS.unparse_flags()
            argv = ["make_tfrecords.py", f"--flagfile={f}"]
            FLAGS(argv)
            print(f, config_flags.build(convert.ConvertConfig, argv=argv)[0].split)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "flags/convert/seed.flags seed" in done.stdout and "flags/convert/demo.flags official" in done.stdout
    assert len(done.stdout.splitlines()) == 5
