"""What the usage sampler costs a job, read from the records it writes.

Runs a CPU burn and a sleeping job on the local backend (a temporary SQLite
store) and prints, from each record's ``usage``, the sampler's own CPU
(``sampler_cpu_seconds``, the sampling thread's CPU clock) against the job's
CPU and against one core.  The first sampled job of a worker process also pays
the one-time ``import psutil``.

    python benchmarks/sampling_overhead.py [--burn 20] [--sleep 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import jobkit


def burn(seconds: float) -> int:
    """Busy until this process used ``seconds`` of CPU (a loaded machine slows
    it down, never changes what it used)."""
    loops = 0
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        loops += 1
    return loops


def nap(seconds: float) -> None:
    time.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burn", type=float, default=20.0, help="CPU seconds of the burn job")
    parser.add_argument("--sleep", type=float, default=30.0, help="seconds of the sleeping job")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        jobkit.use(store=f"sqlite:///{folder}/jobkit.db", backend="local"),
    ):
        for name, fn, arg in (
            (f"burn {args.burn:g} s of CPU", burn, args.burn),
            (f"sleep {args.sleep:g} s", nap, args.sleep),
        ):
            job = jobkit.submit(fn, arg)
            job.result(timeout=args.burn + args.sleep + 120)
            usage = job.info.usage
            keys = ("wall_seconds", "cpu_seconds", "sampler_cpu_seconds", "samples")
            row = {key: usage.get(key) for key in keys}
            sampler = float(usage["sampler_cpu_seconds"])
            row["sampler_share_of_job_cpu_pct"] = round(
                100 * sampler / max(float(usage["cpu_seconds"]), 1e-9), 3
            )
            row["sampler_share_of_one_core_pct"] = round(
                100 * sampler / float(usage["wall_seconds"]), 3
            )
            figures[name] = row
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
