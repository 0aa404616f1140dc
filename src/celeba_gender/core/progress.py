"""Progress of a long counted job (the converter's scan and write): a bar on a terminal, plain lines elsewhere.

A cluster's log file or a pipe would otherwise collect every redraw of a tqdm bar as carriage-return-separated
junk; there it gets a line at a tenth of the job at most every ``interval`` seconds (10), and one at the end,
with the rate so far.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class PlainProgress:
    """``update(n)`` like tqdm's; prints ``<desc>: <done>/<total> <unit> (<pct>), <rate> <unit>/s`` to stderr
    when it passes a tenth of ``total`` at least ``interval`` seconds after the last line, and at ``close()``."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = 10.0):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.done = 0
        self._next_tenth = 1
        self._start = self._last = time.perf_counter()
        self._closed = False

    def _line(self) -> None:
        seconds = max(time.perf_counter() - self._start, 1e-9)
        pct = self.done / self.total if self.total else 1.0
        self._last = time.perf_counter()
        print(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0%}), "
              f"{self.done / seconds:,.0f} {self.unit}/s", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.total and self.done * 10 >= self._next_tenth * self.total and self.done < self.total:
            self._next_tenth = self.done * 10 // self.total + 1
            if time.perf_counter() - self._last >= self.interval:
                self._line()

    def close(self) -> None:
        if not self._closed and self.total:
            self._line()
        self._closed = True


class _Off:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def counter(total: int, desc: str, unit: str = "images", enabled: bool = True):
    """A progress reporter for ``total`` items: a tqdm bar when stderr is a terminal, PlainProgress otherwise,
    nothing when ``enabled`` is false."""
    if not enabled:
        return _Off()
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="img", smoothing=0.05)
    return PlainProgress(total, desc, unit)
