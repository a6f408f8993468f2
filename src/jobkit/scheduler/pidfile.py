"""Which process runs a job: pid plus start time, so a reused pid is not mistaken.

A worker outlives an agent that is killed; the next agent must tell "the
worker is still running" from "the worker is gone and its pid now belongs to
some other process".  A pid alone cannot: pids are reused.  The pair (pid,
start time in clock ticks since boot, field 22 of ``/proc/<pid>/stat``) names
one process for the life of the machine.  It is written to a per-job file
beside the job's logs (``logs/<job id>.pid``) by the worker itself before it
runs anything (forked workers) or by the agent right after starting it
(spawned workers).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from jobkit.processes import process_start

__all__ = ["read_pidfile", "same_process", "write_pidfile"]


def write_pidfile(path: Path, pid: int) -> None:
    """Record ``pid`` and its start time at ``path`` (atomically replaced)."""
    start = process_start(pid)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{pid} {start if start is not None else -1}\n")
    os.replace(tmp, path)


def read_pidfile(path: Path) -> tuple[int, int] | None:
    """(pid, start time) recorded at ``path``; None if absent or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        pid, start = path.read_text().split()
        return int(pid), int(start)
    return None


def same_process(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the very process that was recorded (not a reuse)."""
    return start >= 0 and process_start(pid) == start
