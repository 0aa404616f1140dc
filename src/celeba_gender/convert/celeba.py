"""CelebA as users have it -> one pandas table. No TensorFlow.

Two forms are auto-detected (README, "Converting CelebA"):

- original: ``img_align_celeba/*.jpg``, ``list_attr_celeba.txt`` (count line, names line, rows),
  ``list_eval_partition.txt``, optional ``identity_CelebA.txt``;
- Kaggle: ``img_align_celeba/img_align_celeba/*.jpg``, ``list_attr_celeba.csv``,
  ``list_eval_partition.csv``.

The table has one row per attribute row that parsed: ``image_id``, ``path``, one 0/1 int8 column per
attribute, ``partition`` (0/1/2, -1 unknown) and ``identity`` (-1 unknown). Rows that cannot be used are
returned separately as :class:`Dropped` with a reason, never raised: a few bad rows must not stop a
conversion of 200,000 images. A well-formed file is read by pandas' C parser (the whole table of 202,599
rows in 1.6 s); anything unusual in it sends the file through the row-by-row reader, which says what is wrong
with each row (6 s, and the memory of every row's fields as Python strings). Whole-input problems (no
attribute file, no header) raise :class:`CelebaError` with a message that says what to fix.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np
import pandas as pd

from celeba_gender.core.errors import UserError

ATTR_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
IDENTITY_FILES = ("identity_CelebA.txt", "identity_CelebA.csv")


class CelebaError(UserError):
    """A problem with the whole input (not one row): the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Dropped:
    """One input row that is not used, and why (reasons are the keys of manifest's dropped_counts)."""

    image_id: str
    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class CelebaLayout:
    """Where the pieces of one CelebA folder are."""

    root: str
    form: str  # "original" or "kaggle"
    image_dir: str
    attr_file: str
    partition_file: str | None
    identity_file: str | None


def _first_existing(root: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def detect_layout(root: str) -> CelebaLayout:
    """Finds the attribute, partition and identity files and the image folder under ``root``."""
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise CelebaError(f"CelebA folder {root} does not exist. Pass --celeba_dir=<the folder holding "
                          "list_attr_celeba.txt (or .csv) and img_align_celeba/>.")
    attr_file = _first_existing(root, ATTR_FILES)
    if attr_file is None:
        raise CelebaError(f"No attribute file in {root}: expected one of {', '.join(ATTR_FILES)}. "
                          "Point --celeba_dir at the folder where CelebA was unpacked.")
    nested = os.path.join(root, "img_align_celeba", "img_align_celeba")
    flat = os.path.join(root, "img_align_celeba")
    if os.path.isdir(nested):
        image_dir, form = nested, "kaggle"
    elif os.path.isdir(flat):
        image_dir, form = flat, "original" if attr_file.endswith(".txt") else "kaggle"
    else:
        raise CelebaError(f"No image folder in {root}: expected img_align_celeba/ (or Kaggle's nested "
                          "img_align_celeba/img_align_celeba/). Unpack img_align_celeba.zip there.")
    return CelebaLayout(root, form, image_dir, attr_file, _first_existing(root, PARTITION_FILES),
                        _first_existing(root, IDENTITY_FILES))


def _read_rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Returns (attribute names, [(line number, fields)]) for CelebA's .txt or Kaggle's .csv form."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        if path.endswith(".csv"):
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[0].strip() not in ("image_id", ""):
                raise CelebaError(f"{path}: the first line must be the header 'image_id,<attribute names>'.")
            names = [h.strip() for h in header[1:]]
            rows = [(i, [x.strip() for x in row]) for i, row in enumerate(reader, start=2) if row]
        else:
            lines = f.read().splitlines()
            if len(lines) < 2 or not lines[0].strip().isdigit():
                raise CelebaError(f"{path}: expected CelebA's format: a count line, a line of attribute "
                                  "names, then one row per image.")
            names = lines[1].split()
            rows = [(i, line.split()) for i, line in enumerate(lines[2:], start=3) if line.strip()]
    if not names:
        raise CelebaError(f"{path}: the header names no attributes.")
    return names, rows


def _read_id_map(path: str | None, column: str) -> dict[str, int]:
    """Reads `image_id value` rows (txt, whitespace) or `image_id,<column>` rows (csv) into a dict."""
    if path is None:
        return {}
    out: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        if path.endswith(".csv"):
            reader = csv.reader(f)
            next(reader, None)  # header
            pairs = (row for row in reader if len(row) >= 2)
        else:
            pairs = (line.split() for line in f if len(line.split()) >= 2)
        for image_id, value, *_ in pairs:
            try:
                out.setdefault(image_id.strip(), int(value))
            except ValueError:
                continue  # a malformed partition/identity row only loses that row's partition/identity
    return out


def is_safe_image_id(image_id: str) -> bool:
    """True when ``image_id`` names a file directly inside the image folder (no ``..``, no separators)."""
    return (bool(image_id) and image_id not in (".", "..") and os.path.basename(image_id) == image_id
            and "/" not in image_id and "\\" not in image_id and not os.path.isabs(image_id)
            and "\x00" not in image_id)


_VALID_VALUES = frozenset((-1, 0, 1))


def _parse_values(fields: list[str], names: list[str]) -> tuple[list[int] | None, str | None]:
    """Parses one row's attribute values: (values, None), or (None, what is wrong)."""
    try:
        row = [int(v) for v in fields]
        if _VALID_VALUES.issuperset(row):  # the fast path: 200,000 rows x 40 values
            return row, None
    except ValueError:
        pass
    for name, v in zip(names, fields):
        if not v.lstrip("-").isdigit():
            return None, f"{name}={v!r} is not a number"
        if int(v) not in _VALID_VALUES:
            return None, f"{name}={v}"
    raise AssertionError("unreachable: a row that failed to parse has a bad value")


def _read_clean(path: str) -> tuple[list[str], pd.DataFrame] | None:
    """(attribute names, table of image_id and -1/0/1 values) of a well-formed attribute file, by pandas'
    C parser; None when anything is unusual (a row of another length, a value outside -1/0/1, an unsafe or
    repeated id, a header it does not expect), so that the row-by-row reader finds and reports it."""
    try:
        if path.endswith(".csv"):
            df = pd.read_csv(path, skipinitialspace=True, dtype={0: str}, encoding_errors="replace", engine="c")
            df.columns = [str(c).strip() for c in df.columns]
            if not len(df.columns) or df.columns[0] not in ("image_id", "Unnamed: 0"):
                return None
            names = list(df.columns[1:])
            df.columns = ["image_id", *names]
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                count, header = f.readline(), f.readline()
            names = header.split()
            if not count.strip().isdigit():
                return None
            df = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, names=["image_id", *names],
                             dtype={"image_id": str}, encoding_errors="replace", engine="c")
    except (ValueError, OSError, pd.errors.ParserError):
        return None
    values = df.iloc[:, 1:]
    if (not names or len(set(names)) != len(names) or not all(map(pd.api.types.is_integer_dtype, values.dtypes))
            or not np.isin(values.to_numpy(), (-1, 0, 1)).all() or df["image_id"].isna().any()
            or df["image_id"].duplicated().any() or not _all_safe(df["image_id"])):
        return None
    return names, df


