"""make_tfrecords end to end on synthetic CelebA: counts, round trips, bad input, resume, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import tensorflow as tf

from celeba_gender.convert import converter, shard_plan, image_scan, writer

from celeba_gender.convert.config import ConvertConfig, ConvertError
from celeba_gender.shards import schema
from celeba_gender.convert.celeba import detect_layout, read_celeba
from celeba_gender.shards.shard_dir import MANIFEST as FILENAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_split(out_dir: str, manifest: dict, split: str) -> list[dict]:
    """Every record of a split as a dict of numpy values, shard by shard in manifest order."""
    files = [os.path.join(out_dir, s["file"]) for s in manifest["splits"][split]["shards"]]
    if not files:
        return []
    n = len(manifest["attribute_names"])
    return [{k: v.numpy() for k, v in schema.parse_example(r, n).items()}
            for r in tf.data.TFRecordDataset(files)]


def shard_bytes(out_dir: str) -> dict[str, bytes]:
    return {f: open(os.path.join(out_dir, f), "rb").read() for f in sorted(os.listdir(out_dir))
            if f.endswith(".tfrecord")}


def run_cli(*args: str, script: str | None = None, env: dict | None = None, cwd: str = ROOT
            ) -> subprocess.CompletedProcess:
    """make_tfrecords.py in a subprocess (or ``script`` run before it, to interrupt it or inject faults), with
    this checkout's sources first on the path whatever ``cwd`` is."""
    cmd = [sys.executable, os.path.join(ROOT, "make_tfrecords.py"), *args, "--progress=false"]
    if script is not None:
        cmd = [sys.executable, "-c", script, *args, "--progress=false"]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd, env=env)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``make_tfrecords: error: ...`` line of a failed run (TensorFlow may log other lines)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("make_tfrecords: error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_shards_hold_exactly_the_plan_and_the_source_bytes(celeba_original, shards):
    out_dir, manifest = shards
    assert manifest["status"] == "complete" and manifest["class_names"] == ["Female", "Male"]
    table, _ = read_celeba(detect_layout(celeba_original))
    by_id = table.set_index("image_id")
    seen = set()
    for split, info in manifest["splits"].items():
        recs = read_split(out_dir, manifest, split)
        assert len(recs) == info["count"] > 0
        labels = [int(r[schema.LABEL]) for r in recs]
        assert {"Female": labels.count(0), "Male": labels.count(1)} == info["class_counts"]
        for shard in info["shards"]:  # the manifest's checksums and sizes are the files'
            path = os.path.join(out_dir, shard["file"])
            assert writer.file_sha256(path) == shard["sha256"] and os.path.getsize(path) == shard["bytes"]
        assert sum(s["records"] for s in info["shards"]) == info["count"]
        for r in recs:
            image_id = r[schema.FILENAME].decode()
            row = by_id.loc[image_id]
            data = open(row["path"], "rb").read()
            assert r[schema.ENCODED] == data  # the original bytes, never re-encoded
            assert r[schema.SHA256].decode() == hashlib.sha256(data).hexdigest()
            assert r[schema.LABEL] == row["Male"]
            assert r[schema.CLASS_TEXT].decode() == ("Male" if row["Male"] else "Female")
            assert list(r[schema.ATTRIBUTES]) == [row[a] for a in manifest["attribute_names"]]
            assert r[schema.IDENTITY] == row["identity"]
            assert ("train", "validation", "test")[row["partition"]] == split  # official partition kept
            assert (r[schema.HEIGHT], r[schema.WIDTH]) == (218, 178)
            seen.add(image_id)
    assert len(seen) == sum(i["count"] for i in manifest["splits"].values())
    dropped = manifest["dropped_counts"]
    assert len(seen) + dropped.get("duplicate", 0) + dropped["balanced_out"] == len(table)  # balanced by default
    for info in manifest["splits"].values():
        assert info["class_counts"]["Female"] == info["class_counts"]["Male"]
    image = tf.io.decode_jpeg(read_split(out_dir, manifest, "test")[0][schema.ENCODED], channels=3)
    assert image.shape == (218, 178, 3)


def test_exact_and_near_copies_never_straddle_splits(celeba_original_info, tmp_path):
    info = celeba_original_info
    assert info.exact_duplicates and info.near_duplicates
    manifest = converter.convert(ConvertConfig(celeba_dir=info.out_dir, out_dir=str(tmp_path),
                                               dedupe="near", balance=False, workers=2, progress=False))
    split_of = {}
    for split in manifest["splits"]:
        for r in read_split(str(tmp_path), manifest, split):
            split_of[r[schema.FILENAME].decode()] = split
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
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_copy, out_dir=out, max_bad_fraction=0.05,
                                               workers=2, progress=False))
    reasons = {d["image_id"]: d["reason"] for d in manifest["dropped"]}
    assert {k: reasons.get(k) for k in expected} == expected
    written = {r[schema.FILENAME].decode() for s in manifest["splits"] for r in read_split(out, manifest, s)}
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
    from celeba_gender.convert import writer
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
    config = ConvertConfig(celeba_dir=celeba_original, out_dir=out, num_shards=2, workers=1, progress=False)
    manifest = converter.convert(config)
    first = manifest["splits"]["train"]["shards"][0]["file"]
    good = open(os.path.join(out, first), "rb").read()
    open(os.path.join(out, first), "ab").write(b"junk")
    converter.convert(config)
    assert open(os.path.join(out, first), "rb").read() == good
    with pytest.raises(ConvertError, match=r"other options \(dedupe: 'exact' -> 'none'\).*--overwrite"):
        converter.convert(ConvertConfig(**{**config.__dict__, "dedupe": "none"}))
    manifest = converter.convert(ConvertConfig(**{**config.__dict__, "dedupe": "none", "overwrite": True}))
    assert manifest["options"]["dedupe"] == "none" and "duplicate" not in manifest["dropped_counts"]


