"""A warm worker: one process that runs many local jobs, one at a time.

Forking a worker per job costs a fork, a new store connection and the first
touches of every page the job uses; Ray's worker pool shows what skipping
that buys for short jobs.  A warm worker is forked by the fork server (so it
never inherits the agent's SQLite connection), opens its own patient store
once, and then loops over messages framed by
:func:`~jobkit.scheduler.protocol.encode_frame` (a JSON header line, then
``size`` raw bytes)::

    agent ── socket (one per worker, passed by the fork server) ──► warm worker
      │  {"env": {...}, "cwd": ...}              first: what it runs under
      │  {"job": ID, "cwd", "stdout", "stderr", "env", "ack": [...]} + the claimed record
      │                                             │ env and cwd put back, stdio → the
      │                                             │ job's logs, signals at their defaults
      │                                             │ worker.run_job(record=..., hand_over=...)
      │  ◄── {"done": ID, "code": N, "retire", "took", "end": {...}} + a success's outcome
      │                                             │ kept until acknowledged
      │  {"ack": [ID, ...]}  (or inside the next job) the agent committed those ends
      ▼
    EOF (the agent ended): the worker records the ends the agent never
    acknowledged itself (outcome and SUCCEEDED, one transaction each), exits.

Why the agent records a success's end: it commits every end that arrived
in one loop turn together with the claims of the jobs that start next, one
transaction instead of one per job per process, and the workers never wait
for the store's write lock.  Nothing finished is lost to a crash: until the
agent acknowledges an end, the worker holds it and writes it itself if the
agent is gone; if the worker dies after sending, the agent has it.  Only both
dying together loses it, and then the job ends LOST (retried if allowed), as
a job whose worker dies while it runs.  Failures (an exception, retries)
are recorded by the worker, through :mod:`jobkit.reconcile`, as before.

Isolation between jobs, and what it cannot give:

* Put back before every job: ``os.environ`` (the worker's environment plus
  the job's variables), the working directory, ``sys.path``, ``sys.argv``,
  stdio (the job's own log files) and the handlers of the signals a job may
  catch.
* Checked after every job: a Python thread still running (not jobkit's
  usage sampler) or a child process still alive means the job left
  something behind that could act during the next one; the worker reports
  ``retire`` and exits, and the agent kills its process group.  (Open file
  descriptors are not counted: libraries open some at import and keep
  them, and a descriptor does nothing by itself.)
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
import time
from pathlib import Path
from typing import Any

__all__ = ["serve_jobs"]

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def serve_jobs(conn: socket.socket, store_url: str, key: bytes) -> int:
    """Run jobs sent on ``conn`` until it closes or a job leaves state behind."""
    from jobkit.stores.patient import open_patient_store

    stream = conn.makefile("rb")
    setup = _read_frame(stream)
    if setup is None:
        return 0
    base_env = {str(k): str(v) for k, v in setup[0]["env"].items()}
    home = str(setup[0].get("cwd") or os.getcwd())
    _replace_environ(base_env)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    store = open_patient_store(store_url)
    ends = _Ends(conn, store)
    path = list(sys.path)
    try:
        while (frame := _read_frame(stream)) is not None:
            header, body = frame
            ends.acknowledged(header.get("ack") or ())
            if "job" not in header:
                continue
            job_id = str(header["job"])
            _replace_environ({**base_env, **header.get("env", {})})
            _enter(str(header.get("cwd") or home))
            sys.path[:] = path
            sys.argv[:] = ["jobkit-worker", job_id]
            for sig in _RESET_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            _to_logs(Path(header["stdout"]), Path(header["stderr"]))
            began = time.monotonic()
            code, handed = _run(store, job_id, key, body, ends, ahead=bool(header.get("ahead")))
            took = time.monotonic() - began
            left = _left_behind()
            if left:  # in the job's own log, where its owner looks
                print(f"jobkit worker {os.getpid()}: the job {left}; retiring", file=sys.stderr)
            _flush()
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            reply = {"done": job_id, "code": code, "retire": bool(left), "why": left, "took": took}
            ends.send(reply, handed)
            if left or code == _store_exit():
                break
    finally:
        ends.record_unacknowledged()  # the agent is gone, or we are leaving it
    return 0


class _Ends:
    """Successes handed to the agent and not yet acknowledged (see the module doc)."""

    def __init__(self, conn: socket.socket, store: Any) -> None:
        self.conn = conn
        self.store = store
        self.held: dict[str, tuple[list[Any], dict[str, Any]]] = {}
        self.agent_gone = False

    def take(self, job_id: str, outcome: list[Any], end: dict[str, Any]) -> bool:
        if self.agent_gone or sum(memoryview(b).nbytes for b in outcome) > HAND_OVER_MAX:
            return False  # written by the worker: nobody to hand it to, or large (a file)
        self.held[job_id] = (outcome, end)
        return True

    def send(self, reply: dict[str, Any], handed: bool) -> None:
        """Tell the agent a job ended.  If the agent is gone, record what it
        was handed and go on: jobs it sent ahead are still to be read and run,
        and their ends the worker now records itself."""
        from jobkit.scheduler.protocol import encode_frame

        job_id = str(reply["done"])
        if handed and job_id in self.held:
            outcome, end = self.held[job_id]
            message = encode_frame({**reply, "end": end}, outcome)
        else:
            message = encode_frame(reply)
        if self.agent_gone:
            return
        try:
            self.conn.sendall(message)
        except OSError:
            self.agent_gone = True
            self.record_unacknowledged()

    def acknowledged(self, ids: Any) -> None:
        for job_id in ids:
            self.held.pop(str(job_id), None)

    def record_unacknowledged(self) -> None:
        """Write what the agent may not have committed: each end is a compare-
        and-set on RUNNING, so one the agent did commit changes nothing."""
        from jobkit.states import JobState
        from jobkit.stores.base import Change, outcome_key
        from jobkit.usage import split_end

        if not self.held:
            return
        changes = []
        for job_id, (outcome, end) in self.held.items():
            fields, blobs = split_end(job_id, end)
            changes.append(
                Change(
                    job_id,
                    JobState.SUCCEEDED,
                    expect=(JobState.RUNNING,),
                    fields=fields,
                    blobs={**blobs, outcome_key(job_id): outcome},
                )
            )
        with contextlib.suppress(Exception):  # a dead store: nothing more can be done
            self.store.transition_many(changes)
        self.held.clear()


HAND_OVER_MAX = 1 << 20
"""Largest outcome sent to the agent; a bigger one the worker writes itself."""


def _run(
    store: Any, job_id: str, key: bytes, body: bytes, ends: _Ends, *, ahead: bool
) -> tuple[int, bool]:
    """Run one job; (exit code, whether its end was handed to the agent).
    A job sent ahead (claimed while the previous one ran) is read from the
    store, so one cancelled meanwhile is skipped, and its end says when it
    really started."""
    from jobkit.errors import StoreUnavailableError
    from jobkit.states import JobRecord
    from jobkit.worker import _store_unreachable, run_job

    handed: list[bool] = []
    started = time.time()

    def hand_over(job: str, outcome: list[Any], end: dict[str, Any]) -> bool:
        if ahead:
            end = {**end, "started_at": started}
        taken = ends.take(job, outcome, end)
        handed.append(taken)
        return taken

    record = None
    if body and not ahead:
        with contextlib.suppress(Exception):  # unreadable: run_job reads it from the store
            record = JobRecord.from_json(body)
    try:
        code = run_job(store, job_id, key, record=record, hand_over=hand_over)
    except StoreUnavailableError as exc:
        code = _store_unreachable(job_id, exc)
    return code, any(handed)


def _read_frame(stream: Any) -> tuple[dict[str, Any], bytes] | None:
    """The next message (header, body), or None at EOF."""
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    size = int(header.get("size") or 0)
    body = stream.read(size) if size else b""
    if len(body) < size:
        return None
    return header, body


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
    """What the last job left that could act during the next one ('' if nothing).
    jobkit's own usage sampler waits between jobs (:mod:`jobkit.sampling`): not counted."""
    from jobkit.sampling import sampler_thread

    ours = (threading.main_thread(), sampler_thread())
    threads = [t.name for t in threading.enumerate() if t not in ours]
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
