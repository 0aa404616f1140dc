"""Reading CelebA in both forms, and what happens to bad rows and bad folders."""

import os

import pytest

from celeba_gender.attributes import ATTRIBUTE_NAMES
from celeba_gender.celeba import CelebaError, check_attribute, detect_layout, read_celeba


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


def _write_attr(root, header, rows):
    os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
    with open(os.path.join(root, "list_attr_celeba.txt"), "w") as f:
        f.write(f"{len(rows)}\n{header}\n" + "\n".join(rows) + "\n")


def test_bad_rows_are_dropped_with_reasons_and_a_column_subset_is_fine(tmp_path):
    _write_attr(str(tmp_path), "Male Young ", [
        "000001.jpg  1 -1", "000002.jpg -1  1", "000003.jpg  1  2", "000004.jpg 1", "../etc.jpg 1 1",
        "000001.jpg -1 -1", "000006.jpg 0 1", "000007.jpg x 1", "/abs.jpg 1 1",
    ])
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
