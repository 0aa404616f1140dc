#!/usr/bin/env python
"""Train one architecture on the converter's shards.

    python train.py --arch=inceptionv3 --batch=128
    python train.py --flagfile=source/resnet50v2.flags        # the source study's settings
    python train.py --flagfile=demo.flags                  # the small CNN on the synthetic demo data, on a CPU
"""

from celeba_gender.cli import train

if __name__ == "__main__":
    train.run()
