"""``python -m celeba_gender.cli.synthetic`` (and ``celeba-synthetic``): flags ->
:func:`celeba_gender.synthetic.generate.generate`.

The flags are defined here, not in the library module, so that a program importing celeba_gender.synthetic.generate
(make_tfrecords.py does) does not define --out_dir, --seed and --workers a second time.
"""

from __future__ import annotations

import dataclasses
import os
import time

from celeba_gender.core import worker_pool
from celeba_gender.synthetic import generate
from celeba_gender.cli import config_flags, runner
from celeba_gender.core.options import option


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The flags of the synthetic CelebA generator."""

    out_dir: str = option(help="Folder to write the synthetic CelebA into (required); made if missing. Images of "
                          "the same names are overwritten; a folder holding other images is refused.")
    num_images: int = option(help="Number of images to draw (required; the real CelebA has 202,599).", lower=1)
    seed: int = option(0, "Seed of every random draw: the files depend only on --num_images, --seed and --layout.",
                       lower=0)
    layout: str = option("original", "original: the Google Drive release (img_align_celeba/, .txt annotations "
                         "with identity_CelebA.txt); kaggle: Kaggle's (img_align_celeba/img_align_celeba/, .csv "
                         "annotations, no identity file).", choices=generate.LAYOUTS)
    workers: int = option(0, "Processes drawing images; 0 = one per CPU. The files do not depend on it.", lower=0)


config_flags.define(SyntheticConfig, __name__)


def _disk_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e6


def main(argv: list[str]) -> None:
    """Generates the dataset the parsed flags describe and prints a one-line summary."""
    config, _ = config_flags.build(SyntheticConfig)
    started = time.perf_counter()
    try:
        info = generate.generate(config.out_dir, config.num_images, seed=config.seed, layout=config.layout,
                                 workers=config.workers or worker_pool.default_workers())
    except OSError as e:  # e.g. an --out_dir that cannot be written
        raise generate.SyntheticError(f"cannot write the dataset: {e}") from None
    print(f"wrote {info.num_images} images of {info.num_identities} identities "
          f"(Male fraction {info.male_fraction:.3f}; planted {len(info.exact_duplicates)} exact and "
          f"{len(info.near_duplicates)} near duplicates) to {info.out_dir} "
          f"[{config.layout} layout, {_disk_mb(info.out_dir):.1f} MB] in {time.perf_counter() - started:.1f} s")


def run() -> None:
    """Console-script entry point (celeba-synthetic); python -m celeba_gender.cli.synthetic runs it too."""
    runner.run(main, "synthetic", __name__)


if __name__ == "__main__":  # python -m celeba_gender.cli.synthetic
    run()
