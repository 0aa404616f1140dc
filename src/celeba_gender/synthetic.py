"""A synthetic CelebA: procedurally drawn faces written in CelebA's exact on-disk layouts.

It stands in for the real dataset in demos and tests.  The Male label is carried by several
noisy cues (hair length, jaw shape, face/neck/shoulder width, brow thickness, facial hair,
lipstick/makeup, earrings, neckties), none decisive alone, so a small CNN has something to
learn and per-subgroup analysis has something to find (short-haired women, long-haired men).

The faces are drawn by synthetic_faces (who each identity is, what each image shows) and
synthetic_drawing (the shapes); this module plans the dataset and writes it.  numpy + PIL only
(no TensorFlow) to keep import time small.  Every identity and every image draws from its own
numpy Generator seeded by (seed, stream, index), so output bytes depend only on (num_images,
seed, layout), never on `workers`.

    python -m celeba_gender.synthetic --out_dir=/tmp/celeba --num_images=2000 --workers=2
"""

import argparse
import dataclasses
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image

from celeba_gender.attributes import ATTRIBUTE_NAMES
from celeba_gender.synthetic_faces import NEAR_COPY_STREAM, PLAN_STREAM, render, rng


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
    exact_duplicates: list
    near_duplicates: list




def _plan(num_images, seed, images_per_identity):
    """Decide identities, partitions, id order and planted duplicates (cheap; main process).

    Returns (identity_index per image, split per image, CelebA identity number per identity index,
    exact pairs, near pairs) with pairs as 0-based (copy position, original position).
    """
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
        pairs.append((max(copy, orig), min(copy, orig)))  # swap so the copy gets the later id
    ident_at = ident[pos]
    number = r.choice(np.arange(1, max(10177, 2 * n_id) + 1), n_id, replace=False)
    return ident_at, split_of[ident_at], number, pairs[:n_exact], pairs[n_exact:]


def _context():
    """fork where safe (fast, works from unguarded scripts); spawn once TensorFlow is loaded,
    because forking a process that runs TensorFlow's thread pools can deadlock the children."""
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _render_task(task):
    seed, image_number, identity_index, path = task
    data, values = render(seed, image_number, identity_index)
    with open(path, "wb") as f:
        f.write(data)
    return values


def _near_copy(src, dst, seed, image_number):
    """Re-encode `src` at another JPEG quality with a tiny brightness change."""
    r = rng(seed, NEAR_COPY_STREAM, image_number)
    x = np.asarray(Image.open(src).convert("RGB"), np.float32) * r.uniform(0.985, 1.015)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(dst, "JPEG", quality=int(r.integers(70, 84)))


