"""One process for the life of the machine: its pid plus its start time.

Pids are reused, so "pid 4242 is alive" does not say it is the process that
was recorded.  The pair (pid, start time in clock ticks since boot, field 22
of ``/proc/<pid>/stat``) does.  Used to adopt a worker that outlived its
agent (:mod:`jobkit.scheduler.pidfile`) and to tell whether a job's
submitter is gone (:mod:`jobkit.submitter`).
"""

from __future__ import annotations

__all__ = ["process_start"]


def process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None if unknown or not running
    (a zombie, killed and not yet reaped by its parent, is not running)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None
