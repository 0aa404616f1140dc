"""The options of one conversion: ``ConvertConfig``, the flags of make_tfrecords.py."""

from __future__ import annotations

import dataclasses

from celeba_gender.convert import curation, image_scan, locate
from celeba_gender.core import options
from celeba_gender.core.errors import UserError
from celeba_gender.core.options import option


class ConvertError(UserError):
    """The conversion cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Options of one conversion (the flags of make_tfrecords.py)."""

    celeba_dir: str | None = option(None, "CelebA folder: list_attr_celeba.txt (or Kaggle's .csv) and "
                                    "img_align_celeba/. When not given, the first of these is used: "
                                    f"${locate.ENV_VAR} if set; ./{locate.DEFAULT_DIR} under the "
                                    "current folder; the copy kagglehub downloaded into its cache "
                                    f"($KAGGLEHUB_CACHE, else ~/.cache/kagglehub; then datasets/"
                                    f"{locate.KAGGLE_HANDLE}/versions/<newest complete n>/). With --synthetic "
                                    "it is where the synthetic dataset is written.", path=True)
    download: bool = option(False, f"Download Kaggle's CelebA release ({locate.KAGGLE_HANDLE}, about 1.4 GB) "
                            "with kagglehub into its cache and convert it; a copy kagglehub already finished is "
                            "used without contacting Kaggle. Needs Kaggle credentials (~/.kaggle/kaggle.json or "
                            "KAGGLE_USERNAME and KAGGLE_KEY).")
    out_dir: str = option("tfrecords", "Where shards and manifest.json go. One conversion at a time: while it runs, "
                          "a .lock file there names it, and a second one is refused.", path=True)
    attribute: str = option("Male", "The attribute to classify (any column of the attribute file).")
    split: str = option("official", "official: CelebA's identity-disjoint list_eval_partition; identity: a random "
                        "identity-disjoint split by --split_fractions (needs identity_CelebA.txt); source: the "
                        "source study's random split, replayed draw for draw (leaks identities; for reproduction "
                        "only).",
                        choices=curation.SPLIT_MODES)
    split_fractions: tuple[float, float, float] = option((0.8, 0.1, 0.1), "train,validation,test fractions for "
                                                         "--split=identity.", lower=0)
    limit: int = option(0, "Use this many rows drawn at random (df.sample with --seed); 0 = all (as is a limit "
                        "above the usable rows, which the summary says).", lower=0)
    balance: bool = option(True, "Undersample the majority class (per split; before the split for --split=source); "
                           "--nobalance keeps every image.")
    dedupe: str = option("exact", "Drop copies before splitting: exact = byte-identical files; near = also "
                         "perceptual-hash near-copies (slower); none = keep them (copies may leak).",
                         choices=curation.DEDUPE_MODES)
    near_threshold: int = option(curation.NEAR_THRESHOLD, "Max differing bits of the 256-bit perceptual hashes for "
                                 "--dedupe=near.", lower=0, upper=31)
    max_pixels: int = option(image_scan.MAX_PIXELS, "Skip (as too_large, before decoding) images of more pixels than "
                             "this, read from the header: huge files and decompression bombs cannot exhaust memory. "
                             "A CelebA image has 38,804.", lower=1)
    num_shards: int = option(0, "Shards per split; 0 = enough for --shard_mb each (at least 8).", lower=0)
    shard_mb: float = option(100.0, "Target shard size in MB when --num_shards=0.", lower=0.001)
    workers: int = option(0, "Worker processes for reading and writing; 0 = one per CPU.", lower=0)
    seed: int = option(42, "Seed of every random draw (sampling, balancing, splits, shard order).")
    overwrite: bool = option(False, "Replace shards in --out_dir that were made with other options.")
    max_bad_fraction: float = option(0.01, "Fail (after writing the report) when more than this fraction of rows "
                                     "or files is unusable.", lower=0.0, upper=1.0)
    synthetic: int = option(0, "Generate a synthetic CelebA of this many images (into --celeba_dir, or beside "
                            "--out_dir) and convert it.", lower=0)
    progress: bool = option(True, "Show progress bars.")

    def plan_options(self) -> dict:
        """The options that decide the shards' content (and so the plan fingerprint)."""
        keys = ("attribute", "split", "split_fractions", "limit", "balance", "dedupe", "near_threshold",
                "max_pixels", "num_shards", "shard_mb", "seed")
        out = {k: getattr(self, k) for k in keys}
        out["split_fractions"] = list(self.split_fractions)
        return out

    def __post_init__(self):
        options.validate(self)
        if len(self.split_fractions) != 3 or sum(self.split_fractions) <= 0:
            raise ConvertError("--split_fractions takes three non-negative numbers: train,validation,test.")
        if self.download and (self.synthetic or self.celeba_dir):
            other = "--synthetic" if self.synthetic else "--celeba_dir"
            raise ConvertError(f"--download fetches CelebA into kagglehub's cache and converts that copy: pass "
                               f"--download or {other}, not both.")
