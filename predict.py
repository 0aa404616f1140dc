#!/usr/bin/env python
"""Predict on your own photos with a trained run.

    python predict.py --run_dir=runs/resnet50v2-... photo1.jpg photo2.png
    python predict.py --run_dir=runs/... --detect_faces --output=predictions.csv my_photos/
"""

from celeba_gender.cli import predict

if __name__ == "__main__":
    predict.run()
