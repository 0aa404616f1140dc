"""history.csv: one row per epoch of a run (its training and validation figures), written as each epoch ends.

A process can stop between writing an epoch's row and its checkpoint; the restart then trims the rows its
checkpoint does not cover (:func:`trim`), so every epoch is recorded once. A row whose columns differ from the
file's header (a run resumed by a version that records more) rewrites the file with every column.
"""

from __future__ import annotations

import csv
import io

from celeba_gender.core import fileio

HISTORY = "history.csv"


def read(path: str) -> list[dict]:
    """The rows of a history.csv ([] when there is none)."""
    if not fileio.exists(path):
        return []
    return list(csv.DictReader(io.StringIO(fileio.read_text(path))))


def _write(path: str, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    with fileio.disk_space_for("history.csv", path.rsplit("/", 1)[0]):
        fileio.write_text(path, buffer.getvalue())


def trim(path: str, epochs_done: int) -> None:
    """Drops the rows of epochs after ``epochs_done`` (those the restored checkpoint does not cover)."""
    rows = read(path)
    kept = [r for r in rows if int(r["epoch"]) <= epochs_done]
    if len(kept) != len(rows):
        _write(path, kept, list(rows[0]))


def append(path: str, row: dict) -> None:
    """Appends one epoch's row (the whole file rewritten when the row brings columns the header lacks)."""
    rows = read(path)
    columns = list(rows[0]) if rows else list(row)
    if rows and [c for c in row if c not in columns]:
        columns += [c for c in row if c not in columns]
    _write(path, [*rows, {k: row.get(k, "") for k in columns} if rows else row], columns)
