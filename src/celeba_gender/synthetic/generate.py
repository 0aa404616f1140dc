"""A synthetic CelebA: procedurally drawn faces written in CelebA's exact on-disk layouts.

    python -m celeba_gender.cli.synthetic --out_dir=/tmp/celeba --num_images=2000 [--layout=kaggle]

It stands in for the real dataset in demos and tests.  This module plans a dataset (identities, an
identity-disjoint partition, CelebA's id order, planted exact and near duplicates) and writes it: the
images, drawn by `synthetic.faces` in worker processes, and the annotation files of either layout.  The
bytes written depend only on (num_images, seed, layout, images_per_identity), never on the workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

import celeba_gender
from celeba_gender.core import fileio, worker_pool
from celeba_gender.shards.attributes import ATTRIBUTE_NAMES
from celeba_gender.core.errors import UserError
from celeba_gender.synthetic.faces import NEAR_COPY_STREAM, PLAN_STREAM, render, rng

LAYOUTS = ("original", "kaggle")
# Each layout's annotation files, as its release names them.  Kaggle ships no identity file.
ANNOTATION_FILES = {"original": ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"),
                    "kaggle": ("list_attr_celeba.csv", "list_eval_partition.csv")}


class SyntheticError(UserError):
    """A synthetic dataset cannot be written as asked; the message says why and what to do."""


class OtherDatasetError(SyntheticError, FileExistsError):
    """The image folder holds .jpg files that the requested dataset would not overwrite.

    Also a FileExistsError, which is what `generate` raised for this before SyntheticError existed.
    """


@dataclasses.dataclass(frozen=True)
class SyntheticInfo:
    """What `generate` wrote.  Duplicate pairs are (copy image_id, original image_id), e.g.
    ("000120.jpg", "000031.jpg"); the copy always has the later id."""
    out_dir: str
    image_dir: str
    attr_file: str
    partition_file: str
    identity_file: str | None
    num_images: int
    num_identities: int
    male_fraction: float
    exact_duplicates: list[tuple[str, str]]
    near_duplicates: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Who is in which image.  Positions are CelebA's id order: position i is image id i + 1."""
    identity_index: np.ndarray  # per position: the identity drawn there
    split: np.ndarray  # per position: 0 train, 1 validation, 2 test
    identity_number: np.ndarray  # per identity index: its number in identity_CelebA.txt
    exact: list[tuple[int, int]]  # planted byte copies: (copy position, original position)
    near: list[tuple[int, int]]  # planted re-encoded copies, likewise


def image_folder(out_dir: str, layout: str) -> str:
    """Where ``layout``'s images go: img_align_celeba/, in Kaggle's release nested in a second one."""
    return os.path.join(out_dir, "img_align_celeba", *(["img_align_celeba"] if layout == "kaggle" else []))


def _image_names(num_images: int) -> list[str]:
    return [f"{i + 1:06d}.jpg" for i in range(num_images)]


def generate(out_dir: str, num_images: int, seed: int = 0, layout: str = "original", workers: int = 1,
             images_per_identity: tuple[int, int] = (3, 12)) -> SyntheticInfo:
    """Writes a synthetic CelebA of ``num_images`` images to ``out_dir`` and describes it.

    layout="original" mirrors the Google Drive release (img_align_celeba/, *.txt incl.
    identity_CelebA.txt); layout="kaggle" mirrors Kaggle's (img_align_celeba/img_align_celeba/,
    *.csv, no identity file).  Output bytes depend only on (num_images, seed, layout,
    images_per_identity), not on ``workers`` (1 = in this process, K > 1 = K worker processes through
    `parallel.imap`, which spawns rather than forks once TensorFlow is imported: then the caller's script
    must be guarded by ``if __name__ == "__main__":``).  Files of the same names are overwritten; an image
    folder holding other .jpg files (an earlier, larger dataset) is refused with OtherDatasetError.
    Bad arguments raise SyntheticError.
    """
    if layout not in LAYOUTS:
        raise SyntheticError(f"layout must be 'original' or 'kaggle', got {layout!r}")
    lo, hi = images_per_identity
    if num_images < 1 or seed < 0 or workers < 1 or not 1 <= lo <= hi:
        raise SyntheticError(f"need num_images >= 1, seed >= 0, workers >= 1 and 1 <= images_per_identity[0] "
                             f"<= [1]; got num_images={num_images}, seed={seed}, workers={workers}, "
                             f"images_per_identity={images_per_identity}")
    out_dir = os.path.abspath(out_dir)
    image_dir = image_folder(out_dir, layout)
    names = _image_names(num_images)
    os.makedirs(image_dir, exist_ok=True)
    stale = {f for f in os.listdir(image_dir) if f.endswith(".jpg")} - set(names)
    if stale:  # mixing two datasets in one folder would silently corrupt both
        raise OtherDatasetError(f"{image_dir} holds {len(stale)} images of another dataset; "
                                "write into a new or empty out_dir")
    plan = _plan(num_images, seed, images_per_identity)
    paths = [os.path.join(image_dir, n) for n in names]
    values = _write_images(paths, plan, seed, workers)
    attr, part, ident_file = _write_annotations(out_dir, layout, names, values, plan.split,
                                                plan.identity_number[plan.identity_index])
    return SyntheticInfo(
        out_dir=out_dir, image_dir=image_dir, attr_file=attr, partition_file=part, identity_file=ident_file,
        num_images=num_images, num_identities=len(set(plan.identity_index.tolist())),
        male_fraction=float((values[:, ATTRIBUTE_NAMES.index("Male")] == 1).mean()),
        exact_duplicates=[(names[c], names[o]) for c, o in plan.exact],
        near_duplicates=[(names[c], names[o]) for c, o in plan.near])


