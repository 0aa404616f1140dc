#!/usr/bin/env python
"""Training-step throughput per arch: does the input pipeline keep up, and what do bfloat16 and XLA buy?

    python benchmarks/train_step.py                                   # all archs, batch 16, on the CPU
    python benchmarks/train_step.py --archs=resnet50v2,small --steps=10

For each arch, images/s of the engine's own training step (TrainStep: device augmentation, forward,
backward, Adam) fed by:
  synthetic  random uint8 batches already in memory (the model step alone)
  shards     the real pipeline from TFRecord shards, uncached (decode every step)
and the synthetic source again with mixed_bfloat16 and with --jit_compile. shards/synthetic near 1.0 means
the input keeps up. Each configuration runs in its own process (precision policies are global), first
steps (tracing, 5-50 s) excluded. Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHS = ("alexnet", "resnet50v2", "inceptionv3", "vgg16", "densenet201", "efficientnetv2b0", "small", "tiny")
CONFIGS = (("synthetic", "float32", False), ("shards", "float32", False), ("synthetic", "mixed_bfloat16", False),
           ("synthetic", "float32", True))


def _key(source: str, precision: str, jit: bool) -> str:
    return f"{source}/{precision}" + ("/jit" if jit else "")


def measure(arch: str, source: str, precision: str, jit: bool, batch: int, steps: int, warmup: int,
            data_dir: str) -> float:
    """images/s of ``steps`` training steps after ``warmup`` (runs inside a fresh process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from celeba_gender.inputs import config as input_config
    from celeba_gender.inputs import pipeline
    from celeba_gender.inputs.augment import Augmenter
    from celeba_gender.models import build, registry
    from celeba_gender.tasks.classification import Classification
    from celeba_gender.train import step

    keras.mixed_precision.set_global_policy(precision)
    strategy = tf.distribute.get_strategy()
    model = build.build_model(registry.ModelConfig(arch=arch, weights="none"))
    augment = Augmenter(input_config.AugmentConfig(), seed=0, name="augment")
    optimizer = keras.optimizers.Adam(1e-4)
    parts = step.Parts(model.network, optimizer, Classification(("Female", "Male")), augment)
    train_step = step.TrainStep(strategy, parts, step.StepConfig(batch, jit_compile=jit))
    if source == "synthetic":
        ds = pipeline.random_batches(batch, model.image_size)
    else:
        ds = pipeline.train_dataset(input_config.DataConfig(data_dir, model.image_size, batch))
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: ds))
    train_step.train(iterator, warmup)
    start = time.perf_counter()
    train_step.train(iterator, steps)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data_dir", default=None, help="shards; default: a synthetic CelebA of 20,000 images "
                        "converted under benchmarks/_data/ (made the first time, shared with input_pipeline.py)")
    parser.add_argument("--data_root", default=os.path.join(HERE, "_data"), help="where the synthetic data goes")
    parser.add_argument("--num_images", type=int, default=20000, help="size of the synthetic data made")
    parser.add_argument("--configs", default=",".join(_key(*c) for c in CONFIGS),
                        help="which of the configurations to time (comma-separated), all by default")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train_step.json"))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one configuration
    args = parser.parse_args()

    if args.one:
        arch, source, precision, jit = args.one.split(":")
        print(json.dumps({"images_per_s": measure(arch, source, precision, jit == "1", args.batch, args.steps,
                                                  args.warmup, args.data_dir)}))
        return
    sys.path.insert(0, HERE)
    import machine

    chosen = args.configs.split(",")
    configs = [c for c in CONFIGS if _key(*c) in chosen]
    if len(configs) != len(chosen):
        parser.error(f"--configs: each of {args.configs} must be one of {', '.join(_key(*c) for c in CONFIGS)}")
    if args.data_dir is None and any(source == "shards" for source, _, _ in configs):
        args.data_dir = machine.benchmark_shards(args.data_root, args.num_images)[1]

    rows = []
    for arch in args.archs.split(","):
        row = {"arch": arch}
        for source, precision, jit in configs:
            key = _key(source, precision, jit)
            cmd = [sys.executable, __file__, f"--one={arch}:{source}:{precision}:{int(jit)}", f"--batch={args.batch}",
                   f"--steps={args.steps}", f"--warmup={args.warmup}", f"--data_dir={args.data_dir}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            try:
                row[key] = round(json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"], 1)
            except (IndexError, ValueError, KeyError):
                row[key] = None
                print(f"{arch} {key} failed:\n{done.stderr[-1500:]}", file=sys.stderr)
            print(f"{arch:<17}{key:<26}{row[key]}", flush=True)
        rows.append(row)

    info = machine.describe(("tensorflow", "keras"))
    print(f"\nmachine: {machine.one_line(info)}; batch {args.batch}; images/s of training steps")
    keys = [_key(*c) for c in configs]
    print(f"{'arch':<17}" + "".join(f"{k:>26}" for k in keys) + f"{'shards/synth':>14}")
    for row in rows:
        synthetic, shards = row.get("synthetic/float32"), row.get("shards/float32")
        ratio = shards / synthetic if synthetic and shards else None
        row["shards_over_synthetic"] = round(ratio, 2) if ratio else None
        print(f"{row['arch']:<17}" + "".join(f"{row[k] if row[k] is not None else '-':>26}" for k in keys)
              + f"{row['shards_over_synthetic'] or '-':>14}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "train_step", "command": " ".join(sys.argv), "machine": info, "batch": args.batch,
                   "steps": args.steps, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