def test_copies_left_in_different_splits_are_warned_about():
    plan = pd.DataFrame({"sha256": ["a", "a", "b", "b"], "split": ["train", "test", "train", "train"]})
    none = ConvertConfig(dedupe="none")
    assert shard_plan.straddling_copies(plan, none) == [
        "1 groups of byte-identical images are in more than one split (--dedupe=none): the test set sees "
        "training images."]
    assert shard_plan.straddling_copies(plan[plan["sha256"] == "b"], none) == []


def test_identity_split_and_balance_end_to_end(celeba_original, tmp_path):
    out = str(tmp_path / "out")
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_original, out_dir=out, split="identity",
                                               balance=True, workers=1, progress=False))
    identities = {}
    for split, info in manifest["splits"].items():
        assert info["class_counts"]["Female"] == info["class_counts"]["Male"]
        identities[split] = {int(r[schema.IDENTITY]) for r in read_split(out, manifest, split)}
    assert not identities["train"] & identities["test"] and not identities["train"] & identities["validation"]
    assert not identities["validation"] & identities["test"]
    assert manifest["dropped_counts"]["balanced_out"] > 0


def test_identity_split_with_a_zero_fraction_writes_no_shard_for_that_split(celeba_original, tmp_path):
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_original, out_dir=str(tmp_path), workers=1,
                                               split="identity", split_fractions=(0.9, 0.1, 0.0),
                                               progress=False))
    assert manifest["splits"]["test"]["count"] == 0 and manifest["splits"]["test"]["shards"] == []
    assert manifest["splits"]["train"]["count"] > manifest["splits"]["validation"]["count"] > 0
    assert "test 0 dropped" in converter.format_summary(manifest, str(tmp_path))


