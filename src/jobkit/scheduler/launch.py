"""Starting one worker process for a claimed job: fork or spawn.

Apart from the agent's scheduling loop because what happens in a forked
child (new session, signals reset, descriptors closed, stdio redirected,
environment replaced) has nothing to do with deciding which job runs.

Data flow::

    agent (one thread)                 child, own session and process group
      │ fork_worker ── os.fork() ──►  setsid, SIG_DFL, before_run() closes the
      │                               agent's sockets/pidfds/lock, stdin=/dev/null,
      │                               stdout/stderr → log files, env, cwd
      │                               worker.run_job(store, id, key) ─► os._exit(code)
      │ spawn_worker ── Popen ─────►  python -m jobkit.worker --store URL ID
      │                               (key in JOBKIT_KEY; fresh interpreter)
      ▼
    pid / Popen: the agent watches it with a pidfd and reaps it

Forking an interpreter that already imported jobkit is what makes a trivial
job start in milliseconds; it is safe only because the agent is one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from jobkit.stores.base import Store

__all__ = ["WorkerIO", "fork_worker", "spawn_worker"]

_EXIT_SOFTWARE = 70  # EX_SOFTWARE: the child failed before the worker decided a code


@dataclasses.dataclass(frozen=True)
class WorkerIO:
    """Where a worker runs: its whole environment, directory and log files."""

    env: dict[str, str]
    cwd: str | None
    stdout: Path
    stderr: Path


def fork_worker(
    store: Store,
    key: bytes,
    job_id: str,
    io_: WorkerIO,
    *,
    before_run: Callable[[], None],
) -> int:
    """Fork a child that runs ``job_id``; its pid.  Never returns in the child.

    ``before_run`` runs first in the child, to close what the parent holds
    (listening socket, client connections, lock) so jobs cannot keep them open.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = _EXIT_SOFTWARE
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        before_run()
        _redirect_stdio(io_.stdout, io_.stderr)
        os.environ.clear()
        os.environ.update(io_.env)
        if io_.cwd:
            os.chdir(io_.cwd)
        sys.argv = ["jobkit-worker", job_id]
        from jobkit.worker import run_job

        code = run_job(store, job_id, key)
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _redirect_stdio(out: Path, err: Path) -> None:
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
