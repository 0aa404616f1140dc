"""Try multi-worker training on one machine: N worker processes on 127.0.0.1, each with its TF_CONFIG.

    python -m celeba_gender.cli.launch_local --workers=2 -- train.py --arch=tiny --strategy=multi_worker ...

Worker i gets ``{"cluster": {"worker": [127.0.0.1:<free port>, ...]}, "task": {"type": "worker",
"index": i}}``; worker 0 is the chief. Each worker's output is printed with a ``[worker i]`` prefix. The
launcher exits with the first non-zero exit status; SIGTERM and Ctrl-C are passed on to every worker. On real
clusters the job scheduler (Kubernetes TFJob, Vertex AI, Slurm) sets TF_CONFIG instead; see README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading

from celeba_gender.cli import tf_startup


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(n: int, ports: list[int] | None = None) -> list[dict]:
    """The TF_CONFIG of each of ``n`` local workers."""
    ports = ports or free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(n)]


def _pump(stream, prefix: str, seen: set, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        key = tf_startup.log_message(line)
        if key is not None:  # TensorFlow's start-up lines: once for the job, not once per worker
            with lock:
                if key in seen:
                    continue
                seen.add(key)
        sys.stdout.write(f"{prefix} {line}")
        sys.stdout.flush()


def launch(command: list[str], workers: int, env: dict | None = None) -> int:
    """Runs ``command`` (a script and its flags, run with this Python) once per worker; returns the exit code."""
    if command and command[0].endswith(".py"):
        command = [sys.executable, *command]
    procs, pumps, seen, lock = [], [], set(), threading.Lock()
    for i, config in enumerate(tf_configs(workers)):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": json.dumps(config)}
        proc = subprocess.Popen(command, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}]", seen, lock), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    def forward(signum, frame):  # a cluster's SIGTERM (or Ctrl-C) goes to every worker, as a job scheduler does
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for pump in pumps:
        pump.join(timeout=5)
    return next((c for c in codes if c), 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start (>= 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the script and its flags")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.workers < 1:
        parser.error("give --workers=N (>= 1), then -- and the command, e.g. -- train.py --arch=tiny ...")
    sys.exit(launch(command, args.workers))


if __name__ == "__main__":
    main()
