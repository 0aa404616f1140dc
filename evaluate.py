#!/usr/bin/env python
"""Evaluate a training run: metrics over every example, subgroups, error galleries, in RUN/report/.

    python evaluate.py --run_dir=runs/inceptionv3-20261128-101500
    python evaluate.py --run_dir=runs/... --split=validation --checkpoint=last
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from celeba_gender.cli import evaluate  # noqa: E402

if __name__ == "__main__":
    evaluate.run()
