"""Workload ``bigstore``: a 100,000-job SQLite store (issue 12's last target line).

    python benchmarks/run.py --only bigstore            # about 2 minutes on 2 cores
    python benchmarks/run.py --only bigstore --quick    # 1 prune run, fewer repetitions

The store is built once by :func:`jobkit_testing.bigstore.build` (a mix of
single jobs and maps over 90 days, mostly finished, inline blobs for one job
in ten, payload files and slurm log files) and copied aside.  Then:

* ``jobkit list`` (the first page of 50, the console script next to
  ``sys.executable``), whole command as a user types it: median of 7 after an
  untimed warm-up;
* ``jobkit.jobs(limit=50)`` in a child interpreter that has imported jobkit:
  resolving ``jobkit.jobs`` (loads the API), the first call (loads the
  configuration, builds the client, opens the store), the median of 20 warm
  calls 0.2 s apart (the target's) and of 20 back to back (each call's
  handles on the running jobs of the page wake the client's monitor, whose
  sweep then competes with the next call);
* ``jobkit prune --older-than 30d``, whole command: the finished jobs of the
  oldest two thirds of the store (~66,600 records, their blobs and log files)
  go; median of 3 runs, each on a fresh copy of the store with its log files
  written again.

No anchors: the targets are absolute (issue 12).  Never a pass/fail test.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import Context, WorkloadResult, median, summary, timed
from startup import jobkit_command

COUNT = 100_000
PRUNE_AGE = "30d"
TARGETS = {"list": 0.3, "prune": 10.0, "jobs_warm": 0.05}
"""Seconds, from issue 12."""

JOBS_CHILD = """
import json, sys, time
import jobkit
start = time.perf_counter()
jobs = jobkit.jobs  # loads the API (pydantic included): paid by any use of jobkit
api_s = time.perf_counter() - start
start = time.perf_counter()
first = jobs(limit=50)
first_s = time.perf_counter() - start
warm, back_to_back = [], []
for _ in range(int(sys.argv[1])):
    time.sleep(0.2)  # the client's monitor, woken by the last call's handles, settles
    start = time.perf_counter()
    jobs(limit=50)
    warm.append(time.perf_counter() - start)
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    jobs(limit=50)
    back_to_back.append(time.perf_counter() - start)
print(json.dumps({"api": api_s, "first": first_s, "warm": warm, "back_to_back": back_to_back}))
"""


def run(ctx: Context) -> WorkloadResult:
    from jobkit_testing.bigstore import build

    home = ctx.scratch("bigstore")
    db = home / "store" / "jobkit.db"
    logs = home / "logs"
    seconds, big = timed(build, db, count=COUNT, log_dir=logs)
    pristine = home / "pristine"
    shutil.copytree(db.parent, pristine)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env.update(JOBKIT_HOME=str(home / "jobkit-home"), JOBKIT_STORE=big.url)
    raw: dict[str, Any] = {
        "records": COUNT,
        "build_s": seconds,
        "with_blobs": len(big.with_blobs),
        "log_files": sum(len(v) for v in big.log_files.values()),
        "pruned_by_age": len(big.prunable(30 * 86400.0)),
    }
    installed = jobkit_command()
    jobkit = [installed] if installed else [sys.executable, "-m", "jobkit"]
    reps = 3 if ctx.quick else 7

    listing = [*jobkit, "list", "--limit", "50"]
    _warm, proc = _wall(listing, env, home)
    _check(proc, listing)
    raw["list_lines"] = len(proc.stdout.splitlines())
    raw["list_s"] = summary([_wall(listing, env, home)[0] for _ in range(reps)])

    proc = subprocess.run(
        [sys.executable, "-c", JOBS_CHILD, str(10 if ctx.quick else 20)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    _check(proc, ["jobs child"])
    jobs = json.loads(proc.stdout)
    raw["jobs_api_import_s"] = jobs["api"]
    raw["jobs_first_s"] = jobs["first"]
    raw["jobs_warm_s"] = summary(jobs["warm"])
    raw["jobs_back_to_back_s"] = summary(jobs["back_to_back"])

    prune = [*jobkit, "prune", "--older-than", PRUNE_AGE]
    prune_times, prune_cpu = [], []
    for _ in range(1 if ctx.quick else 3):
        shutil.rmtree(db.parent)
        shutil.copytree(pristine, db.parent)
        for paths in big.log_files.values():
            for log in paths:
                Path(log).write_text("step 1\nstep 2\n")
        os.sync()  # the copy's writeback must not land inside the timed prune
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds, proc = _wall(prune, env, home)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        _check(proc, prune)
        prune_times.append(seconds)
        prune_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        raw["prune_output"] = proc.stdout.strip()
    raw["prune_s"] = summary(prune_times)
    raw["prune_cpu_s"] = summary(prune_cpu)

    figures = {
        "list": median(raw["list_s"]["samples"]),
        "prune": median(prune_times),
        "jobs_warm": median(jobs["warm"]),
    }
    table = "\n".join(
        [
            f"| {COUNT:,}-job SQLite store (bigstore) | seconds | target | met? |",
            "|---|---|---|---|",
            _line("`jobkit list` first page, whole command", figures["list"], "list"),
            _line(
                f"`jobkit prune --older-than {PRUNE_AGE}` ({raw['pruned_by_age']:,} records)",
                figures["prune"],
                "prune",
            ),
            f"| prune's CPU time (user + system; the rest of its wall time is waiting "
            f"on the disk: ~130 MB of WAL and checkpoint) | {median(prune_cpu):.3f} | - | - |",
            _line("`jobkit.jobs(limit=50)`, warm (median)", figures["jobs_warm"], "jobs_warm"),
            f"| `jobkit.jobs(limit=50)`, back to back (monitor sweeping meanwhile) "
            f"| {median(jobs['back_to_back']):.3f} | - | - |",
            f"| `jobkit.jobs(limit=50)`, first call (loads config, opens the store) "
            f"| {jobs['first']:.3f} | - | - |",
            f"| `jobkit.jobs` attribute after `import jobkit` (loads the API) "
            f"| {jobs['api']:.3f} | - | - |",
        ]
    )
    notes = [f"bigstore: building {COUNT:,} records took {raw['build_s']:.1f} s (not a target)"]
    return WorkloadResult("bigstore", [], raw, notes, [table])


def _line(what: str, seconds: float, target: str) -> str:
    limit = TARGETS[target]
    return f"| {what} | {seconds:.3f} | < {limit:g} s | {'yes' if seconds < limit else 'NO'} |"


def _wall(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, Any]:
    return timed(
        subprocess.run,
        cmd,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _check(proc: subprocess.CompletedProcess[str], cmd: list[str]) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr}")
