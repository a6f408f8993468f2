"""Starting one worker process for a claimed job: what both start methods share.

Apart from the agent's scheduling loop because what happens in a new worker
(new session, stdio redirected, environment replaced) has nothing to do with
deciding which job runs.

Data flow::

    agent (one thread)
      │ "fork" (default): ForkServer.fork ─► :mod:`jobkit.scheduler.forkserver`
      │                   (a process that never opened the store) forks the worker,
      │                   which calls redirect_stdio() and worker.run_job
      │ "spawn": spawn_worker ── Popen ──► python -m jobkit.worker --store URL ID
      │                   (key in JOBKIT_KEY; fresh interpreter; own session)
      ▼
    pid / Popen: the agent watches it with a pidfd and reaps it

The agent never forks a worker from itself: its open SQLite connection must
not be carried across fork (see :mod:`jobkit.scheduler.forkserver`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["WorkerIO", "redirect_stdio", "spawn_worker"]


@dataclasses.dataclass(frozen=True)
class WorkerIO:
    """Where a worker runs: its whole environment, directory and log files."""

    env: dict[str, str]
    cwd: str | None
    stdout: Path
    stderr: Path


def redirect_stdio(out: Path, err: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))


def spawn_worker(store_url: str, key: bytes, job_id: str, io_: WorkerIO) -> subprocess.Popen[bytes]:
    """Start ``python -m jobkit.worker`` for ``job_id`` in its own session."""
    env = {**io_.env, "JOBKIT_KEY": key.hex()}
    with open(io_.stdout, "ab") as stdout, open(io_.stderr, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "jobkit.worker", "--store", store_url, job_id],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=io_.cwd,
            start_new_session=True,
            close_fds=True,
        )
