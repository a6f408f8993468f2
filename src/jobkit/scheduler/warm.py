"""A warm worker: one process that runs many local jobs, one at a time.

Forking a worker per job costs a fork, a new store connection and the first
touches of every page the job uses; Ray's worker pool shows what skipping
that buys for short jobs.  A warm worker is forked by the fork server (so it
never inherits the agent's SQLite connection), opens its own patient store
once, and then loops::

    agent ── socket (one per worker, passed by the fork server) ──► warm worker
      │  {"env": {...}, "cwd": ...}              first line: what it runs under
      │  {"job": ID, "cwd": ..., "stdout": P, "stderr": P, "env": {...extra}}
      │                                             │ env and cwd put back, stdio → the
      │                                             │ job's logs, signals at their defaults
      │                                             │ worker.run_job (records RUNNING's
      │                                             │ pid already set by the claim, the
      │                                             │ outcome and end in one transaction)
      │  ◄── {"done": ID, "code": N, "retire": bool}
      │                                             │ retire: exit; else wait for the next
      ▼
    EOF (the agent ended): exit.  A job in progress finishes first and records
    its own end, as a forked worker's does.

Isolation between jobs, and what it cannot give:

* Put back before every job: ``os.environ`` (the worker's environment plus
  the job's variables), the working directory, ``sys.path``, ``sys.argv``,
  stdio (the job's own log files) and the handlers of the signals a job may
  catch.
* Checked after every job: a Python thread still running or a child process
  still alive means the job left something behind that could act during
  the next one; the worker reports ``retire`` and exits, and the agent kills
  its process group.  (Open file descriptors are not counted: libraries open
  some at import and keep them, and a descriptor does nothing by itself.)
* Not checked: module-level state a job changed (a global, a monkey patch,
  an imported module's settings), as in Ray's and ProcessPoolExecutor's
  workers.  Jobs that must not share a process with earlier ones ask for
  ``isolate=True`` (or ``[local] start_method = "fork"``): a fresh fork each.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["serve_jobs"]

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def serve_jobs(conn: socket.socket, store_url: str, key: bytes) -> int:
    """Run jobs sent on ``conn`` until it closes or a job leaves state behind."""
    from jobkit.errors import StoreUnavailableError
    from jobkit.stores.patient import open_patient_store
    from jobkit.worker import _store_unreachable, run_job

    reader = conn.makefile("rb")
    first = reader.readline()
    if not first:
        return 0
    setup = json.loads(first)
    base_env = {str(k): str(v) for k, v in setup["env"].items()}
    home = str(setup.get("cwd") or os.getcwd())
    _replace_environ(base_env)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    store = open_patient_store(store_url)
    path = list(sys.path)
    for line in reader:
        request = json.loads(line)
        job_id = str(request["job"])
        _replace_environ({**base_env, **request.get("env", {})})
        _enter(str(request.get("cwd") or home))
        sys.path[:] = path
        sys.argv[:] = ["jobkit-worker", job_id]
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        _to_logs(Path(request["stdout"]), Path(request["stderr"]))
        try:
            code = run_job(store, job_id, key)
        except StoreUnavailableError as exc:
            code = _store_unreachable(job_id, exc)
        left = _left_behind()
        if left:  # in the job's own log, where its owner looks
            print(f"jobkit worker {os.getpid()}: the job {left}; retiring", file=sys.stderr)
        _flush()
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        reply = {"done": job_id, "code": code, "retire": bool(left), "why": left}
        conn.sendall(json.dumps(reply).encode() + b"\n")
        if left or code == _store_exit():
            return 0
    return 0


def _store_exit() -> int:
    from jobkit.stores.patient import EXIT_STORE_UNREACHABLE

    return EXIT_STORE_UNREACHABLE


def _replace_environ(wanted: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``wanted``, touching only what differs
    (each change is a ``putenv``; most jobs change nothing)."""
    current = os.environ
    for name in [n for n in current if n not in wanted]:
        del current[name]
    for name, value in wanted.items():
        if current.get(name) != value:
            current[name] = value


def _enter(cwd: str) -> None:
    with contextlib.suppress(OSError):
        if os.getcwd() == cwd:
            return
    with contextlib.suppress(OSError):
        os.chdir(cwd)


def _to_logs(out: Path, err: Path) -> None:
    """Point fds 1 and 2, and fresh ``sys.stdout``/``sys.stderr``, at the job's logs."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _children() -> list[int]:
    """This process's live children (zombies reaped first)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as text:
                found += [int(pid) for pid in text.read().split()]
    return found


def _left_behind() -> str:
    """What the last job left that could act during the next one ('' if nothing)."""
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        return f"left {len(threads)} thread(s) running ({', '.join(threads[:3])})"
    children = _children()
    if children:
        return f"left {len(children)} child process(es) running (pids {children[:5]})"
    return ""


def main_from_forkserver(fd: int, store_url: str, key: bytes) -> Any:
    """Entry from the fork server's child: own session, then :func:`serve_jobs`."""
    os.setsid()
    for sig in (*_RESET_SIGNALS, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    conn = socket.socket(fileno=fd)
    return serve_jobs(conn, store_url, key)
