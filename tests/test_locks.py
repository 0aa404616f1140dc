"""locks.DirectoryLock: one holder at a time, stale locks taken over only when certain, cooperating owners."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from celeba_gender.core import locks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Takes the lock of argv[1] (owner key argv[2] if given), says so, and sleeps until killed.
_HOLDER = textwrap.dedent("""
    import sys, time
    from celeba_gender.core import locks
    lock = locks.DirectoryLock(sys.argv[1], purpose="testing", owner_key=(sys.argv[2] if len(sys.argv) > 2 else None))
    lock.acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def start_holder(directory, *key: str) -> subprocess.Popen:
    """A process holding the lock of ``directory`` (read its "held" line before using it)."""
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory), *key], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_a_held_lock_refuses_a_second_process_naming_the_holder(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(locks.LockHeldError) as e:
            locks.DirectoryLock(str(tmp_path), fix="wait for it or choose another folder").acquire()
        message = str(e.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and "is testing there" in message
        assert "Wait for it or choose another folder." in message and "\n" not in message
    finally:
        stop(holder)


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over_with_a_note(tmp_path, capsys):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert os.path.exists(tmp_path / locks.LOCK_NAME)  # kill -9 leaves it behind
    with locks.DirectoryLock(str(tmp_path)) as lock:
        assert lock.owned and json.load(open(tmp_path / locks.LOCK_NAME))["pid"] == os.getpid()
    note = capsys.readouterr().err
    assert note.startswith(f"note: took over the lock {tmp_path / locks.LOCK_NAME} left by pid {holder.pid}")
    assert note.count("\n") == 1
    assert not os.path.exists(tmp_path / locks.LOCK_NAME)  # released


def _write_lock(directory, **fields) -> None:
    """A lock record as this process would write it (this host, boot and PID namespace), with ``fields`` changed."""
    info = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": locks.process_start(os.getpid()),
            "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(),
            "pid_ns": os.readlink("/proc/self/ns/pid"), "time": 0, "command": "python old.py", "owner_key": None,
            **fields}
    (directory / locks.LOCK_NAME).write_text(json.dumps({k: v for k, v in info.items() if v is not ...}))


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path, capsys):
    # The recorded pid is alive (this very process) but started at another time: a different process.
    _write_lock(tmp_path, process_start=locks.process_start(os.getpid()) - 1)
    with locks.DirectoryLock(str(tmp_path)) as lock:
        assert lock.owned
    assert "took over the lock" in capsys.readouterr().err


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path, host="other-machine", pid=1)
    with pytest.raises(locks.LockHeldError, match=r"on host other-machine .*on another machine.*remove "
                                                  rf"{tmp_path / locks.LOCK_NAME} by hand"):
        locks.DirectoryLock(str(tmp_path)).acquire()
    assert json.load(open(tmp_path / locks.LOCK_NAME))["host"] == "other-machine"  # left alone


def test_a_dead_holder_of_this_pid_namespace_is_taken_over(tmp_path, capsys):
    _write_lock(tmp_path, pid=_dead_pid())
    with locks.DirectoryLock(str(tmp_path)) as lock:
        assert lock.owned
    assert "took over the lock" in capsys.readouterr().err


@pytest.mark.parametrize("record", [
    {"pid_ns": "pid:[4026599999]"},  # another container on this host: its pid means nothing here
    {"pid_ns": ...},  # a lock that does not say its namespace (an older version wrote it)
    {"boot_id": "another-boot"},  # another boot, or another machine with this host name (a rescheduled pod)
])
def test_a_lock_whose_holder_cannot_be_proven_dead_is_never_taken_over(tmp_path, record):
    _write_lock(tmp_path, pid=_dead_pid(), **record)
    with pytest.raises(locks.LockHeldError) as e:
        locks.DirectoryLock(str(tmp_path), purpose="training").acquire()
    message = str(e.value)
    assert "\n" not in message and f"on host {socket.gethostname()}" in message
    assert "cannot tell whether it still runs" in message
    assert f"if that process has ended, remove {tmp_path / locks.LOCK_NAME} by hand" in message
    assert json.load(open(tmp_path / locks.LOCK_NAME))["command"] == "python old.py"  # left alone


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-pf", "--kill-child", "--mount-proc", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="unshare -pf --mount-proc is not permitted here (it needs root or "
                                                 "user namespaces): the fabricated records above test the rule")
