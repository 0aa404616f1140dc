#!/usr/bin/env python
"""Input throughput: this engine's tf.data pipeline vs Keras ImageDataGenerator, on the same JPEG files.

    python benchmarks/input_pipeline.py                    # 20,000 synthetic CelebA images (178x218, ~12 KB)
    python benchmarks/input_pipeline.py --num_images=4000 --passes=2

Rows (images/s, ratio to the baseline, fraction of the decode ceiling):
  baseline   ImageDataGenerator.flow_from_dataframe with the source study's augmentation (as the source ran it)
  idg-rescale ImageDataGenerator with rescale only
  shards     this pipeline from TFRecord shards, no augmentation, uncached (every pass decodes)
  cached     the same with cache=memory, a pass after the cache is full (decoded uint8 from memory)
  host-fused this pipeline + the source's augmentation on the host, one fused affine transform per batch
             (augment.Augmenter)
  host-stacked the same with the stacked Keras Random* layers (augment_reference.StackedAugmenter)
  ceiling    tf.io.decode_jpeg alone over the same bytes in memory, in graph mode on one thread, times the
             cores (machine.decode_ceiling)

Warm-up batches are excluded; each row is the median of --passes timed passes. The synthetic folder and its
shards are made once under benchmarks/_data/ (git-ignored). Writes benchmarks/results/input_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from celeba_gender.inputs import augment, augment_reference, pipeline  # noqa: E402
from celeba_gender.convert.celeba import detect_layout, read_celeba  # noqa: E402
from celeba_gender.inputs import config as input_config

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = (218, 178)


def timed(iterate, passes: int) -> list[float]:
    """Runs ``iterate()`` (returns images seen) ``passes`` times; returns images/s of each pass."""
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        n = iterate()
        rates.append(n / (time.perf_counter() - start))
    return rates


def drain(ds, batches: int, warmup: int = 3):
    """An iterate() for a tf.data dataset: ``warmup`` untimed batches are pulled before timing starts."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)

    def iterate():
        n = 0
        for _ in range(batches):
            images, _ = next(it)
            n += int(images.shape[0])
        return n
    return iterate


def idg_rows(celeba_dir: str, batch: int, batches: int, passes: int) -> dict[str, list[float]]:
    """The source's ImageDataGenerator, with its augmentation and with rescale only."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator  # legacy: the baseline

    layout = detect_layout(celeba_dir)
    table, _ = read_celeba(layout)
    df = pd.DataFrame({"image_id": table["image_id"], "Gender": np.where(table["Male"] == 1, "Male", "Female")})
    out = {}
    for name, gen in (("baseline", ImageDataGenerator(rotation_range=15, rescale=1.0 / 255, shear_range=0.1,
                                                      zoom_range=0.2, horizontal_flip=True, width_shift_range=0.1,
                                                      height_shift_range=0.1)),
                      ("idg-rescale", ImageDataGenerator(rescale=1.0 / 255))):
        flow = gen.flow_from_dataframe(df, layout.image_dir + "/", x_col="image_id", y_col="Gender",
                                       target_size=SIZE, class_mode="binary", batch_size=batch, shuffle=True)
        state = {"i": 2}
        flow[0], flow[1]  # warm-up

        def iterate(flow=flow, state=state):
            n = 0
            for _ in range(batches):
                x, _ = flow[state["i"] % len(flow)]
                state["i"] += 1
                n += len(x)
            return n
        out[name] = timed(iterate, passes)
    return out


def ceiling(celeba_dir: str, n: int, passes: int) -> tuple[float, int]:
    """Single-thread graph-mode decode rate of the same files (machine.decode_ceiling) and the core count."""
    layout = detect_layout(celeba_dir)
    names = sorted(os.listdir(layout.image_dir))[:n]
    blobs = [open(os.path.join(layout.image_dir, f), "rb").read() for f in names]
    measured = machine.decode_ceiling(blobs, passes)
    return measured["single_thread_per_s"], measured["cores"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=20000)
    parser.add_argument("--data_root", default=os.path.join(HERE, "_data"), help="where the synthetic data goes")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--idg_batches", type=int, default=16, help="batches per timed ImageDataGenerator pass")
    parser.add_argument("--aug_batches", type=int, default=24, help="batches per timed host-augmentation pass")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "input_pipeline.json"))
    args = parser.parse_args()

    celeba_dir, shard_dir = machine.benchmark_shards(args.data_root, args.num_images)
    info = pipeline.split_info(shard_dir, "train")
    steps = pipeline.steps_per_epoch(info, args.batch)
    print(f"{info.count:,} training images in {len(info.files)} shards; {steps} batches of {args.batch} a pass")

    rows = idg_rows(celeba_dir, args.batch, args.idg_batches, args.passes)
    shards = pipeline.train_dataset(input_config.DataConfig(shard_dir, batch=args.batch, seed=0))
    rows["shards"] = timed(drain(shards, steps), args.passes)
    cached = pipeline.train_dataset(input_config.DataConfig(shard_dir, batch=args.batch, seed=0, cache="memory"))
    fill = drain(cached, steps - 3)
    fill()  # the first pass fills the cache
    rows["cached"] = timed(drain(cached, steps, warmup=0), args.passes)
    config = input_config.AugmentConfig()
    # Each layer built once, here, outside tf.data's traced map function (augment.host_augment_fn).
    for kind, layer in (("fused", augment.Augmenter(config)), ("stacked", augment_reference.StackedAugmenter(config))):
        ds = pipeline.train_dataset(input_config.DataConfig(shard_dir, batch=args.batch, seed=0, cache="memory"),
                                    host_augment=augment.host_augment_fn(layer))
        rows[f"host-{kind}"] = timed(drain(ds, args.aug_batches), args.passes)
    single, cores = ceiling(celeba_dir, min(4000, args.num_images), args.passes)
    rows["ceiling"] = [single * cores]

    base = statistics.median(rows["baseline"])
    top = rows["ceiling"][0]
    result_rows = []
    machine_info = machine.describe(("tensorflow", "keras", "numpy", "pillow"))
    print(f"\nmachine: {machine.one_line(machine_info)}; TF {machine_info['packages']['tensorflow']}")
    print(f"{'path':<14}{'images/s':>10}{'x baseline':>12}{'of ceiling':>12}")
    for name, rates in rows.items():
        med = statistics.median(rates)
        result_rows.append({"path": name, "images_per_s": round(med), "all": [round(r) for r in rates],
                            "x_baseline": round(med / base, 2), "of_ceiling": round(med / top, 3)})
        print(f"{name:<14}{med:>10,.0f}{med / base:>11.1f}x{med / top:>11.0%}")
    print(f"(ceiling = single-thread graph-mode decode {single:,.0f}/s x {cores} cores)")
    fused = statistics.median(rows["host-fused"]) / statistics.median(rows["host-stacked"])
    print(f"fused host augmentation is {fused:.1f}x the stacked layers")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "input_pipeline", "command": " ".join(sys.argv), "machine": machine_info,
                   "time": time.strftime("%Y-%m-%d %H:%M:%S"), "batch": args.batch,
                   "train_images": info.count, "single_thread_decode": round(single), "cores": cores,
                   "fused_over_stacked": round(fused, 2), "rows": result_rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
