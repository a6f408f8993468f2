"""One small map on Slurm in a process of its own, for ``slurm-queries``.

    python slurm_child.py {jobkit|submitit} N WORKDIR

The parent puts counting shims for ``sbatch``/``squeue``/``sacct``/... first
on this process's PATH only, so every scheduler command the job library
runs during the map's whole life (submission, polling, collection) is
counted, and nothing else on the machine is.  Prints one JSON line: wall
seconds, the Slurm ids submitted (for the parent's cleanup) and, for
jobkit, the backend's own ``queries_made`` counter to compare with the
shims' count.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tasks import trivial


def run_jobkit(n: int, workdir: Path) -> dict[str, Any]:
    import jobkit
    from jobkit.context import current_client

    with jobkit.use(store=f"sqlite:///{workdir}/jobkit.db", backend="slurm"):
        start = time.perf_counter()
        jobs = jobkit.map(trivial, range(n))
        results = jobs.results(600, progress=False)
        seconds = time.perf_counter() - start
        backend: Any = current_client().backend("slurm")
        return {
            "seconds": seconds,
            "ok": results == [trivial(i) for i in range(n)],
            "slurm_ids": sorted({j.info.backend_id or "" for j in jobs}),
            "queries_made": backend.queries_made,
        }


def run_submitit(n: int, workdir: Path) -> dict[str, Any]:
    import submitit

    executor = submitit.SlurmExecutor(folder=workdir)
    executor.update_parameters(time=60, nodes=1, ntasks_per_node=1, cpus_per_task=1)
    start = time.perf_counter()
    jobs = executor.map_array(trivial, range(n))
    results = [job.result() for job in jobs]
    return {
        "seconds": time.perf_counter() - start,
        "ok": results == [trivial(i) for i in range(n)],
        "slurm_ids": sorted({str(job.job_id) for job in jobs}),
        "queries_made": None,
    }


def main() -> None:
    system, n, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_jobkit(n, workdir) if system == "jobkit" else run_submitit(n, workdir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
