#!/usr/bin/env python
"""The whole CelebA at once: converter speed and memory, and one uncached training pass, at 202,599 images.

    python benchmarks/full_size.py                     # generates the synthetic CelebA once (~20 min on 2 cores)
    python benchmarks/full_size.py --num_images=20000  # a smaller trial

Targets (the issue's): the conversion with the converter's defaults (balance on, dedupe exact) at >= 3,000
images/s with under 2 GiB of memory for the whole process tree; one uncached pass over the training split
(``pipeline.train_dataset(DataConfig(out_dir, batch=128, cache="none"))``, exactly ``steps_per_epoch`` steps)
at >= 85% of the JPEG decode ceiling with under 4 GiB.

Each phase runs in its own process, so that one's imports and memory do not count against another:

- convert: ``python -m celeba_gender.cli.convert`` into a fresh folder. Wall time of the whole command
  (interpreter start and imports included) and the converter's own time (from its summary); memory of the
  process tree (the converter and its worker processes) sampled every 0.1 s from /proc: the sum of RSS (counts
  pages the forked workers share with the parent once per process, so an upper bound) and the sum of PSS
  (shared pages divided among their sharers: what the tree really occupies).
- pipeline: the pass, timed from the first batch (the first, which includes building the pipeline and the
  shuffle buffer's first fill, is reported apart); peak RSS of the process (VmHWM).
- ceiling: ``tf.io.decode_jpeg`` alone, in graph mode (one ``tf.while_loop`` in a ``tf.function``), on one
  thread (inter- and intra-op pools of 1), over the same JPEG bytes held in memory, times the cores.

The synthetic folder (benchmarks/_data/, git-ignored) was just written, so its files are in the page cache:
the conversion reads from memory, as benchmarks/convert.py's timed runs do. The development machine's two cores
are shared with other work, so the load average is recorded with each phase, and the conversion's CPU seconds
(which other work moves far less than wall time). Prints a table and writes benchmarks/results/full_size.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import machine  # noqa: E402

GIB = 2**30


# --- memory of a process tree ------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the summed RSS and PSS of a process and its descendants in a thread; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids) * 1024
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) * 1024
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


# --- phases ------------------------------------------------------------------------------------------------

def phase_convert(celeba_dir: str, out_dir: str, workers: int) -> dict:
    """Converts with the defaults into a fresh ``out_dir`` in a child process; time and tree memory."""
    shutil.rmtree(out_dir, ignore_errors=True)  # else the converter keeps the shards and has nothing to do
    cpu_before, load_before = _children_cpu(), os.getloadavg()[0]
    cmd = [sys.executable, "-m", "celeba_gender.cli.convert", f"--celeba_dir={celeba_dir}", f"--out_dir={out_dir}",
           "--progress=false", *([f"--workers={workers}"] if workers else [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    with TreeMemory(proc.pid) as memory:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before  # the converter and its workers (each reaped by its parent)
    if proc.returncode:
        raise SystemExit(f"conversion failed ({proc.returncode}):\n{stderr[-3000:]}")
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    images = manifest["source"]["scanned"]
    # The converter's own time (after imports and start-up) is in its summary, not in manifest.json.
    seconds = float(re.search(r"images scanned in ([0-9.]+) s", stdout).group(1))
    return {"images": images, "written": sum(s["count"] for s in manifest["splits"].values()),
            "train_images": manifest["splits"]["train"]["count"], "dropped": manifest["dropped_counts"],
            "shards": sum(len(s["shards"]) for s in manifest["splits"].values()),
            "bytes": sum(s["bytes"] for s in manifest["splits"].values()),
            "wall_s": round(wall, 2), "images_per_s_wall": round(images / wall),
            "converter_s": seconds, "images_per_s_converter": round(images / seconds),
            "peak_tree_rss_bytes": memory.peak_rss, "peak_tree_pss_bytes": memory.peak_pss,
            "peak_processes": memory.peak_processes, "cpu_s": round(cpu, 1),
            "images_per_cpu_s": round(images / cpu), "load_before": load_before, "load_after": os.getloadavg()[0],
            "summary": stdout.strip()}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(phase: str, *args: str) -> dict:
    """Runs ``phase`` of this script in a fresh interpreter; returns the JSON it prints last."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--phase={phase}", *args],
                          capture_output=True, text=True, env=_env())
    if done.returncode:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_rss_self() -> int:
    return _kib("/proc/self/status", "VmHWM:") * 1024


def run_pipeline(out_dir: str, batch: int) -> dict:
    """One uncached pass over the training split, exactly steps_per_epoch batches (in this process)."""
    from celeba_gender.inputs import config as input_config, pipeline

    info = pipeline.split_info(out_dir, "train")
    steps = pipeline.steps_per_epoch(info, batch)
    start = time.perf_counter()
    it = iter(pipeline.train_dataset(input_config.DataConfig(out_dir, batch=batch, cache="none")))
    next(it)
    first, cpu_first = time.perf_counter(), time.process_time()
    for _ in range(steps - 1):
        next(it)
    end, cpu_end = time.perf_counter(), time.process_time()
    return {"train_images": info.count, "batch": batch, "steps": steps, "first_batch_s": round(first - start, 2),
            "pass_s": round(end - start, 2), "images_per_s": round((steps - 1) * batch / (end - first)),
            "images_per_s_with_first": round(steps * batch / (end - start)), "peak_rss_bytes": _peak_rss_self(),
            "cores_used": round((cpu_end - cpu_first) / (end - first), 2), "load_after": os.getloadavg()[0]}


