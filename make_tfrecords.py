#!/usr/bin/env python
"""Convert CelebA (original or Kaggle form) into TFRecord shards + manifest.json.

    python make_tfrecords.py --celeba_dir=~/data/celeba --out_dir=tfrecords
    python make_tfrecords.py --synthetic=2000 --out_dir=demo/tfrecords      # no download needed
"""

from absl import flags

from celeba_gender.cli import convert

flags.adopt_module_key_flags(convert)  # so that --help lists the converter's flags

if __name__ == "__main__":
    convert.run()
