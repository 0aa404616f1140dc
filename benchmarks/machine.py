"""Describes the machine a benchmark ran on, for its table and its JSON."""

from __future__ import annotations

import importlib.metadata
import os
import platform


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
