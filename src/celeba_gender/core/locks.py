"""One process at a time in a directory: a lock file that says who holds it.

    with locks.DirectoryLock(out_dir, purpose="converting", fix="wait for it to finish or choose another --out_dir"):
        ...  # only this process (or its cooperating peers) works in out_dir

The lock is a JSON file (``.lock`` in the directory: host, boot id, PID namespace, pid, start time, command line,
purpose, owner key), created atomically with ``O_CREAT | O_EXCL``, so of two processes only one can create it.
Another process finds it held and stops at once with a :class:`LockHeldError` naming the holder and the fix.
A lock whose holder is gone is taken over, with a one-line note on stderr, but only when that is proven: the
holder ran on this host, in this boot and in this PID namespace (``/proc/self/ns/pid``), and its pid no longer
exists or now belongs to a different process (its start time in ``/proc/<pid>/stat`` differs). A pid means
nothing outside its namespace: containers on one host share its host name and boot id, and a Kubernetes pod
rescheduled to another node keeps its host name. So a lock from another host, another boot, another PID
namespace, or one that does not record its namespace, is never taken over automatically: that process may
still be running; the message says how to remove the file by hand.

Processes that share an ``owner_key`` (e.g. the workers of one multi-worker training job) cooperate: a process
whose key equals the holder's is let in without taking the lock, and only the creator removes it.

The lock is released when the ``with`` block ends, whatever ends it (an exception, Ctrl-C). ``kill -9``
leaves it behind as a stale lock, which the next process in the same PID namespace of this host takes over.
Local paths only: a URL (``gs://...``) cannot be locked this way, and :func:`hold` lets it through unlocked.
Where there is no ``/proc`` (macOS, Windows) the lock is taken and refused the same way, but a stale one is
never taken over: its holder cannot be proven gone, so the message says to remove the file by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from celeba_gender.core.errors import UserError

try:  # POSIX; used only to take over a stale lock, which needs Linux's /proc to prove its holder gone
    import fcntl
except ImportError:  # Windows: locks are taken and refused alike; a stale one is removed by hand, as on macOS
    fcntl = None

LOCK_NAME = ".lock"
# A lock file is written right after it is created: an empty one this young is being written, not stale.
_WRITE_GRACE_S = 2.0


class LockHeldError(UserError):
    """The directory is held by another process; the message names it and the fix."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """This process's PID namespace, e.g. ``pid:[4026531836]``; None where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def describe(info: dict) -> str:
    """``pid 1234 on host h since 2026-11-30 16:20:01 (command: python make_tfrecords.py ...)``."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("time", 0)))
    return (f"pid {info.get('pid')} on host {info.get('host')} since {since} "
            f"(command: {info.get('command') or 'unknown'})")


class DirectoryLock:
    """The lock of one local directory (created if missing). Use it as a context manager, or call
    :meth:`acquire` and :meth:`release`.

    ``purpose`` ("converting") and ``fix`` ("wait for it ... or choose another --out_dir") make the refusal's
    message; ``owner_key`` lets cooperating processes in (module docstring).
    """

    def __init__(self, directory: str, purpose: str = "using it", fix: str = "wait for it to finish",
                 owner_key: str | None = None, name: str = LOCK_NAME):
        self.directory = directory
        self.path = os.path.join(directory, name)
        self.purpose, self.fix, self.owner_key = purpose, fix, owner_key
        self.owned = False  # True when this process created the lock file (and so removes it)
        self._created_dir = False
        self._info: dict = {}

    # --- taking it ---------------------------------------------------------------------------------------

    def acquire(self) -> DirectoryLock:
        """Takes the lock, joins a cooperating holder, takes over a stale one, or raises LockHeldError."""
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, exist_ok=True)
            self._created_dir = True
        for _ in range(20):  # each round either returns, raises, or saw the lock change under it
            if self._create():
                return self
            holder = self._read()
            if holder is None:  # gone since, or being written right now
                time.sleep(0.05)
                continue
            if self._is_stale(holder):
                if self._take_over(holder):
                    print(f"note: took over the lock {self.path} left by {describe(holder)}, which is no longer "
                          "running.", file=sys.stderr)
                    return self
                continue
            if self.owner_key is not None and holder.get("owner_key") == self.owner_key:
                return self  # a cooperating process of the same job holds it
            raise LockHeldError(self._held_message(holder))
        raise LockHeldError(f"{self.path} keeps changing: another process is taking and releasing it. Try again.")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        self._info = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": process_start(os.getpid()),
                      "boot_id": _boot_id(), "pid_ns": _pid_namespace(), "time": time.time(),
                      "command": " ".join(sys.argv), "purpose": self.purpose, "owner_key": self.owner_key}
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._info, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.remove(self.path)
            raise
        self.owned = True
        return True

    def _read(self) -> dict | None:
        """The holder's record; None when the file vanished or is still being written. An unreadable file
        that is older than a write takes is reported as held by an unknown process."""
        try:
            with open(self.path) as f:
                text = f.read()
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
            if isinstance(info, dict):
                return info
        except ValueError:
            pass
        return None if age < _WRITE_GRACE_S else {"host": "unknown", "pid": None, "command": "unreadable lock file"}

    @staticmethod
    def _can_see(holder: dict) -> bool:
        """True when the holder's pid means a process of this kernel's boot and PID namespace, as ours do."""
        here = (socket.gethostname(), _boot_id(), _pid_namespace())
        return None not in here and (holder.get("host"), holder.get("boot_id"), holder.get("pid_ns")) == here

    def _is_stale(self, holder: dict) -> bool:
        """True only when the holder certainly ended: it ran where this process can see its pid (same host,
        boot and PID namespace), and that pid is gone or is another process."""
        if not self._can_see(holder) or not isinstance(holder.get("pid"), int):
            return False
        pid = holder["pid"]
        if not _pid_exists(pid):
            return True
        start = process_start(pid)
        return start is not None and holder.get("process_start") is not None and start != holder["process_start"]

    def _take_over(self, stale: dict) -> bool:
        """Replaces a stale lock with ours. Processes taking over on this host are serialised by an flock on
        the directory, so two of them cannot both remove the stale file and each create a lock."""
        if fcntl is None:  # not reached: without /proc no holder is proven gone (_is_stale)
            return False
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._read() != stale:  # someone else took it over first
                return False
            os.remove(self.path)
            return self._create()
        finally:
            os.close(fd)  # releases the flock

    def _held_message(self, holder: dict) -> str:
        who, purpose = describe(holder), holder.get("purpose") or self.purpose
        fix = f"{self.fix[0].upper()}{self.fix[1:]}"
        if self._can_see(holder):
            return f"{self.directory} is in use: {who} is {purpose} there. {fix}."
        if holder.get("host") != socket.gethostname():
            where = "on another machine"
        elif holder.get("boot_id") != _boot_id():
            where = "in another boot of this host or on another machine of the same name"
        elif not holder.get("pid_ns"):
            where = "and its lock does not record its PID namespace (an older version wrote it)"
        elif holder.get("pid_ns") != _pid_namespace():
            where = "in another PID namespace (another container) of this host"
        else:
            where = "and this process cannot read its own boot id or PID namespace"
        return (f"{self.directory} is in use: {who} is {purpose} there, {where}, so this process cannot tell "
                f"whether it still runs. {fix}; if that process has ended, remove {self.path} by hand.")

    # --- giving it back ----------------------------------------------------------------------------------

    def release(self) -> None:
        """Removes the lock file if this process created it and it is still ours; removes the directory if
        the lock created it and nothing else was put there."""
        if self.owned:
            self.owned = False
            try:
                with open(self.path) as f:
                    mine = json.load(f) == self._info
            except (OSError, ValueError):
                mine = False
            if mine:
                os.remove(self.path)
        if self._created_dir:
            self._created_dir = False
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)  # only succeeds when empty

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def hold(directory: str, purpose: str = "using it", fix: str = "wait for it to finish",
         owner_key: str | None = None) -> Iterator[DirectoryLock | None]:
    """:class:`DirectoryLock` for a local directory; for a URL (not lockable) the block runs unlocked."""
    if "://" in directory:
        yield None
        return
    with DirectoryLock(directory, purpose, fix, owner_key) as lock:
        yield lock
