"""TensorFlow's start-up lines, printed once.

Importing TensorFlow 2.21 prints its C++ start-up lines (oneDNN, CUDA drivers, CPU features) twice: two of its
shared libraries each log them before absl's logging is initialised, so neither TF_CPP_MIN_LOG_LEVEL nor
absl's verbosity reaches them. The commands import TensorFlow inside :func:`quiet_import`, which catches what
is written to the stderr file descriptor meanwhile and writes it back with repeated log lines left out.

Warnings logged later by TensorFlow's runtime (e.g. a corrupt JPEG's "local_rendezvous" lines around
predict.py's one-line report) are hidden by defaulting TF_CPP_MIN_LOG_LEVEL to 2 (errors only); set it to 0
to see everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# glog's prefix: severity, date, time, thread id; what follows is the message.
_GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ (?P<message>.*)$")


def set_log_level() -> None:
    """TensorFlow's C++ logging: errors only, unless the user chose (call before importing TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def log_message(line: str) -> str | None:
    """What identifies a TensorFlow log line whatever its time and thread (None for any other line): a glog
    line's message; absl's "before InitializeLog" notice and the CPU-feature line's continuation as they are."""
    match = _GLOG.match(line.rstrip("\n"))
    if match:
        return match.group("message")
    if line.startswith(("WARNING: All log messages before", "To enable the following instructions")):
        return line.rstrip("\n")
    return None


def without_repeats(text: str) -> str:
    """``text`` without the log lines (:func:`log_message`) already seen earlier in it; anything else (a
    traceback, say) is kept whole."""
    seen, out = set(), []
    for line in text.splitlines(keepends=True):
        key = log_message(line)
        if key is None or key not in seen:
            seen.add(key)
            out.append(line)
    return "".join(out)


def find_devices() -> None:
    """Lets TensorFlow look for its devices now, inside :func:`quiet_import`, so that what it logs about them
    (on a machine without a GPU: a failed cuInit) is printed with the other start-up lines. Logical devices
    can still be configured afterwards (--num_cpu_devices)."""
    import tensorflow as tf

    tf.config.list_physical_devices()


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Collects what the block writes to file descriptor 2 and writes it back without repeated log lines."""
    set_log_level()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor (an embedded interpreter): nothing to tidy
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            if text:
                sys.stderr.write(without_repeats(text))
                sys.stderr.flush()
