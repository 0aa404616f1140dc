#!/usr/bin/env python
"""model.tflite against the SavedModel: file sizes, agreement and speed of each TensorFlow Lite choice.

    python benchmarks/tflite.py                          # trains make demo's model first (demo.flags, ~5 min)
    python benchmarks/tflite.py --run_dir=demo/runs/small-20261130-190115

Converts the run's exported model (export/model.keras) with each --tflite choice (float32, float16,
dynamic_int8) and runs every image of the test split through the SavedModel's serve_images and through each
TensorFlow Lite file (TensorFlow's interpreter, XNNPACK on the CPU), on the same decoded images. Reports per
choice: the file's size, how often it gives the SavedModel's class (for a multi-attribute model: the same
decision on each attribute at labels.json's thresholds), the largest probability difference, its test
accuracy beside the SavedModel's, and images/s. Without --run_dir it makes the demo's data and model with
the demo's own flagfiles (convert/demo.flags, demo.flags) under --data_root. Writes
benchmarks/results/tflite.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHOICES = ("float32", "float16", "dynamic_int8")


def demo_run(data_root: str, extra: list[str]) -> str:
    """The run make demo trains (its flagfiles; ``extra`` flags after them, e.g. a smaller size), made once."""
    runs = sorted(glob.glob(os.path.join(data_root, "runs", "*-*")))
    if runs and os.path.exists(os.path.join(runs[-1], "export", "model.keras")):
        return runs[-1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    tfrecords = os.path.join(data_root, "tfrecords")
    convert = [a for a in extra if a.startswith("--synthetic=")]
    train = [a for a in extra if not a.startswith("--synthetic=")]
    for command in (["celeba_gender.cli.convert", "--flagfile=convert/demo.flags", f"--out_dir={tfrecords}",
                     "--noprogress", *convert],
                    ["celeba_gender.cli.train", "--flagfile=demo.flags", f"--data_dir={tfrecords}",
                     f"--runs_root={os.path.join(data_root, 'runs')}", "--noprogress", "--noevaluate_test", *train]):
        subprocess.run([sys.executable, "-m", *command], check=True, env=env, stdout=subprocess.DEVNULL)
    return sorted(glob.glob(os.path.join(data_root, "runs", "*-*")))[-1]


def measure(run_dir: str, work: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from celeba_gender.evaluate.predictions import Context, load, predict_split
    from celeba_gender.rundir.directory import RunDirectory
    from celeba_gender.serve import tflite
    from celeba_gender.shards import shard_dir
    from celeba_gender.tasks import kinds

    run = RunDirectory(run_dir)
    export = run.export_dir
    trained = load(run, "best")  # the checkpoint the export holds (the trainer exports the best one)
    size = trained.image_size
    data_dir = run.recorded_settings()["data_dir"]
    context = Context(run, data_dir, shard_dir.read_manifest(data_dir))
    test = predict_split(trained, context, "test", 64)
    truth, names = test.labels, test.names
    by_name = context.images(trained, "test", set(names))
    images = np.stack([by_name[n] for n in names])
    model = keras.models.load_model(os.path.join(export, "model.keras"))
    with open(os.path.join(export, "labels.json")) as f:
        task = kinds.from_record(json.load(f))  # the exported decisions (each attribute's threshold)

    def decide(p):
        return task.decide(p)

    def accuracy(p):
        return float(((decide(p) == np.asarray(truth)).mean()))

    served = tf.saved_model.load(os.path.join(export, "saved_model")).signatures["serve_images"]
    served(images=tf.constant(images[:64]))  # traced once before timing
    start = time.perf_counter()
    reference = np.concatenate([served(images=tf.constant(images[i:i + 64]))["probabilities"].numpy()
                                for i in range(0, len(images), 64)])
    saved_rate = len(images) / (time.perf_counter() - start)
    rows = [{"model": "SavedModel", "bytes": None, "agreement": 1.0, "max_abs_diff": 0.0,
             "accuracy": accuracy(reference), "images_per_s": round(saved_rate, 1)}]
    for choice in CHOICES:
        path = tflite.write(model, os.path.join(work, choice), size, choice)
        runner = tflite.TFLiteModel(path)
        runner.predict(images[:64], batch_size=64)  # first call sizes the tensors
        start = time.perf_counter()
        lite = runner.predict(images, batch_size=64)
        rate = len(images) / (time.perf_counter() - start)
        rows.append({"model": f"model.tflite ({choice})", "bytes": os.path.getsize(path),
                     "agreement": float((decide(lite) == decide(reference)).mean()),
                     "max_abs_diff": float(np.abs(lite - reference).max()), "accuracy": accuracy(lite),
                     "images_per_s": round(rate, 1)})
    return {"run_dir": run_dir, "test_images": len(images), "kind": task.kind, "image_size": list(size),
            "arch": trained.arch, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=None, help="a finished run; default: make demo's, made under "
                        "--data_root the first time")
    parser.add_argument("--data_root", default=os.path.join(HERE, "_data", "tflite"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "tflite.json"))
    args, extra = parser.parse_known_args()  # any other flag goes to the demo's commands (e.g. --epochs=1)
    sys.path.insert(0, HERE)
    import machine

    run_dir = args.run_dir or demo_run(args.data_root, extra)
    result = measure(run_dir, os.path.join(args.data_root, "converted"))
    info = machine.describe(("tensorflow", "keras"))
    print(f"machine: {machine.one_line(info)}")
    print(f"{result['arch']} at {result['image_size'][0]}x{result['image_size'][1]}, {result['test_images']} test "
          f"images ({run_dir})")
    print(f"{'model':<28}{'size':>10}{'agreement':>11}{'max |dp|':>10}{'accuracy':>10}{'images/s':>10}")
    for row in result["rows"]:
        size = "-" if not row["bytes"] else (f"{row['bytes'] / 2**20:.2f} MiB" if row["bytes"] >= 2**20
                                              else f"{row['bytes'] / 2**10:.1f} KiB")
        print(f"{row['model']:<28}{size:>10}{row['agreement']:>11.4f}{row['max_abs_diff']:>10.5f}"
              f"{row['accuracy']:>10.4f}{row['images_per_s']:>10}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "tflite", "command": " ".join(sys.argv), "machine": info,
                   "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