def _plan(num_images: int, seed: int, images_per_identity: tuple[int, int]) -> _Plan:
    """Decides identities, partitions, id order and planted duplicates (cheap; in this process)."""
    r = rng(seed, PLAN_STREAM, 0)
    n_exact = max(int(num_images >= 50), round(num_images * 0.001))
    n_near = max(int(num_images >= 100), round(num_images * 0.0005))
    n_render = num_images - n_exact - n_near
    lo, hi = images_per_identity
    counts = []
    while sum(counts) < n_render:
        counts.append(int(r.integers(lo, hi + 1)))
    counts[-1] -= sum(counts) - n_render
    n_id = len(counts)
    # Identity-disjoint ~80/10/10 split by images, like CelebA's official partition.
    order = r.permutation(n_id)
    split_of = np.zeros(n_id, np.int64)
    start = 0
    for i in order:
        mid = (start + counts[i] / 2) / n_render
        split_of[i] = 0 if mid < 0.8 else 1 if mid < 0.9 else 2
        start += counts[i]
    if n_id >= 3 and len(set(split_of.tolist())) < 3:  # tiny sets: keep every split non-empty
        split_of[order[-2]], split_of[order[-1]] = 1, 2
    ident = np.repeat(np.arange(n_id), counts)
    originals = r.choice(n_render, n_exact + n_near, replace=False)
    ident = np.concatenate([ident, ident[originals]])  # duplicates take the original's identity
    # CelebA ids are grouped by partition (train, then validation, then test), shuffled within.
    pos = np.concatenate([r.permutation(np.flatnonzero(split_of[ident] == k)) for k in range(3)])
    where = np.empty(num_images, np.int64)
    where[pos] = np.arange(num_images)  # final position of each planned item
    pairs = []
    for j, o in enumerate(originals):
        copy, orig = where[n_render + j], where[o]
        pairs.append((int(max(copy, orig)), int(min(copy, orig))))  # swap so the copy gets the later id
    ident_at = ident[pos]
    number = r.choice(np.arange(1, max(10177, 2 * n_id) + 1), n_id, replace=False)
    return _Plan(identity_index=ident_at, split=split_of[ident_at], identity_number=number,
                 exact=pairs[:n_exact], near=pairs[n_exact:])


def _render_to_file(task: tuple[int, int, int, str]) -> np.ndarray:
    """Draws one image into its file and returns its attribute values (runs in a worker process)."""
    seed, image_number, identity_index, path = task
    data, values = render(seed, image_number, identity_index)
    with open(path, "wb") as f:
        f.write(data)
    return values


def _write_images(paths: list[str], plan: _Plan, seed: int, workers: int) -> np.ndarray:
    """Draws the planned images into ``paths``, then the planted copies; returns every image's attributes."""
    copies = {c for c, _ in plan.exact + plan.near}
    tasks = [(seed, i + 1, int(plan.identity_index[i]), path) for i, path in enumerate(paths) if i not in copies]
    values = np.zeros((len(paths), len(ATTRIBUTE_NAMES)), np.int8)
    # In order, so that each result lands on its own row (each image's bytes never depend on the worker).
    values[[t[1] - 1 for t in tasks]] = list(worker_pool.imap(_render_to_file, tasks, min(workers, len(tasks))))
    for copy, original in plan.exact:
        shutil.copyfile(paths[original], paths[copy])
        values[copy] = values[original]
    for copy, original in plan.near:
        _near_copy(paths[original], paths[copy], seed, copy + 1)
        values[copy] = values[original]
    return values


def _near_copy(src: str, dst: str, seed: int, image_number: int) -> None:
    """Re-encodes ``src`` at another JPEG quality with a tiny brightness change."""
    r = rng(seed, NEAR_COPY_STREAM, image_number)
    x = np.asarray(Image.open(src).convert("RGB"), np.float32) * r.uniform(0.985, 1.015)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(dst, "JPEG", quality=int(r.integers(70, 84)))


