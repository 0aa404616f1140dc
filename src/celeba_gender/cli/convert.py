"""Flags of make_tfrecords.py -> ConvertConfig -> celeba_gender.convert.convert()."""

from __future__ import annotations

import sys

from absl import app, flags

from celeba_gender import convert as convert_lib
from celeba_gender.celeba import CelebaError
from celeba_gender.curation import DEDUPE_MODES, NEAR_THRESHOLD, SPLIT_MODES
from celeba_gender.manifest import ManifestError
from celeba_gender.synthetic import SyntheticError

flags.DEFINE_string("celeba_dir", None, "CelebA folder: list_attr_celeba.txt (or Kaggle's .csv) and "
                    "img_align_celeba/. Required unless --synthetic is set (then it is where the synthetic "
                    "dataset is written).")
flags.DEFINE_string("out_dir", "tfrecords", "Where shards and manifest.json go.")
flags.DEFINE_string("attribute", "Male", "The attribute to classify (any column of the attribute file).")
flags.DEFINE_enum("split", "official", SPLIT_MODES,
                  "official: CelebA's identity-disjoint list_eval_partition; identity: a random "
                  "identity-disjoint split by --split_fractions (needs identity_CelebA.txt); seed: the source "
                  "study's random split, replayed draw for draw (leaks identities; for reproduction only).")
flags.DEFINE_list("split_fractions", ["0.8", "0.1", "0.1"], "train,validation,test fractions for --split=identity.")
flags.DEFINE_integer("limit", 0, "Use this many rows drawn at random (df.sample with --seed); 0 = all.", lower_bound=0)
flags.DEFINE_bool("balance", False, "Undersample the majority class (per split; before the split for --split=seed).")
flags.DEFINE_enum("dedupe", "exact", DEDUPE_MODES, "Drop copies before splitting: exact = byte-identical files; "
                  "near = also perceptual-hash near-copies (slower); none = keep them (copies may leak).")
flags.DEFINE_integer("near_threshold", NEAR_THRESHOLD, "Max differing bits of the 256-bit perceptual hashes "
                     "for --dedupe=near.", lower_bound=0, upper_bound=31)
flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = enough for --shard_mb each (at least 8).", lower_bound=0)
flags.DEFINE_float("shard_mb", 100.0, "Target shard size in MB when --num_shards=0.", lower_bound=0.001)
flags.DEFINE_integer("workers", 0, "Worker processes for reading and writing; 0 = one per CPU.", lower_bound=0)
flags.DEFINE_integer("seed", 42, "Seed of every random draw (sampling, balancing, splits, shard order).")
flags.DEFINE_bool("overwrite", False, "Replace shards in --out_dir that were made with other options.")
flags.DEFINE_float("max_bad_fraction", 0.01, "Fail (after writing the report) when more than this fraction of "
                   "rows or files is unusable.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("synthetic", 0, "Generate a synthetic CelebA of this many images (into --celeba_dir, or "
                     "beside --out_dir) and convert it.", lower_bound=0)
flags.DEFINE_bool("progress", True, "Show progress bars.")

FLAGS = flags.FLAGS


def config_from_flags() -> convert_lib.ConvertConfig:
    """The frozen config for the parsed flags."""
    try:
        fractions = tuple(float(x) for x in FLAGS.split_fractions)
    except ValueError:
        raise convert_lib.ConvertError(f"--split_fractions={','.join(FLAGS.split_fractions)}: "
                                       "give three numbers, e.g. 0.8,0.1,0.1.")
    return convert_lib.ConvertConfig(
        celeba_dir=FLAGS.celeba_dir, out_dir=FLAGS.out_dir, attribute=FLAGS.attribute, split=FLAGS.split,
        split_fractions=fractions, limit=FLAGS.limit, balance=FLAGS.balance, dedupe=FLAGS.dedupe,
        near_threshold=FLAGS.near_threshold, num_shards=FLAGS.num_shards, shard_mb=FLAGS.shard_mb,
        workers=FLAGS.workers, seed=FLAGS.seed, overwrite=FLAGS.overwrite,
        max_bad_fraction=FLAGS.max_bad_fraction, synthetic=FLAGS.synthetic, progress=FLAGS.progress)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value).")
    try:
        config = config_from_flags()
        manifest = convert_lib.convert(config)
    except (convert_lib.ConvertError, CelebaError, ManifestError, SyntheticError) as e:
        print(f"make_tfrecords: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nmake_tfrecords: interrupted. Finished shards are kept; run the same command again to resume.",
              file=sys.stderr)
        sys.exit(130)
    print(convert_lib.format_summary(manifest, config.out_dir))


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":  # python -m celeba_gender.cli.convert
    run()
