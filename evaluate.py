#!/usr/bin/env python
"""Evaluate a training run: metrics over every example, subgroups, error galleries, in RUN/report/.

    python evaluate.py --run_dir=runs/inceptionv3-20261128-101500
    python evaluate.py --run_dir=runs/... --split=validation --checkpoint=last
"""

from celeba_gender.cli import evaluate

if __name__ == "__main__":
    evaluate.run()