def _write_annotations(out_dir: str, layout: str, names: list[str], values: np.ndarray, splits: np.ndarray,
                       identities: np.ndarray) -> tuple[str, str, str | None]:
    """Writes CelebA's annotation files in ``layout``; returns their paths (attr, partition, identity or None)."""
    paths = [os.path.join(out_dir, f) for f in ANNOTATION_FILES[layout]]
    if layout == "kaggle":
        attr, part = paths
        with open(attr, "w") as f:
            f.write(",".join(("image_id",) + ATTRIBUTE_NAMES) + "\n")
            f.writelines(n + "," + ",".join(str(int(v)) for v in row) + "\n" for n, row in zip(names, values))
        with open(part, "w") as f:
            f.write("image_id,partition\n")
            f.writelines(f"{n},{s}\n" for n, s in zip(names, splits))
        return attr, part, None
    attr, part, ident = paths
    with open(attr, "w") as f:
        # Real CelebA: count line, names line with a trailing space, then width-2 value fields.
        f.write(f"{len(names)}\n" + " ".join(ATTRIBUTE_NAMES) + " \n")
        f.writelines(n + " " + " ".join(f"{int(v):2d}" for v in row) + "\n" for n, row in zip(names, values))
    with open(part, "w") as f:
        f.writelines(f"{n} {s}\n" for n, s in zip(names, splits))
    with open(ident, "w") as f:
        f.writelines(f"{n} {i}\n" for n, i in zip(names, identities))
    return attr, part, ident


def holds_celeba_files(out_dir: str) -> bool:
    """Whether ``out_dir`` holds annotation files or .jpg images where either layout puts them."""
    for layout in LAYOUTS:
        if any(os.path.exists(os.path.join(out_dir, f)) for f in ANNOTATION_FILES[layout]):
            return True
        folder = image_folder(out_dir, layout)
        if os.path.isdir(folder):
            with os.scandir(folder) as entries:
                if any(e.name.endswith(".jpg") for e in entries):
                    return True
    return False


def remove(out_dir: str, num_images: int) -> None:
    """Deletes the files a synthetic dataset of ``num_images`` images writes into ``out_dir``, in either layout.

    Only those names (images 000001.jpg to its last, annotation files): any other file stays, so that
    `generate` refuses a folder that someone else's images share.
    """
    for layout in LAYOUTS:
        folder = image_folder(out_dir, layout)
        images = [os.path.join(folder, n) for n in _image_names(num_images)] if os.path.isdir(folder) else []
        for path in images + [os.path.join(out_dir, f) for f in ANNOTATION_FILES[layout]]:
            try:
                os.remove(path)
            except FileNotFoundError:  # never written, or removed by an interrupted earlier call
                pass


def ensure(directory: str, num_images: int, seed: int, workers: int) -> None:
    """Generates the synthetic CelebA into ``directory`` unless an identical one is already there.

    Its marker, synthetic.json, says which synthetic set a folder holds: a set made with other parameters
    is replaced (said on stderr). A folder with CelebA files and no marker may be the user's real CelebA:
    it is refused with a SyntheticError and left untouched.
    """
    marker = os.path.join(directory, "synthetic.json")
    wanted = {"num_images": num_images, "seed": seed, "version": celeba_gender.__version__}
    try:
        with open(marker) as f:
            previous = json.load(f)
    except (OSError, ValueError):  # missing or unreadable: proves nothing
        previous = None
    if previous == wanted:
        return
    if isinstance(previous, dict) and isinstance(previous.get("num_images"), int):
        unfinished = "unfinished " if previous.get("complete") is False else ""
        print(f"Replacing the {unfinished}synthetic CelebA in {directory} (num_images={previous['num_images']}, "
              f"seed={previous.get('seed')}) with num_images={num_images}, seed={seed}.", file=sys.stderr)
        remove(directory, previous["num_images"])
    elif holds_celeba_files(directory):
        raise SyntheticError(
            f"{directory} holds CelebA images or annotation files but no synthetic.json, so it may be a real "
            "CelebA, which --synthetic never writes over: choose another --celeba_dir for --synthetic, or an "
            "empty folder.")
    # About 12 KB an image; a rerun after a full disk replaces the unfinished set (its marker says so).
    with fileio.disk_space_for("the synthetic CelebA", directory, num_images * 12_000):
        os.makedirs(directory, exist_ok=True)
        with open(marker, "w") as f:  # before generating, so that an interrupted run's files are known as ours
            json.dump({**wanted, "complete": False}, f)
        generate(directory, num_images, seed=seed, workers=workers)
        with open(marker, "w") as f:
            json.dump(wanted, f)
