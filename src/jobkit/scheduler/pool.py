"""The agent's warm workers: started on demand, kept idle, reused by key.

A worker is keyed by what cannot change once a process has started a job:
its environment (the submitter's, plus the job's own ``env``) and its GPUs
(``CUDA_VISIBLE_DEVICES`` is read once, when CUDA initialises).  A job runs
on an idle worker of its key, else on a new one; a worker whose job ended
goes back to the idle set unless it retired (see :mod:`jobkit.scheduler.warm`)
or the set is full, in which case the least recently used idle worker is
closed (it exits on EOF).

Data flow::

    agent._launch ── take(key, env, cwd) ──► idle worker of key, else ForkServer.start_warm
          │                                            │ pid, socket
          │ dispatch(worker, job, record) ── a frame ─► │ warm worker runs it
          │ agent's selector: socket readable ◄────────┘ {"done": ID, ...} + outcome
          │ acknowledge(worker, ids) once the ends are committed
          │                   pidfd readable: the worker exited (killed, crashed, retired)
          └─ give_back(worker) ─► idle (or closed)

The pool holds no job state; the agent's ``Running`` entries say which
worker runs which job.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import socket
from typing import Any

from jobkit.processes import process_start
from jobkit.scheduler.forkserver import ForkServer
from jobkit.scheduler.protocol import FrameReader, encode_frame

__all__ = ["WarmWorker", "WorkerPool"]


@dataclasses.dataclass(eq=False)
class WarmWorker:
    pid: int
    start: int | None
    """Process start time (clock ticks since boot): with the pid, names this
    process for a later agent that adopts its job."""
    sock: socket.socket
    key: str
    pidfd: int | None = None
    reader: FrameReader = dataclasses.field(default_factory=FrameReader)
    job: str | None = None
    ahead: list[str] = dataclasses.field(default_factory=list)
    """Jobs sent ahead, in order: the worker starts the first when ``job`` ends."""
    last_took: float | None = None
    """Seconds its last job took, from dispatch to end (None: none yet)."""
    retiring: bool = False


class WorkerPool:
    """Idle warm workers by key (see the module docstring)."""

    def __init__(self, forkserver: ForkServer, max_idle: int) -> None:
        self.forkserver = forkserver
        self.max_idle = max(1, max_idle)
        self.idle: collections.OrderedDict[WarmWorker, None] = collections.OrderedDict()
        self.all: dict[int, WarmWorker] = {}

    def take(self, key: str, env: dict[str, str], cwd: str | None) -> tuple[WarmWorker, bool]:
        """A worker for ``key``: an idle one, else a new one (True: just started)."""
        for worker in reversed(self.idle):  # the most recently used: its pages are warm
            if worker.key == key:
                del self.idle[worker]
                return worker, False
        pid, sock = self.forkserver.start_warm()
        worker = WarmWorker(pid=pid, start=process_start(pid), sock=sock, key=key)
        try:
            sock.sendall(encode_frame({"env": env, "cwd": cwd}))
        except OSError:
            sock.close()
            raise
        self.all[pid] = worker
        return worker, True

    def dispatch(self, worker: WarmWorker, job: dict[str, Any], record: bytes) -> None:
        """Send one job (with the claimed record); OSError if the worker is gone
        (the caller reaps it)."""
        worker.job = str(job["job"])
        worker.sock.sendall(encode_frame(job, [record]))

    def acknowledge(self, worker: WarmWorker, ids: list[str]) -> None:
        """Tell a worker these ends are committed (it may forget them)."""
        with contextlib.suppress(OSError):  # gone: it wrote them itself, or died
            worker.sock.sendall(encode_frame({"ack": ids}))

    def give_back(self, worker: WarmWorker) -> WarmWorker | None:
        """Make ``worker`` idle; the worker closed to stay within ``max_idle``, if any."""
        worker.job = None
        if worker.retiring:
            return None
        self.idle[worker] = None
        if len(self.idle) <= self.max_idle:
            return None
        oldest, _ = self.idle.popitem(last=False)
        self.close(oldest)
        return oldest

    def close(self, worker: WarmWorker) -> None:
        """Close the agent's end: an idle worker exits when it reads EOF."""
        self.idle.pop(worker, None)
        with contextlib.suppress(OSError):
            worker.sock.close()

    def forget(self, worker: WarmWorker) -> None:
        """The worker exited: drop every trace of it."""
        self.close(worker)
        self.all.pop(worker.pid, None)
        if worker.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(worker.pidfd)
            worker.pidfd = None

    def pids(self) -> set[int]:
        return set(self.all)
