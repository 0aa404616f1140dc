"""Reading CelebA in both forms, what happens to bad rows and bad folders, and finding CelebA (and --download)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from celeba_gender.convert import celeba, locate
from celeba_gender.shards.attributes import ATTRIBUTE_NAMES
from celeba_gender.convert.celeba import CelebaError, check_attribute, detect_layout, read_celeba
from celeba_gender.convert.locate import ENV_VAR


def test_original_layout_parses(celeba_original):
    layout = detect_layout(celeba_original)
    assert layout.form == "original" and layout.identity_file and layout.partition_file
    table, dropped = read_celeba(layout)
    assert len(table) == 400 and not dropped
    assert [c for c in table.columns if c in ATTRIBUTE_NAMES] == list(ATTRIBUTE_NAMES)
    assert set(table["Male"].unique()) <= {0, 1}
    assert table["image_id"].iloc[0] == "000001.jpg" and os.path.isfile(table["path"].iloc[0])
    assert set(table["partition"].unique()) <= {0, 1, 2} and (table["identity"] > 0).all()


def test_kaggle_layout_parses_to_the_same_table_shape(celeba_kaggle):
    layout = detect_layout(celeba_kaggle)
    assert layout.form == "kaggle" and layout.identity_file is None
    assert layout.image_dir.endswith(os.path.join("img_align_celeba", "img_align_celeba"))
    table, dropped = read_celeba(layout)
    assert len(table) == 120 and not dropped
    assert (table["identity"] == -1).all() and set(table["partition"].unique()) <= {0, 1, 2}
    assert all(os.path.isfile(p) for p in table["path"])


@pytest.mark.parametrize("form", ["original", "kaggle"])
def test_a_clean_file_takes_the_fast_reader_and_gives_the_row_by_row_table(celeba_original, celeba_kaggle, form):
    layout = detect_layout(celeba_original if form == "original" else celeba_kaggle)
    assert celeba._read_clean(layout.attr_file) is not None
    fast, dropped = read_celeba(layout)
    slow, slow_dropped = celeba._read_row_by_row(layout)
    pd.testing.assert_frame_equal(fast, slow)
    assert dropped == slow_dropped == []


def _write_attr(root, header, rows):
    os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
    with open(os.path.join(root, "list_attr_celeba.txt"), "w") as f:
        f.write(f"{len(rows)}\n{header}\n" + "\n".join(rows) + "\n")


def test_bad_rows_are_dropped_with_reasons_and_a_column_subset_is_fine(tmp_path):
    _write_attr(str(tmp_path), "Male Young ", [
        "000001.jpg  1 -1", "000002.jpg -1  1", "000003.jpg  1  2", "000004.jpg 1", "../etc.jpg 1 1",
        "000001.jpg -1 -1", "000006.jpg 0 1", "000007.jpg x 1", "/abs.jpg 1 1",
    ])
    assert celeba._read_clean(str(tmp_path / "list_attr_celeba.txt")) is None  # so every row is checked alone
    table, dropped = read_celeba(detect_layout(str(tmp_path)))
    assert table["image_id"].tolist() == ["000001.jpg", "000002.jpg", "000006.jpg"]
    assert table["Male"].tolist() == [1, 0, 0] and table["Young"].tolist() == [0, 1, 1]  # 0/1 and -1/1 both read
    reasons = {d.image_id: d.reason for d in dropped}
    assert reasons == {"000003.jpg": "bad_label", "000004.jpg": "malformed_row", "../etc.jpg": "unsafe_path",
                       "000001.jpg": "duplicate_row", "000007.jpg": "bad_label", "/abs.jpg": "unsafe_path"}
    assert "Young=2" in next(d.detail for d in dropped if d.image_id == "000003.jpg")
    check_attribute(table, "Young")


def test_unknown_attribute_names_the_choices(tmp_path):
    _write_attr(str(tmp_path), "Male Young", ["000001.jpg 1 1"])
    table, _ = read_celeba(detect_layout(str(tmp_path)))
    with pytest.raises(CelebaError, match=r"Unknown attribute 'young'.*Male, Young.*--attribute=Young"):
        check_attribute(table, "young")


def test_whole_input_problems_have_one_clear_message(tmp_path):
    with pytest.raises(CelebaError, match="does not exist"):
        detect_layout(str(tmp_path / "nope"))
    with pytest.raises(CelebaError, match="No attribute file"):
        detect_layout(str(tmp_path))
    (tmp_path / "list_attr_celeba.txt").write_text("3\nMale\n")
    with pytest.raises(CelebaError, match="No image folder"):
        detect_layout(str(tmp_path))
    os.makedirs(tmp_path / "img_align_celeba")
    (tmp_path / "list_attr_celeba.txt").write_text("garbage\n")
    with pytest.raises(CelebaError, match="expected CelebA's format"):
        read_celeba(detect_layout(str(tmp_path)))


# --- finding CelebA without --celeba_dir, and --download ------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# make_tfrecords with every network connection refused, so that nothing here can reach Kaggle.
_OFFLINE = textwrap.dedent("""
    import socket, sys
    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "network disabled in tests")
    socket.getaddrinfo = refuse
    socket.socket.connect = socket.socket.connect_ex = refuse
    from celeba_gender.cli import convert
    sys.argv[0] = "make_tfrecords.py"
    convert.run()
