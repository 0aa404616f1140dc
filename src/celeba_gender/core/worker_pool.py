"""Worker processes for the converter's file work (reading, hashing, decoding, writing shards)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group; only the parent decides what to do with it (it terminates
    # the pool), so a worker never dies half-way through a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def imap(fn: Callable[[T], R], items: Iterable[T], workers: int, ordered: bool = True) -> Iterator[R]:
    """Maps ``fn`` over ``items`` in ``workers`` processes (in this process when workers <= 1).

    Forking is fastest, but a process that has loaded TensorFlow must not fork (its thread pools do not
    survive it), so such processes, e.g. a test session, spawn fresh interpreters instead.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    pool = multiprocessing.get_context(method).Pool(workers, initializer=_ignore_sigint)
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, items)
        pool.close()
    finally:
        # Reached on success, on an error and on Ctrl-C: kill unfinished work, whose temporary files the
        # next run cleans up, rather than wait for it.
        pool.terminate()
        pool.join()
