"""Workloads 5 and 6: ``import jobkit`` and ``jobkit list`` on 10,000 jobs.

Both are paid in a fresh interpreter every time: scripts and workers import
jobkit, and users type ``jobkit list`` far more often than anything else.
The design keeps heavy dependencies lazy for exactly this; these numbers
watch it.  The anchor is ``python -c pass``, the cost of any Python command.

``jobkit list`` runs the installed console script (the file next to
``sys.executable``, not a pyenv shim that would add its own startup) with
``JOBKIT_STORE`` pointing at a SQLite store filled with 10,000 finished job
records, created directly through ``jobkit.stores.open_store(url).create``.
If the CLI is missing or fails, the row says "not available" and the run
goes on.  Target (issue 2): under 0.3 s wall for the whole command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import Context, Row, WorkloadResult, median, summary, timed

N_RECORDS = 10_000
BATCH = 500
LIST_TARGET_S = 0.3


def wall(
    cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall seconds of one whole command, output captured."""
    return timed(
        subprocess.run, cmd, env=env, cwd=cwd, capture_output=True, check=False, timeout=120
    )


def run_imports(ctx: Context) -> WorkloadResult:
    reps = 5 if ctx.quick else 11
    cwd = ctx.scratch("imports")
    env = dict(os.environ)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import jobkit": [sys.executable, "-c", "import jobkit"],
        "import jobkit; jobkit.remote": [sys.executable, "-c", "import jobkit; jobkit.remote"],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    for name, cmd in commands.items():  # one untimed run each: warm the page cache
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{name!r} failed: {proc.stderr.decode(errors='replace')}")
    for _ in range(reps):
        for name, cmd in commands.items():  # interleaved, so drift hits all alike
            seconds, _proc = wall(cmd, env, cwd)
            times[name].append(seconds * 1000)

    floor = median(times["python -c pass"])
    rows = [
        Row(
            "`import jobkit`, fresh interpreter",
            "ms",
            "lower",
            {"jobkit": median(times["import jobkit"]), "python": floor},
        ),
        Row(
            "`import jobkit; jobkit.remote` (loads the API)",
            "ms",
            "lower",
            {"jobkit": median(times["import jobkit; jobkit.remote"]), "python": floor},
        ),
    ]
    raw = {"unit": "ms", "repetitions": reps, "commands": {k: summary(v) for k, v in times.items()}}
    return WorkloadResult("imports", rows, raw)


def jobkit_command() -> str | None:
    beside = Path(sys.executable).with_name("jobkit")
    return str(beside) if beside.exists() else shutil.which("jobkit")


def fill_store(url: str) -> float:
    """Create N_RECORDS finished jobs in batches; returns records per second."""
    from jobkit.states import FailureReason, JobRecord, JobState
    from jobkit.stores import open_store

    store = open_store(url)
    now = time.time()
    states = (JobState.SUCCEEDED,) * 8 + (JobState.FAILED, JobState.CANCELLED)
    start = time.perf_counter()
    for first in range(0, N_RECORDS, BATCH):
        batch = []
        for i in range(first, first + BATCH):
            state = states[i % len(states)]
            created = now - 7 * 86400 + i * 60.0
            batch.append(
                JobRecord(
                    id=f"jk-bench{i:06d}",
                    name=f"train-{i % 37}",
                    backend="local",
                    state=state,
                    created_at=created,
                    submitted_at=created + 0.01,
                    started_at=created + 0.02,
                    finished_at=created + 1.5,
                    host="bench",
                    pid=10_000 + i,
                    exit_code=0 if state is JobState.SUCCEEDED else 1,
                    failure_reason=FailureReason.ERROR if state is JobState.FAILED else None,
                    message="ValueError: bad lr" if state is JobState.FAILED else None,
                    resources={"cpus": 1, "mem": 2**30},
                    labels={"project": "bench"},
                    extra={"stdout": f"/tmp/logs/jk-bench{i:06d}.out"},
                )
            )
        store.create(batch)
    rate = N_RECORDS / (time.perf_counter() - start)
    store.close()
    return rate


def run_list(ctx: Context) -> WorkloadResult:
    reps = 3 if ctx.quick else 7
    home = ctx.scratch("list")
    url = f"sqlite:///{home}/jobkit.db"
    insert_rate = fill_store(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env.update(JOBKIT_HOME=str(home), JOBKIT_STORE=url)
    command = jobkit_command()
    raw: dict[str, Any] = {"records": N_RECORDS, "create_records_per_s": insert_rate}
    python_ms = [wall([sys.executable, "-c", "pass"], env, home)[0] * 1000 for _ in range(reps)]
    python_s = median(python_ms) / 1000
    why_not = None
    if command is None:
        why_not = "no `jobkit` command installed"
    else:
        cmd = [command, "list", "--limit", "50"]
        raw["command"] = " ".join(cmd)
        try:  # untimed: warm the page cache, check that it works
            _seconds, proc = wall(cmd, env, home)
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess(cmd, -1, b"", b"timed out after 120 s")
        lines = proc.stdout.decode(errors="replace").splitlines()
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            why_not = f"exit {proc.returncode}: {err[-1] if err else 'no output'}"
        elif not any("jk-bench" in line for line in lines):
            why_not = "exit 0 but no job ids in its output"
    if why_not is not None:
        raw["not_available"] = why_not
        row = Row(
            f"`jobkit list --limit 50`, {N_RECORDS:,} jobs",
            "s",
            "lower",
            {"jobkit": None, "python": python_s},
            target=f"< {LIST_TARGET_S} s",
            met=None,
            note=f"not available ({why_not})",
        )
        return WorkloadResult("list", [row], raw, [f"jobkit list: not available: {why_not}"])

    times = []
    for _ in range(reps):
        seconds, proc = wall(cmd, env, home)
        assert proc.returncode == 0
        times.append(seconds)
    raw["seconds"] = summary(times)
    raw["output_lines"] = len(lines)
    row = Row(
        f"`jobkit list --limit 50`, {N_RECORDS:,} jobs",
        "s",
        "lower",
        {"jobkit": median(times), "python": python_s},
        target=f"< {LIST_TARGET_S} s",
        met=median(times) < LIST_TARGET_S,
    )
    return WorkloadResult("list", [row], raw)