def test_source_split_end_to_end_records_the_protocol(celeba_original, tmp_path):
    out = str(tmp_path / "out")
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_original, out_dir=out, split="source",
                                               limit=300, balance=True, workers=1, progress=False))
    protocol = manifest["source_protocol"]
    assert protocol["sampled"] == 300
    counts = protocol["sampled_class_counts"]
    assert protocol["selected"] == 2 * min(counts.values())
    sizes = protocol["split_sizes"]
    assert sizes["test"] + sizes["validation"] == -(-protocol["selected"] * 2 // 10)  # ceil(0.2 n)
    written = sum(i["count"] for i in manifest["splits"].values())
    assert written == protocol["selected"] - manifest["dropped_counts"].get("duplicate", 0)


def test_kaggle_layout_converts(celeba_kaggle, tmp_path):
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_kaggle, out_dir=str(tmp_path),
                                               balance=False, workers=1, progress=False))
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
    (tmp_path / "a_file").write_text("")
    out_is_file = run_cli(f"--celeba_dir={celeba_copy}", f"--out_dir={tmp_path}/a_file")
    assert "is a file, not a folder: choose another --out_dir." in error_line(out_is_file)
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


def _shard_state(out_dir) -> dict[str, tuple[int, str]]:
    return {f: (os.stat(os.path.join(out_dir, f)).st_mtime_ns, writer.file_sha256(os.path.join(out_dir, f)))
            for f in os.listdir(out_dir) if f.endswith(".tfrecord")}


