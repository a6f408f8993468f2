"""The client's own CPU during a local map, and its monitor thread's share.

Not part of ``run.py``: a probe for issue 12's "work per sweep proportional
to what changed".  The monitor is one thread of the submitting process; its
CPU time is read from ``/proc/self/task/<tid>/stat`` (Linux), so the agent
and its workers, which run elsewhere, are not counted::

    PYTHONPATH=src python benchmarks/monitor_cpu.py 10000

prints the map's wall time and jobs/s (informational, and noisy on a shared
machine), the client's process CPU and the monitor thread's CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def inc(x: int) -> int:
    return x + 1


def thread_cpu(name: str) -> float:
    """User + system seconds of this process's thread called ``name`` (NaN if none)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return float("nan")


def main(n: int) -> None:
    import jobkit

    home = tempfile.mkdtemp(prefix="jobkit-monitor-cpu-")
    with jobkit.use(store=f"sqlite:///{home}/jobkit.db", backend="local"):
        start, cpu = time.perf_counter(), time.process_time()
        jobs = jobkit.map(inc, range(n))
        results = jobs.results()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        monitor = thread_cpu("jobkit-monitor")
    assert results == [x + 1 for x in range(n)]
    print(
        f"map of {n}: {wall:.1f} s ({n / wall:.0f} jobs/s); client CPU {cpu:.2f} s, "
        f"of which the monitor thread {monitor:.2f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
