"""Flags of ``python -m celeba_gender.synthetic`` (and ``celeba-synthetic``) -> celeba_gender.synthetic.generate().

The flags are defined here, not in the library module, so that a program importing celeba_gender.synthetic
(make_tfrecords.py does) does not define --out_dir, --seed and --workers a second time.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

from absl import app, flags

from celeba_gender import parallel, synthetic

flags.DEFINE_string("out_dir", None, "Folder to write the synthetic CelebA into (required); made if missing. "
                    "Images of the same names are overwritten; a folder holding other images is refused.")
flags.DEFINE_integer("num_images", None, "Number of images to draw (required; the real CelebA has 202,599).",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of every random draw: the files depend only on --num_images, --seed and "
                     "--layout.", lower_bound=0)
flags.DEFINE_enum("layout", "original", synthetic.LAYOUTS,
                  "original: the Google Drive release (img_align_celeba/, .txt annotations with "
                  "identity_CelebA.txt); kaggle: Kaggle's (img_align_celeba/img_align_celeba/, .csv annotations, "
                  "no identity file).")
flags.DEFINE_integer("workers", 0, "Processes drawing images; 0 = one per CPU. The files do not depend on it.",
                     lower_bound=0)

FLAGS = flags.FLAGS


def _fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit status 2 (as the other commands do)."""
    print(f"synthetic: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, but a bad or missing flag is one error line (exit 2), not absl's two (exit 1)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{str(e).rstrip('.')} (see --help).")


def _disk_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def main(argv: list[str]) -> None:
    """Generates the dataset the parsed flags describe and prints a one-line summary."""
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value).")
    if FLAGS.out_dir is None or FLAGS.num_images is None:
        _fail("--out_dir and --num_images are required, e.g. --out_dir=/tmp/celeba --num_images=2000.")
    started = time.perf_counter()
    try:
        info = synthetic.generate(FLAGS.out_dir, FLAGS.num_images, seed=FLAGS.seed, layout=FLAGS.layout,
                                  workers=FLAGS.workers or parallel.default_workers())
    except synthetic.SyntheticError as e:
        _fail(str(e))
    except OSError as e:  # e.g. an --out_dir that cannot be written
        _fail(f"cannot write the dataset: {e}")
    except KeyboardInterrupt:
        print("\nsynthetic: interrupted. Run the same command again to write the whole dataset.", file=sys.stderr)
        sys.exit(130)
    print(f"wrote {info.num_images} images of {info.num_identities} identities "
          f"(Male fraction {info.male_fraction:.3f}; planted {len(info.exact_duplicates)} exact and "
          f"{len(info.near_duplicates)} near duplicates) to {info.out_dir} "
          f"[{FLAGS.layout} layout, {_disk_mb(info.out_dir):.1f} MB] in {time.perf_counter() - started:.1f} s")


def run() -> None:
    """Console-script entry point (celeba-synthetic); python -m celeba_gender.synthetic runs it too."""
    # --help lists the main module's key flags, and the main module is not this one when run as a console
    # script or as python -m celeba_gender.synthetic: declare the flags its key flags.
    for name in ("out_dir", "num_images", "seed", "layout", "workers"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":  # python -m celeba_gender.cli.synthetic
    run()
