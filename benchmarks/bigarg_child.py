"""One variant of the 100 MB-argument workload, alone in a fresh interpreter.

Peak RSS only ever grows, so each variant needs a process of its own for
its peak to mean anything; peaks are ``VmHWM`` (see ``tasks.peak_rss_kb``
for why not ``ru_maxrss``).  The system is warmed with a trivial
job *before* the array exists, so workers forked later (pool, agent) do not
inherit it.  Prints one JSON object on stdout.

Usage: ``python bigarg_child.py {inprocess|jobkit|pool|floor} WORKDIR``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tasks import peak_rss_kb, sum_and_peak, trivial

SIZE_BYTES = 100 * 2**20


def vm_hwm_kb(pid: int) -> int | None:
    """Peak RSS of another (live) process, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def make_system(variant: str, workdir: Path) -> Any:
    import systems

    if variant == "jobkit":
        return systems.JobkitLocal(workdir / "jobkit")
    if variant == "pool":
        return systems.Pool()
    if variant == "floor":
        return systems.SubprocessFloor(workdir / "floor")
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    variant, workdir = sys.argv[1], Path(sys.argv[2])
    system = None if variant == "inprocess" else make_system(variant, workdir)
    if system is not None:
        assert system.call(trivial, 1) == 2
    before_kb = peak_rss_kb()

    array = np.ones(SIZE_BYTES // 8)
    start = time.perf_counter()
    if system is None:
        total, worker_kb = sum_and_peak(array)
    else:
        total, worker_kb = system.call(sum_and_peak, array)
    wall = time.perf_counter() - start
    assert total == SIZE_BYTES // 8, total

    agent_kb = None
    if variant == "jobkit" and system is not None:
        pid = system.agent_pid()
        agent_kb = vm_hwm_kb(pid) if pid else None
    if system is not None:
        system.close()
    print(
        json.dumps(
            {
                "variant": variant,
                "wall_s": wall,
                "submitter_peak_kb": peak_rss_kb(),
                "submitter_peak_before_array_kb": before_kb,
                "submitter_growth_kb": peak_rss_kb() - before_kb,
                "worker_peak_kb": worker_kb if system is not None else None,
                "agent_peak_kb": agent_kb,
            }
        )
    )


if __name__ == "__main__":
    main()