""")


def run_offline(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """make_tfrecords offline in an empty folder, with HOME there too: no Kaggle credentials, no kagglehub
    cache and no data/celeba unless a test puts them there."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items()
             if k not in (ENV_VAR, "KAGGLEHUB_CACHE", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
    env = {**clean, "HOME": str(tmp_path / "home"), "KAGGLE_CONFIG_DIR": str(tmp_path / "no_credentials"),
           "PYTHONPATH": os.path.join(ROOT, "src"), **env}
    return subprocess.run([sys.executable, "-c", _OFFLINE, "--progress=false", "--workers=1",
                           f"--out_dir={tmp_path / 'out'}", *args],
                          capture_output=True, text=True, timeout=180, cwd=work, env=env)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("make_tfrecords: error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def fake_kagglehub_cache(cache, celeba_kaggle, version: int = 2) -> str:
    """A kagglehub cache as kagglehub 0.3-1.0 lays it out, holding ``celeba_kaggle`` as a finished download of
    ``version``, and an unfinished (unmarked) download of a newer one."""
    base = os.path.join(cache, "datasets", "jessicali9530", "celeba-dataset")
    shutil.copytree(celeba_kaggle, os.path.join(base, "versions", str(version)))
    open(os.path.join(base, f"{version}.complete"), "w").close()
    os.makedirs(os.path.join(base, "versions", str(version + 1), "img_align_celeba"))  # broke off: no marker
    return os.path.join(base, "versions", str(version))


def test_nothing_found_is_one_line_that_lists_where_it_looked_and_the_ways_to_get_celeba(tmp_path):
    line = error_line(run_offline(tmp_path))
    assert "No CelebA found: --celeba_dir and $CELEBA_DIR are not set" in line
    assert "./data/celeba (missing)" in line
    assert (f"{tmp_path}/home/.cache/kagglehub/datasets/jessicali9530/celeba-dataset/versions/<n>/ "
            "(kagglehub's default cache: no complete download)") in line
    for way in ("into data/celeba", "set CELEBA_DIR", "--celeba_dir=<folder>", "--download", "--synthetic=N"):
        assert way in line


def test_the_search_order(tmp_path, monkeypatch, celeba_kaggle, celeba_original):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    cached = fake_kagglehub_cache(cache, celeba_kaggle)
    env = {"KAGGLEHUB_CACHE": str(cache)}
    assert locate.locate(None, env) == locate.Found(cached, "kagglehub's cache, "
                                                                  "jessicali9530/celeba-dataset version 2")
    os.makedirs("data")
    os.symlink(celeba_original, "data/celeba")
    assert locate.locate(None, env).path == os.path.abspath("data/celeba")  # before kagglehub's cache
    assert locate.locate(None, {**env, ENV_VAR: cached}).path == cached  # CELEBA_DIR before both
    assert locate.locate("elsewhere", {**env, ENV_VAR: cached}).path == "elsewhere"  # the flag first
    with pytest.raises(locate.CelebaNotFoundError, match=r"\$CELEBA_DIR=/nowhere does not hold CelebA"):
        locate.locate(None, {ENV_VAR: "/nowhere"})  # a wrong setting is an error, not skipped


def test_without_celeba_dir_the_kagglehub_copy_converts_and_download_uses_it_offline(tmp_path, celeba_kaggle):
    cache = tmp_path / "cache"
    cached = fake_kagglehub_cache(cache, celeba_kaggle)
    for args in ((), ("--download",)):
        result = run_offline(tmp_path, "--overwrite", *args, KAGGLEHUB_CACHE=str(cache))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"Converting the CelebA in {cached} (kagglehub's cache" in result.stderr
        manifest = json.load(open(tmp_path / "out" / "manifest.json"))
        assert manifest["source"]["dir"] == cached and manifest["source"]["form"] == "kaggle"
        assert manifest["status"] == "complete"
    assert "jessicali9530/celeba-dataset/versions/2)" in result.stderr  # asked kagglehub for the cached version


def test_download_without_network_or_credentials_is_one_line_with_the_ways_out(tmp_path):
    line = error_line(run_offline(tmp_path, "--download", KAGGLEHUB_CACHE=str(tmp_path / "cache")))
    assert "Downloading jessicali9530/celeba-dataset from Kaggle with kagglehub failed: ConnectionError" in line
    assert "~/.kaggle/kaggle.json or the KAGGLE_USERNAME and KAGGLE_KEY environment variables" in line
    assert "https://www.kaggle.com/datasets/jessicali9530/celeba-dataset, unpack it into data/celeba" in line
