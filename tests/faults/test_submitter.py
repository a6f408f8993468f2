"""Failure 2 of issue 11: a submitter killed between recording a map and handing it over.

A real client process maps a function over 1,000 items; the test polls the
SQLite file's raw rows and kills the client (SIGSTOP, then SIGKILL) the
moment all 1,000 records are committed and none has a ``submitted_at`` --
records written, backend not yet told.  Ground truth afterwards: the rows,
the marker files the job function writes (one per execution), ``/proc``.

Expected (issue 11): any reconciling process hands such PENDING jobs to
their backend or fails them saying why; none is left PENDING without a
process that will move it on, and none runs twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobkit_testing.faults.store import (
    Figures,
    executions,
    pids_running,
    raw_rows,
    report,
    row_counts,
    wait_until,
)

ITEMS = int(os.environ.get("JOBKIT_FAULTS_MAP_ITEMS", "1000"))
SETTLE = 60.0

SUBMITTER = textwrap.dedent(
    """
    import os, sys
    import jobkit

    markers = sys.argv[1]

    def mark(i):
        with open(os.path.join(markers, f"{i}.{os.getpid()}"), "w") as out:
            out.write(os.environ.get("JOBKIT_ATTEMPT", ""))
        return i

    jobkit.map(mark, range(int(sys.argv[2])))
    print("submitted", flush=True)
    """
)


def _env(tmp_path: Path, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JOBKIT_STORE=f"sqlite:///{tmp_path}/jobkit.db",
        JOBKIT_BACKEND=backend,
        JOBKIT_HOME=str(tmp_path / "home"),
    )
    return env


def kill_after_records(tmp_path: Path, backend: str, tries: int = 5) -> Path:
    """Run the submitter until it is killed with all records committed and none
    handed over; returns the directory of that try (its store, markers, home).
    A try that misses the window (the hand-over already began) is left behind
    (its agent stopped) and repeated in a fresh directory."""
    for attempt in range(tries):
        root = tmp_path / f"try{attempt}"
        db, markers = root / "jobkit.db", root / "markers"
        markers.mkdir(parents=True)
        script = root / "submit_map.py"
        script.write_text(SUBMITTER)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(markers), str(ITEMS)],
            env=_env(root, backend),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        hit = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            total, unsubmitted = row_counts(db) if db.exists() else (0, 0)
            if total >= ITEMS:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze it where it is, then look
                total, unsubmitted = row_counts(db)
                hit = total == ITEMS and unsubmitted == ITEMS
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait(timeout=30)
        if hit:
            return root
        _stop_agents(db)
    pytest.fail(f"never caught the submitter between recording and handing over in {tries} tries")


def _stop_agents(db: Path) -> None:
    for pid in pids_running("jobkit.scheduler.agent", str(db)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("agent_alive", [True, False], ids=["agent-alive", "agent-gone"])
def test_local_map_killed_after_records_is_handed_over_by_jobkit_list(
    tmp_path: Path, agent_alive: bool
) -> None:
    """Local: the dead client's 1,000 PENDING jobs run exactly once.  With the
    agent gone too (killed with the client: nothing left on the machine),
    only a reconciling process can start one: here one ``jobkit list``."""
    root = kill_after_records(tmp_path, "local")
    db = root / "jobkit.db"
    if not agent_alive:
        _stop_agents(db)
    killed_at = time.monotonic()
    listed = subprocess.run(
        [sys.executable, "-m", "jobkit", "list", "--state", "PENDING", "--limit", "5"],
        env=_env(root, "local"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "internal error" not in listed.stderr
    settled = wait_until(
        lambda: all(r["column_state"] in ("SUCCEEDED", "FAILED") for r in raw_rows(db)), SETTLE
    )
    rows = raw_rows(db)
    runs = executions(root / "markers")
    figures = Figures.count(
        f"submitter killed after records (map of {ITEMS})",
        "local" + ("" if agent_alive else ", agent gone"),
        rows,
        runs,
        None if settled is None else time.monotonic() - killed_at,
    )
    report(figures)
    _stop_agents(db)
    assert len(rows) == ITEMS
    assert (figures.lost, figures.duplicated, figures.stuck) == (0, 0, 0), figures.line()
