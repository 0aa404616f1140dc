"""Describes the machine a benchmark ran on, for its table and its JSON."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time


def describe(packages: tuple[str, ...] = ("numpy", "pillow")) -> dict:
    """CPU model, usable cores, memory, Python and package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for p in packages:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    return {"cpu": cpu, "cores": cores, "memory_gib": mem_gib, "python": platform.python_version(),
            "packages": versions}


def one_line(machine: dict) -> str:
    """``2 cores of <cpu>, 23.4 GiB, Python 3.11.7``."""
    return f"{machine['cores']} cores of {machine['cpu']}, {machine['memory_gib']} GiB, Python {machine['python']}"


def decode_ceiling(blobs: list[bytes], repeats: int = 3) -> dict:
    """The JPEG-decode ceiling: ``tf.io.decode_jpeg`` alone over ``blobs`` (held in memory), in graph mode (one
    ``tf.while_loop`` in a ``tf.function``) on one thread, median of ``repeats``, times the usable cores."""
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started: the loop below runs its decodes one at a time anyway
        pass
    data = tf.constant(blobs)

    @tf.function
    def decode_all(encoded):
        def body(i, total):
            image = tf.io.decode_jpeg(encoded[i], channels=3)
            return i + 1, total + tf.shape(image)[0]  # uses every decode, so none is pruned
        return tf.while_loop(lambda i, _: i < tf.shape(encoded)[0], body, (0, 0), parallel_iterations=1)[1]

    decode_all(data[:8])  # trace
    rates, used = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        decode_all(data).numpy()
        rates.append(len(blobs) / (time.perf_counter() - start))
        used.append((time.process_time() - cpu) / (time.perf_counter() - start))  # ~1.0: one core busy
    rates.sort()
    cores = len(os.sched_getaffinity(0))
    return {"images": len(blobs), "single_thread_per_s": round(rates[len(rates) // 2]), "cores": cores,
            "ceiling_per_s": round(rates[len(rates) // 2] * cores), "all_single_thread": [round(r) for r in rates],
            "cores_used": [round(u, 2) for u in used]}


def benchmark_shards(data_root: str, num_images: int = 20000) -> tuple[str, str]:
    """(synthetic CelebA folder, shard folder) of ``num_images`` images under ``data_root`` (benchmarks/_data
    by default), made the first time (the faces are drawn once; the converter skips shards already written)."""
    from celeba_gender.convert import converter
    from celeba_gender.convert.config import ConvertConfig
    from celeba_gender.synthetic import generate

    celeba_dir = os.path.join(data_root, f"synthetic_{num_images}")
    shard_dir = os.path.join(data_root, f"shards_{num_images}")
    generate.ensure(celeba_dir, num_images, seed=42, workers=os.cpu_count() or 1)
    converter.convert(ConvertConfig(celeba_dir=celeba_dir, out_dir=shard_dir, progress=False, overwrite=True))
    return celeba_dir, shard_dir
