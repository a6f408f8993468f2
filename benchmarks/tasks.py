"""The job functions every workload runs, identical for every system.

They live in one module, rather than in each workload, so that jobkit,
ProcessPoolExecutor, the subprocess floor and submitit all run the very same
code.  The module registers itself with cloudpickle *by value*: jobkit's and
submitit's workers and the floor's child do not have ``benchmarks/`` on
``sys.path``, so a by-reference pickle (``tasks.trivial``) would fail to
import there.  ProcessPoolExecutor forks, so it finds the module either way.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import cloudpickle


def trivial(x: int) -> int:
    """The smallest useful job: what is left is pure overhead."""
    return x + 1


def sleep_for(seconds: float) -> float:
    """A job that holds its slot without using the CPU."""
    time.sleep(seconds)
    return seconds


def peak_rss_kb() -> int:
    """This process's own peak resident set size, in KiB.

    Read from ``VmHWM`` in ``/proc/self/status``, not ``ru_maxrss``: Linux
    carries ``ru_maxrss`` across ``exec``, so a child spawned by a 500 MB
    parent reports a 500 MB peak before it has done anything (measured here:
    525,944 KiB vs VmHWM 13,632 KiB).  ``VmHWM`` belongs to the address space,
    which ``exec`` replaces.  Falls back to ``ru_maxrss`` off Linux.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def sum_and_peak(array: Any) -> tuple[float, int]:
    """Sum a (large) array and report the worker's own peak RSS.

    The worker reports its own peak because jobkit's workers are forked by
    the agent, not by the submitter: ``RUSAGE_CHILDREN`` cannot see them
    (and it would inherit the submitter's peak through ``exec`` anyway).
    """
    return float(array.sum()), peak_rss_kb()


cloudpickle.register_pickle_by_value(sys.modules[__name__])