def run_ceiling(image_dir: str, n: int, repeats: int) -> dict:
    """machine.decode_ceiling over the first ``n`` files' bytes, with the load average after it."""
    blobs = []
    for name in sorted(os.listdir(image_dir))[:n]:
        with open(os.path.join(image_dir, name), "rb") as f:
            blobs.append(f.read())
    return {**machine.decode_ceiling(blobs, repeats), "load_after": os.getloadavg()[0]}


# --- main --------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=202599)
    parser.add_argument("--data_dir", default=None, help="synthetic folder (default benchmarks/_data/synthetic_N)")
    parser.add_argument("--out_dir", default=None, help="shards (default benchmarks/_data/full_size_shards_N)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic CelebA")
    parser.add_argument("--workers", type=int, default=0, help="converter workers; 0 = its default (one per CPU)")
    parser.add_argument("--ceiling_images", type=int, default=8000)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "full_size.json"))
    parser.add_argument("--phase", default="all", choices=("all", "pipeline", "ceiling"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    data_dir = args.data_dir or os.path.join(HERE, "_data", f"synthetic_{args.num_images}")
    out_dir = args.out_dir or os.path.join(HERE, "_data", f"full_size_shards_{args.num_images}")
    if args.phase == "pipeline":
        print(json.dumps(run_pipeline(out_dir, args.batch)))
        return
    if args.phase == "ceiling":
        print(json.dumps(run_ceiling(os.path.join(data_dir, "img_align_celeba"), args.ceiling_images, 3)))
        return

    sys.path.insert(0, os.path.join(ROOT, "src"))
    from celeba_gender.synthetic import generate

    t0 = time.perf_counter()
    generate.ensure(data_dir, args.num_images, seed=args.seed, workers=2)
    made = time.perf_counter() - t0
    print(f"synthetic CelebA of {args.num_images:,} images ready in {data_dir} ({made:.1f} s; 0 when it existed)")
    conv = phase_convert(data_dir, out_dir, args.workers)
    print(conv["summary"])
    pipe = _child("pipeline", f"--out_dir={out_dir}", f"--batch={args.batch}")
    ceil = _child("ceiling", f"--data_dir={data_dir}", f"--ceiling_images={args.ceiling_images}")
    info = machine.describe(("tensorflow", "numpy", "pillow", "pandas"))
    of_ceiling = pipe["images_per_s"] / ceil["ceiling_per_s"]

    rows = [
        ("convert, images/s (whole command)", f"{conv['images_per_s_wall']:,}", ">= 3,000",
         conv["images_per_s_wall"] >= 3000),
        ("convert, images/s (converter's own time)", f"{conv['images_per_s_converter']:,}", "", None),
        ("convert, peak memory, tree RSS sum", f"{conv['peak_tree_rss_bytes'] / GIB:.2f} GiB", "< 2 GiB",
         conv["peak_tree_rss_bytes"] < 2 * GIB),
        ("convert, peak memory, tree PSS sum", f"{conv['peak_tree_pss_bytes'] / GIB:.2f} GiB", "< 2 GiB",
         conv["peak_tree_pss_bytes"] < 2 * GIB),
        ("uncached training pass, images/s", f"{pipe['images_per_s']:,}", "", None),
        ("decode ceiling (1 thread x cores), images/s", f"{ceil['ceiling_per_s']:,}", "", None),
        ("pass / ceiling", f"{of_ceiling:.0%}", ">= 85%", of_ceiling >= 0.85),
        ("pass, peak memory (RSS high-water mark)", f"{pipe['peak_rss_bytes'] / GIB:.2f} GiB", "< 4 GiB",
         pipe["peak_rss_bytes"] < 4 * GIB),
    ]
    print(f"\nmachine: {machine.one_line(info)}")
    print(f"convert: {conv['images']:,} images in {conv['wall_s']:.1f} s (converter {conv['converter_s']:.1f} s), "
          f"{conv['written']:,} written in {conv['shards']} shards ({conv['bytes'] / 2**20:,.0f} MB), "
          f"up to {conv['peak_processes']} processes, {conv['cpu_s']:.1f} CPU seconds ({conv['images_per_cpu_s']:,} "
          f"images per CPU second); load average {conv['load_before']:.1f} before, {conv['load_after']:.1f} after")
    print(f"pass: {pipe['steps']} steps of {pipe['batch']} over {pipe['train_images']:,} training images in "
          f"{pipe['pass_s']:.1f} s (first batch {pipe['first_batch_s']:.1f} s; {pipe['images_per_s_with_first']:,} "
          f"images/s counting it); {pipe['cores_used']} cores busy")
    print(f"ceiling: {ceil['single_thread_per_s']:,} images/s on one thread x {ceil['cores']} cores "
          f"({ceil['images']:,} files; cores busy per run {ceil['cores_used']})")
    print(f"\n{'measure':<46}{'value':>12}  {'target':<10}met")
    for name, value, target, met in rows:
        print(f"{name:<46}{value:>12}  {target:<10}{'' if met is None else 'yes' if met else 'NO'}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "full_size", "command": " ".join(sys.argv), "machine": info,
                   "time": time.strftime("%Y-%m-%d %H:%M:%S"), "synthetic_seconds": round(made, 1),
                   "convert": conv, "pipeline": pipe, "ceiling": ceil, "pass_of_ceiling": round(of_ceiling, 3)},
                  f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