@pytest.mark.parametrize("source", ["celeba_dir", "synthetic"])
def test_rerunning_a_finished_command_keeps_every_shard_and_prints_the_summary(celeba_original, tmp_path, source):
    args = [f"--celeba_dir={celeba_original}" if source == "celeba_dir" else "--synthetic=120",
            f"--out_dir={tmp_path}/tfrecords", "--workers=2"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    before = _shard_state(tmp_path / "tfrecords")
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert _shard_state(tmp_path / "tfrecords") == before and before  # not one shard rewritten
    assert again.stdout.splitlines()[0] == first.stdout.splitlines()[0]  # the summary table again
    assert f"nothing to do: all {len(before)} shards were already written by an earlier run" in again.stdout
    manifest = json.load(open(tmp_path / "tfrecords" / FILENAME))
    assert manifest["status"] == "complete" and manifest["shards_kept"] == len(before)
    assert not os.path.exists(tmp_path / "tfrecords" / ".lock")


# Runs the converter with one image of the plan re-encoded after the scan, before the shards are written.
_CHANGE_A_FILE = textwrap.dedent("""
    import sys
    from PIL import Image
    from celeba_gender.convert import writer
    from celeba_gender.cli import convert
    original = writer.write_shards
    def write_shards(specs, *args, **kwargs):
        path = specs[-1].items[0][0]
        Image.open(path).convert("RGB").save(path, format="JPEG", quality=60)
        return original(specs, *args, **kwargs)
    writer.write_shards = write_shards
    sys.argv[0] = "make_tfrecords.py"
    convert.run()
""")


def test_a_file_changed_between_scan_and_write_is_one_line_and_a_rerun_finishes(celeba_copy, tmp_path):
    args = [f"--celeba_dir={celeba_copy}", "--num_shards=3", "--workers=2"]  # the error crosses the pool
    changed = run_cli(*args, f"--out_dir={tmp_path}/out", script=_CHANGE_A_FILE)
    line = error_line(changed)
    assert "changed while the conversion ran" in line and "run the same command again" in line
    partial = json.load(open(tmp_path / "out" / FILENAME))
    kept = {s["file"]: os.stat(tmp_path / "out" / s["file"]).st_mtime_ns
            for split in partial["splits"].values() for s in split["shards"]}
    assert kept  # shards of the largest split were finished before the changed one came up
    rerun = run_cli(*args, f"--out_dir={tmp_path}/out")
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(*args, f"--out_dir={tmp_path}/clean").returncode == 0
    assert shard_bytes(str(tmp_path / "out")) == shard_bytes(str(tmp_path / "clean"))
    # Shards finished before the error hold other images: the rerun kept them as they were.
    assert {f: os.stat(tmp_path / "out" / f).st_mtime_ns for f in kept} == kept


def test_out_dir_with_a_tilde_goes_to_home(celeba_original, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    result = run_cli(f"--celeba_dir={celeba_original}", "--out_dir=~/x", "--workers=1",
                     env={**os.environ, "HOME": str(home)}, cwd=str(work))
    assert result.returncode == 0, result.stderr
    assert json.load(open(home / "x" / FILENAME))["status"] == "complete"
    assert not os.path.exists(work / "~")


def test_summary_table_lists_splits_and_drops(shards):
    out_dir, manifest = shards
    text = converter.format_summary(manifest, out_dir)
    assert text.splitlines()[0].split() == ["split", "images", "Female", "Male", "shards", "MB"]
    dropped = manifest["dropped_counts"]
    assert f"dropped: balanced_out {dropped['balanced_out']}, duplicate {dropped['duplicate']}  (each listed" in text
    balanced = next(line for line in text.splitlines() if line.startswith("balanced: "))
    parts = []
    for split, b in manifest["balance"].items():  # what each split had before, from the rows balancing dropped
        assert b["to"] == manifest["splits"][split]["class_counts"][b["class"]]
        change = f" ({b['class']} {b['from']} -> {b['to']})" if b["dropped"] else ""
        parts.append(f"{split} {b['dropped']} dropped{change}")
    assert balanced == "balanced: " + ", ".join(parts)
    assert sum(b["dropped"] for b in manifest["balance"].values()) == dropped["balanced_out"]


def test_every_converter_flagfile_parses(tmp_path):
    code = textwrap.dedent("""
        from absl import flags
        from celeba_gender.convert.config import ConvertConfig
        from celeba_gender.cli import config_flags, flagfiles, convert as _  # defines the flags
        FLAGS = flags.FLAGS
        for f in flagfiles.packaged():
            if not (f.startswith("convert/") or f.endswith("_data.flags")):
                continue
            FLAGS.unparse_flags()
            argv = ["make_tfrecords.py", f"--flagfile={f}"]
            config_flags.parse(argv)
            print(f, config_flags.build(ConvertConfig, argv=argv)[0].split)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "convert/source.flags source" in done.stdout and "convert/demo.flags official" in done.stdout
    assert len(done.stdout.splitlines()) == 5


# Runs the converter with a full disk injected: in a worker writing one shard, or at a manifest write.
_FULL_DISK = textwrap.dedent("""
    import errno, sys
    from celeba_gender.core import fileio
    from celeba_gender.convert import writer
    from celeba_gender.cli import convert
    where = {where!r}
    def full():
        raise OSError(errno.ENOSPC, "No space left on device")
    if where == "shard":
        original_write = writer.ShardWriter.write
        def write(self, data):
            if self.path.endswith("train-00002-of-00004.tfrecord") and self.records == 5:
                full()
            original_write(self, data)
        writer.ShardWriter.write = write
    else:
        original_json, calls = fileio.write_json, []
        def write_json(path, value):
            calls.append(path)
            if len(calls) == 4:
                full()
            original_json(path, value)
        fileio.write_json = write_json
    sys.argv[0] = "make_tfrecords.py"
    convert.run()
""")


@pytest.mark.parametrize("where", ["shard", "manifest"])
def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(celeba_original, tmp_path, where):
    args = [f"--celeba_dir={celeba_original}", "--num_shards=4", "--workers=2"]
    full = run_cli(*args, f"--out_dir={tmp_path}/out", script=_FULL_DISK.format(where=where))
    line = error_line(full)
    what = "TFRecord shards" if where == "shard" else "manifest.json"
    assert f"The disk is full: writing {what} in {tmp_path}/out failed (" in line
    assert "MB needed" in line and "are intact and are kept by the rerun" in line
    assert "Free some space and run the same command again." in line
    assert not [f for f in os.listdir(tmp_path / "out") if ".tmp-" in f]  # half-written shards give space back
    partial = json.load(open(tmp_path / "out" / FILENAME))
    kept = {s["file"]: os.stat(tmp_path / "out" / s["file"]).st_mtime_ns
            for split in partial["splits"].values() for s in split["shards"]}
    assert kept and partial["status"] == "in_progress"
    rerun = run_cli(*args, f"--out_dir={tmp_path}/out")
    assert rerun.returncode == 0, rerun.stderr
    assert run_cli(*args, f"--out_dir={tmp_path}/clean").returncode == 0
    assert shard_bytes(str(tmp_path / "out")) == shard_bytes(str(tmp_path / "clean"))
    final, expected = (json.load(open(tmp_path / d / FILENAME)) for d in ("out", "clean"))
    assert final["status"] == "complete" and final["splits"] == expected["splits"]
    assert {f: os.stat(tmp_path / "out" / f).st_mtime_ns for f in kept} == kept


def _solid_jpeg(width: int, height: int) -> bytes:
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


@pytest.mark.parametrize("near", [False, True])
def test_every_truncation_of_a_jpeg_is_caught_with_and_without_the_full_size_decode(celeba_original, near):
    # Without --dedupe=near the check decodes at 1/8 scale, which still entropy-decodes the whole file.
    data = open(os.path.join(celeba_original, "img_align_celeba", "000001.jpg"), "rb").read()
    assert image_scan.check_jpeg(data, near).problem is None
    for end in range(200, len(data) - 2, max(1, len(data) // 40)):
        result = image_scan.check_jpeg(data[:end], near)
        assert result.problem == image_scan.CORRUPT, (end, len(data), result)
        with pytest.raises(tf.errors.InvalidArgumentError):  # what TensorFlow would have met in training
            tf.io.decode_jpeg(data[:end])


def test_an_image_over_max_pixels_is_skipped_as_too_large(celeba_copy, tmp_path):
    big = _solid_jpeg(2000, 2000)  # 4 megapixels of one colour: a few tens of KB
    open(os.path.join(celeba_copy, "img_align_celeba", "000020.jpg"), "wb").write(big)
    manifest = converter.convert(ConvertConfig(celeba_dir=celeba_copy, out_dir=str(tmp_path / "out"),
                                               max_pixels=1_000_000, workers=2, progress=False))
    entry = next(d for d in manifest["dropped"] if d["image_id"] == "000020.jpg")
    assert entry["reason"] == "too_large"
    assert entry["detail"] == "2000x2000 = 4,000,000 pixels, more than --max_pixels=1,000,000"
    assert manifest["options"]["max_pixels"] == 1_000_000


def _with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming another size; the image data stays small."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9:]


@pytest.mark.parametrize("width,height", [(8000, 8000), (20000, 20000), (65000, 65000)])
def test_a_header_claiming_huge_dimensions_is_refused_before_decoding(width, height):
    data = _with_size(_solid_jpeg(64, 64), width, height)
    result = image_scan.check_jpeg(data)  # the default limit, 40 megapixels
    # Decoding would have failed as corrupt (the data holds 64x64 pixels): the header check came first.
    assert result.problem == image_scan.TOO_LARGE and len(data) < 2000
    assert image_scan.check_jpeg(_solid_jpeg(178, 218)).problem is None  # a CelebA-sized image passes


def test_a_second_converter_on_the_same_out_dir_is_refused_and_a_killed_ones_lock_taken_over(celeba_original,
                                                                                             tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from celeba_gender.core import locks; "
         "locks.DirectoryLock(sys.argv[1], purpose='converting CelebA into it').acquire(); print('held', flush=True); "
         "time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run_cli(f"--celeba_dir={celeba_original}", f"--out_dir={out}")
        line = error_line(refused)
        assert f"{out} is in use: pid {holder.pid} on host " in line and "is converting CelebA into it there" in line
        assert "Wait for it to finish, or choose another --out_dir." in line
        assert not os.path.exists(out / FILENAME)  # stopped before any work
    finally:
        holder.kill()  # SIGKILL: its lock stays behind
        holder.wait(timeout=30)
    taken = run_cli(f"--celeba_dir={celeba_original}", f"--out_dir={out}")
    assert taken.returncode == 0, taken.stderr
    assert f"note: took over the lock {out}/.lock left by pid {holder.pid}" in taken.stderr
    assert json.load(open(out / FILENAME))["status"] == "complete" and not os.path.exists(out / ".lock")


def test_a_converter_lock_held_in_another_pid_namespace_is_not_taken_over(celeba_original, tmp_path):
    # A converter in another container of this host: pid 1 there (here pid 1 is another process, alive).
    out = tmp_path / "out"
    out.mkdir()
    holder = {"host": socket.gethostname(), "pid": 1, "process_start": 12345, "pid_ns": "pid:[4026599999]",
              "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(), "time": 0, "owner_key": None,
              "command": "make_tfrecords.py --out_dir=out", "purpose": "converting CelebA into it"}
    (out / ".lock").write_text(json.dumps(holder))
    line = error_line(run_cli(f"--celeba_dir={celeba_original}", f"--out_dir={out}"))
    assert f"{out} is in use: pid 1 on host {socket.gethostname()}" in line and "another PID namespace" in line
    assert f"if that process has ended, remove {out}/.lock by hand" in line
    assert json.load(open(out / ".lock")) == holder and os.listdir(out) == [".lock"]  # nothing written


def test_summary_columns_fit_long_class_names_and_an_oversized_limit_is_said():
    manifest = {
        "class_names": ["not_Eyeglasses", "Eyeglasses"], "options": {"limit": 300000},
        "source": {"usable_rows": 202599, "scanned": 202599},
        "splits": {"train": {"count": 10, "class_counts": {"not_Eyeglasses": 5, "Eyeglasses": 5}, "bytes": 0,
                             "shards": [{}]},
                   "test": {"count": 4, "class_counts": {"not_Eyeglasses": 4, "Eyeglasses": 0}, "bytes": 0,
                            "shards": [{}]}},
        "balance": {"train": {"dropped": 6, "class": "not_Eyeglasses", "from": 11, "to": 5},
                    "test": {"dropped": 0, "missing": "Eyeglasses"}},
        "dropped_counts": {"balanced_out": 6}, "shards_kept": 2, "shards_written": 0}
    lines = converter.format_summary(manifest, "out").splitlines()
    assert lines[0].split() == ["split", "images", "not_Eyeglasses", "Eyeglasses", "shards", "MB"]
    assert lines[1].split()[:4] == ["train", "10", "5", "5"]
    assert ("balanced: train 6 dropped (not_Eyeglasses 11 -> 5), test not balanced (it has no Eyeglasses images)"
            in lines)
    assert "--limit=300,000 is more than the 202,599 usable rows: all were used" in lines
    assert "nothing to do: all 2 shards were already written by an earlier run with these options" in lines
    manifest["balance"] = None
    assert "balanced: none (--nobalance keeps every image)" in converter.format_summary(manifest, "out")


def test_download_takes_no_celeba_dir_or_synthetic():
    with pytest.raises(ConvertError, match="pass --download or --celeba_dir, not both"):
        ConvertConfig(download=True, celeba_dir="x")
    with pytest.raises(ConvertError, match="pass --download or --synthetic, not both"):
        ConvertConfig(download=True, synthetic=10)


def test_progress_in_a_log_file_is_plain_lines(capsys, monkeypatch):
    """Not on a terminal, progress is a few plain lines (a tenth of the job, at most every interval), never a
    carriage return; on close, the total."""
    from celeba_gender.core import progress
    clock = iter(range(0, 1000, 4))  # every call 4 s later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.PlainProgress(100, "scan", "images", interval=10)
    for _ in range(100):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[-1].startswith("scan: 100/100 images (100%)")
    assert 2 <= len(lines) <= 5, lines  # tenths at least 10 s apart: not one line per tenth
    assert all(line.startswith("scan: ") and "images/s" in line for line in lines)
