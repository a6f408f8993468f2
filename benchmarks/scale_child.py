"""One jobkit map of N trivial jobs on a fresh store, in a fresh interpreter.

Run by ``scale.py``, one child per size, so that the client's peak RSS is
jobkit's alone (the benchmark process also holds Ray's driver, numpy and
the other anchors) and no size sees another size's records or agent.

Protocol, one JSON object per line::

    child: warm-up calls (they start this store's agent)
       ──► {"agent_pid": ..., "rss_before_kb": ...}     parent starts sampling the agent
       ◄── "go"
    child: map(items) + results(), timed; checks every value
       ──► {"seconds": ..., "submit_s": ..., "client_hwm_kb": ..., "agent_hwm_kb": ...}
    child: stops the agent (so it does not rescan its store while others run)

    python scale_child.py STORE_DIR N TIMEOUT_S
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tasks import trivial

WARMUP = 3


def status_kb(pid: int | str, field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of a process, in KiB (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def find_agent(backend: Any, db_path: str) -> int | None:
    """The pid of this store's agent: its lock file holds it (an internal detail).

    Falls back to the process whose command line runs ``jobkit.scheduler.agent``
    on this database file (the URL in it may be normalised), should the lock
    file move or hold something else.
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        pid = int(Path(backend.paths.lock).read_text().strip())
        if Path(f"/proc/{pid}").exists():
            return pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "jobkit.scheduler.agent" in command and db_path in command:
            return int(entry.name)
    return None


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def main(store_dir: str, n: int, timeout: float) -> int:
    import jobkit
    from jobkit.context import current_client

    db_path = f"{Path(store_dir).resolve()}/jobkit.db"
    url = f"sqlite:///{db_path}"
    with jobkit.use(store=url, local={"cpus": 2, "idle_timeout": 120}):
        remote = jobkit.remote(cpus=1)(trivial)
        for i in range(WARMUP):
            assert remote.submit(i).result(timeout) == i + 1
        backend: Any = current_client().backend("local")
        agent_pid = find_agent(backend, db_path)
        emit({"agent_pid": agent_pid, "rss_before_kb": status_kb("self", "VmRSS")})
        if sys.stdin.readline().strip() != "go":
            return 1
        items = list(range(n))
        start = time.perf_counter()
        jobs = remote.map(items)
        submitted = time.perf_counter()
        values = jobs.results(timeout)
        seconds = time.perf_counter() - start
        wrong = sum(1 for i, v in zip(items, values, strict=False) if v != i + 1)
        wrong += abs(len(values) - n)
        emit(
            {
                "seconds": seconds,
                "submit_s": submitted - start,
                "wrong": wrong,
                "client_hwm_kb": status_kb("self", "VmHWM"),
                "agent_hwm_kb": status_kb(agent_pid, "VmHWM") if agent_pid else None,
            }
        )
        with contextlib.suppress(Exception):
            backend.stop_agent()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