def _write_annotations(out_dir, layout, names, values, splits, identities):
    """Write CelebA's annotation files in the chosen layout; returns (attr, partition, identity) paths."""
    if layout == "kaggle":
        # Kaggle ships no identity file, so none is written.
        attr, part = os.path.join(out_dir, "list_attr_celeba.csv"), os.path.join(out_dir, "list_eval_partition.csv")
        with open(attr, "w") as f:
            f.write(",".join(("image_id",) + ATTRIBUTE_NAMES) + "\n")
            f.writelines(n + "," + ",".join(str(int(v)) for v in row) + "\n" for n, row in zip(names, values))
        with open(part, "w") as f:
            f.write("image_id,partition\n")
            f.writelines(f"{n},{s}\n" for n, s in zip(names, splits))
        return attr, part, None
    attr, part, ident = (os.path.join(out_dir, f) for f in
                         ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"))
    with open(attr, "w") as f:
        # Real CelebA: count line, names line with a trailing space, then width-2 value fields.
        f.write(f"{len(names)}\n" + " ".join(ATTRIBUTE_NAMES) + " \n")
        f.writelines(n + " " + " ".join(f"{int(v):2d}" for v in row) + "\n" for n, row in zip(names, values))
    with open(part, "w") as f:
        f.writelines(f"{n} {s}\n" for n, s in zip(names, splits))
    with open(ident, "w") as f:
        f.writelines(f"{n} {i}\n" for n, i in zip(names, identities))
    return attr, part, ident


def generate(out_dir, num_images, seed=0, layout="original", workers=1, images_per_identity=(3, 12)):
    """Write a synthetic CelebA of `num_images` images to `out_dir` and describe it.

    layout="original" mirrors the Google Drive release (img_align_celeba/, *.txt incl.
    identity_CelebA.txt); layout="kaggle" mirrors Kaggle's (img_align_celeba/img_align_celeba/,
    *.csv, no identity file).  Output bytes depend only on (num_images, seed, layout,
    images_per_identity), not on `workers` (1 = in-process, K > 1 = K worker processes).
    Files of the same names are overwritten; an image folder holding other .jpg files (an
    earlier, larger dataset) is refused.  Workers are forked, or spawned once TensorFlow is
    imported; spawning needs the caller's script to be guarded by `if __name__ == "__main__":`.
    """
    if layout not in ("original", "kaggle"):
        raise ValueError(f"layout must be 'original' or 'kaggle', got {layout!r}")
    if num_images < 1 or workers < 1 or not 1 <= images_per_identity[0] <= images_per_identity[1]:
        raise ValueError("need num_images >= 1, workers >= 1 and 1 <= images_per_identity[0] <= [1]")
    out_dir = os.path.abspath(out_dir)
    image_dir = os.path.join(out_dir, "img_align_celeba", *(["img_align_celeba"] if layout == "kaggle" else []))
    names = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    os.makedirs(image_dir, exist_ok=True)
    stale = {f for f in os.listdir(image_dir) if f.endswith(".jpg")} - set(names)
    if stale:  # mixing two datasets in one folder would silently corrupt both
        raise FileExistsError(f"{image_dir} holds {len(stale)} images of another dataset; use a new out_dir")
    ident, splits, number, exact, near = _plan(num_images, seed, images_per_identity)
    paths = [os.path.join(image_dir, n) for n in names]
    copies = {c for c, _ in exact + near}
    tasks = [(seed, i + 1, int(ident[i]), paths[i]) for i in range(num_images) if i not in copies]
    if workers == 1:
        rendered = [_render_task(t) for t in tasks]
    else:
        with _context().Pool(workers) as pool:
            rendered = pool.map(_render_task, tasks, chunksize=max(1, min(64, len(tasks) // (8 * workers))))
    values = np.zeros((num_images, len(ATTRIBUTE_NAMES)), np.int8)
    values[[t[1] - 1 for t in tasks]] = rendered
    for c, o in exact + near:
        values[c] = values[o]
        if (c, o) in exact:
            shutil.copyfile(paths[o], paths[c])
        else:
            _near_copy(paths[o], paths[c], seed, c + 1)
    attr, part, ident_file = _write_annotations(out_dir, layout, names, values, splits, number[ident])
    return SyntheticInfo(
        out_dir=out_dir, image_dir=image_dir, attr_file=attr, partition_file=part, identity_file=ident_file,
        num_images=num_images, num_identities=len(set(ident.tolist())),
        male_fraction=float((values[:, ATTRIBUTE_NAMES.index("Male")] == 1).mean()),
        exact_duplicates=[(names[c], names[o]) for c, o in exact],
        near_duplicates=[(names[c], names[o]) for c, o in near])


def _disk_mb(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def main(argv=None):
    """CLI: python -m celeba_gender.synthetic --out_dir=DIR --num_images=N [--seed --layout --workers]."""
    ap = argparse.ArgumentParser(prog="python -m celeba_gender.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--out_dir", required=True, help="folder to write the dataset into")
    ap.add_argument("--num_images", type=int, required=True, help="number of images (CelebA: 202599)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("original", "kaggle"), default="original",
                    help="original = Google Drive release (.txt); kaggle = Kaggle release (.csv)")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    info = generate(args.out_dir, args.num_images, args.seed, args.layout, args.workers)
    secs = time.perf_counter() - t0
    print(f"wrote {info.num_images} images of {info.num_identities} identities "
          f"(Male fraction {info.male_fraction:.3f}; planted {len(info.exact_duplicates)} exact and "
          f"{len(info.near_duplicates)} near duplicates) to {info.out_dir} "
          f"[{args.layout} layout, {_disk_mb(info.out_dir):.1f} MB] in {secs:.1f} s")
    # Returns None: the `celeba-synthetic` console script passes the return value to sys.exit.


if __name__ == "__main__":
    main()
