#!/usr/bin/env python
"""Convert CelebA (original or Kaggle form) into TFRecord shards + manifest.json.

    python make_tfrecords.py --celeba_dir=~/data/celeba --out_dir=tfrecords
    python make_tfrecords.py --synthetic=2000 --out_dir=demo/tfrecords      # no download needed
"""

from celeba_gender.cli import convert

if __name__ == "__main__":
    convert.run()
