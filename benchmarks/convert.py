#!/usr/bin/env python
"""Converter throughput: images/s of make_tfrecords on a synthetic CelebA folder, per --dedupe mode.

    python benchmarks/convert.py                      # 20,000 images, dedupe exact and near
    python benchmarks/convert.py --num_images=2000 --repeats=1

The folder is generated once (benchmarks/_data/, git-ignored). One untimed warm-up conversion fills the
page cache, so every timed run reads the same cached files; each timed run writes a fresh directory.
Prints a table and writes benchmarks/results/convert.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

from celeba_gender.convert import converter  # noqa: E402

from celeba_gender.convert.config import ConvertConfig
from celeba_gender.synthetic import generate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def time_conversion(celeba_dir: str, dedupe: str, workers: int) -> tuple[float, dict]:
    out = tempfile.mkdtemp(prefix="convert-bench-")
    try:
        start = time.perf_counter()
        manifest = converter.convert(ConvertConfig(celeba_dir=celeba_dir, out_dir=out, dedupe=dedupe,
                                                   workers=workers, progress=False))
        return time.perf_counter() - start, manifest
    finally:
        shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=20000)
    parser.add_argument("--data_dir", default=None, help="synthetic folder (default <data_root>/synthetic_N)")
    parser.add_argument("--data_root", default=os.path.join(HERE, "_data"), help="where the synthetic data goes")
    parser.add_argument("--modes", default="exact,near")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per CPU")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "convert.json"))
    args = parser.parse_args()

    data_dir = args.data_dir or os.path.join(args.data_root, f"synthetic_{args.num_images}")
    workers = args.workers or os.cpu_count()
    t0 = time.perf_counter()
    generate.ensure(data_dir, args.num_images, seed=42, workers=workers)
    print(f"synthetic CelebA ready in {data_dir} ({time.perf_counter() - t0:.1f} s)")
    time_conversion(data_dir, "exact", workers)  # warm-up: page cache, imports

    info = machine.describe(("numpy", "pillow", "imagehash", "google-crc32c"))
    rows = []
    for mode in args.modes.split(","):
        times = []
        for _ in range(args.repeats):
            seconds, manifest = time_conversion(data_dir, mode, workers)
            times.append(seconds)
        images = manifest["source"]["scanned"]
        med = statistics.median(times)
        rows.append({"dedupe": mode, "images": images, "workers": workers, "seconds_median": round(med, 2),
                     "seconds_all": [round(t, 2) for t in times], "images_per_s": round(images / med),
                     "written": sum(s["count"] for s in manifest["splits"].values()),
                     "dropped": manifest["dropped_counts"]})
    print(f"\nmachine: {machine.one_line(info)}")
    print(f"{'dedupe':<8}{'images':>8}{'workers':>9}{'seconds':>9}{'images/s':>10}  dropped")
    for r in rows:
        print(f"{r['dedupe']:<8}{r['images']:>8,}{r['workers']:>9}{r['seconds_median']:>9.2f}{r['images_per_s']:>10,}"
              f"  {r['dropped']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "convert", "command": " ".join(sys.argv), "machine": info,
                   "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