def _all_safe(ids: pd.Series) -> bool:
    """:func:`is_safe_image_id` for every id at once (a plain name has no separator and is not . or ..)."""
    return not (ids.isin(("", ".", "..")).any() or ids.str.contains(r"[/\\\x00]", regex=True).any())


def read_celeba(layout: CelebaLayout) -> tuple[pd.DataFrame, list[Dropped]]:
    """Reads a CelebA folder into (table, dropped rows). The table keeps the attribute file's row order."""
    clean = _read_clean(layout.attr_file)
    if clean is not None:
        names, df = clean
        table = pd.DataFrame((df.iloc[:, 1:].to_numpy() == 1).astype(np.int8), columns=names)
        return _finish_table(layout, table, df["image_id"].tolist()), []
    return _read_row_by_row(layout)


def _read_row_by_row(layout: CelebaLayout) -> tuple[pd.DataFrame, list[Dropped]]:
    """read_celeba for any file: each row checked on its own, bad ones dropped with their reason."""
    names, rows = _read_rows(layout.attr_file)
    if len(set(names)) != len(names):
        raise CelebaError(f"{layout.attr_file}: attribute names repeat in the header.")
    n_attr = len(names)
    ids: list[str] = []
    values: list[list[int]] = []
    dropped: list[Dropped] = []
    seen: set[str] = set()
    for line_no, fields in rows:
        image_id = fields[0] if fields else ""
        if len(fields) != n_attr + 1:
            dropped.append(Dropped(image_id or f"line {line_no}", "malformed_row",
                                   f"line {line_no}: {len(fields) - 1} values for {n_attr} attributes"))
            continue
        if not is_safe_image_id(image_id):
            dropped.append(Dropped(image_id, "unsafe_path",
                                   f"line {line_no}: image ids must be plain file names inside the image folder"))
            continue
        if image_id in seen:
            dropped.append(Dropped(image_id, "duplicate_row", f"line {line_no}: the id appears twice; first kept"))
            continue
        row, problem = _parse_values(fields[1:], names)
        if problem is not None:
            dropped.append(Dropped(image_id, "bad_label", f"line {line_no}: {problem} (values must be -1, 0 or 1)"))
            continue
        seen.add(image_id)
        ids.append(image_id)
        values.append(row)

    matrix = np.asarray(values, dtype=np.int8).reshape(len(values), n_attr)
    return _finish_table(layout, pd.DataFrame((matrix == 1).astype(np.int8), columns=names), ids), dropped


def _finish_table(layout: CelebaLayout, table: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """Adds image_id, path, partition and identity to the attribute columns."""
    table.insert(0, "image_id", ids)
    # os.path.join(image_dir, i) for ids that are plain names (read_celeba drops the others), at C speed.
    table.insert(1, "path", (layout.image_dir.rstrip(os.sep) + os.sep) + table["image_id"])
    partitions = _read_id_map(layout.partition_file, "partition")
    identities = _read_id_map(layout.identity_file, "identity")
    table["partition"] = np.asarray([partitions.get(i, -1) for i in ids], dtype=np.int64)
    table["identity"] = np.asarray([identities.get(i, -1) for i in ids], dtype=np.int64)
    return table


def attribute_columns(table: pd.DataFrame) -> list[str]:
    """The attribute columns of a table from :func:`read_celeba`, in file order."""
    return [c for c in table.columns if c not in ("image_id", "path", "partition", "identity")
            and not c.startswith("_")]


def check_attribute(table: pd.DataFrame, attribute: str) -> None:
    """Raises CelebaError naming the available attributes when ``attribute`` is not a column."""
    names = attribute_columns(table)
    if attribute not in names:
        close = [n for n in names if n.lower() == attribute.lower()]
        hint = f" Did you mean --attribute={close[0]}?" if close else ""
        raise CelebaError(f"Unknown attribute {attribute!r}: the attribute file has {', '.join(names)}.{hint}")