def test_a_live_holder_in_another_pid_namespace_keeps_its_lock(tmp_path):
    # The holder is pid 1 of its own PID namespace (a container's main process); pid 1 here is another process.
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    holder = subprocess.Popen(["unshare", "-pf", "--kill-child", "--mount-proc", sys.executable, "-c", _HOLDER,
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        recorded = json.load(open(tmp_path / locks.LOCK_NAME))
        assert recorded["pid"] == 1
        with pytest.raises(locks.LockHeldError, match="another PID namespace"):
            locks.DirectoryLock(str(tmp_path)).acquire()
        assert json.load(open(tmp_path / locks.LOCK_NAME)) == recorded  # still the holder's
        assert recorded["pid_ns"] != os.readlink("/proc/self/ns/pid")
    finally:
        stop(holder)  # --kill-child: the holder dies with unshare


def test_processes_with_the_same_owner_key_cooperate(tmp_path):
    holder = start_holder(tmp_path, "job-7")
    try:
        with locks.DirectoryLock(str(tmp_path), owner_key="job-7") as lock:
            assert not lock.owned  # let in, without taking the holder's lock
        assert json.load(open(tmp_path / locks.LOCK_NAME))["pid"] == holder.pid  # and it was not removed
        with pytest.raises(locks.LockHeldError):
            locks.DirectoryLock(str(tmp_path), owner_key="job-8").acquire()
        with pytest.raises(locks.LockHeldError):
            locks.DirectoryLock(str(tmp_path)).acquire()
    finally:
        stop(holder)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_the_block_fails_and_a_created_folder_removed(tmp_path, error):
    directory = tmp_path / "new"
    with pytest.raises(error):
        with locks.DirectoryLock(str(directory)):
            assert os.path.exists(directory / locks.LOCK_NAME)
            raise error()
    assert not os.path.exists(directory)  # made for the lock only, and left empty
    kept = tmp_path / "kept"
    with locks.DirectoryLock(str(kept)):
        (kept / "result.txt").write_text("work")
    assert os.listdir(kept) == ["result.txt"]


def test_urls_are_not_locked():
    with locks.hold("gs://bucket/x") as lock:
        assert lock is None


def test_without_fcntl_and_proc_locks_are_taken_and_refused_and_a_stale_one_is_left_to_the_user(tmp_path):
    """As on Windows (no fcntl: the module imported it at the top, so the converter and training did not even
    import there) and macOS (no /proc): a lock is taken and refused alike; a dead holder's is never taken over."""
    code = textwrap.dedent("""
        import json, os, sys
        sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
        from celeba_gender.core import locks
        locks._boot_id = locks._pid_namespace = lambda: None  # no /proc
        folder = sys.argv[1]
        with locks.DirectoryLock(folder, purpose="converting"):
            try:
                locks.DirectoryLock(folder, purpose="converting").acquire()
            except locks.LockHeldError as e:
                print("refused:", e)
        assert not os.path.exists(os.path.join(folder, locks.LOCK_NAME))
        with open(os.path.join(folder, locks.LOCK_NAME), "w") as f:  # left by a process that is gone
            json.dump({"host": "here", "pid": 2 ** 22 + 1, "command": "make_tfrecords", "purpose": "converting"}, f)
        try:
            locks.DirectoryLock(folder).acquire()
        except locks.LockHeldError as e:
            print("stale:", e)
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    refused, stale = done.stdout.splitlines()
    assert refused.startswith("refused: ") and "is in use" in refused
    assert stale.startswith("stale: ") and "remove" in stale and locks.LOCK_NAME in stale
