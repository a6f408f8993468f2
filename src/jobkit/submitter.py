"""Who submitted a job, recorded so that others can tell when it is gone.

A client records its jobs PENDING before it hands them to a backend; if it
dies between the two, only the record is left.  To let any other process
(another client, ``jobkit list``, the local agent) decide that the submitter
is really gone rather than slow, each record carries the submitter's host,
pid and process start time (``extra["submitter"]``): on the same host a pid
that is no longer running, or that now belongs to a process started at
another time, is proof.  The start time is the kernel's (``/proc/PID/stat``,
clock ticks since boot), so it cannot be fooled by pid reuse; where ``/proc``
does not exist it is None and a live pid counts as the submitter.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from jobkit.processes import process_start

__all__ = ["Submitter", "alive", "current"]

Submitter = dict[str, Any]
"""``{"host": str, "pid": int, "started": int | None}``, as kept in a record's extra."""


def current() -> Submitter:
    """This process, as a record's ``extra["submitter"]``."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid)}


def alive(submitter: Submitter) -> bool:
    """Whether the process ``submitter`` names still runs (call on its host only)."""
    pid = submitter.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started = submitter.get("started")
    if not isinstance(started, int):
        return True
    now_started = process_start(pid)
    if now_started is None:
        # No /proc (not Linux), or the process just exited: trust kill(0) unless /proc exists.
        return not os.path.isdir("/proc/self")
    return now_started == started
