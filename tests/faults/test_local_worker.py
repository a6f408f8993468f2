"""Faults of local workers: kill -9 with and without retries, killed after
writing the outcome but before recording the state, and a store whose write
lock another process holds for 40 s.

Ground truth: raw SQLite rows, marker files per execution, /proc.  Figures
are printed per scenario and appended to $JOBKIT_FAULTS_REPORT.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import jobkit
from jobkit_testing.faults.local import (
    LOCAL,
    Figures,
    agent_pid,
    alive,
    markers,
    outcome_file,
    paths,
    raw_states,
    report,
    submit_elsewhere,
    wait_until,
    write_lock,
)


def _wait_all(db: Path, ids: list[str], timeout: float) -> float:
    start = time.monotonic()
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=LOCAL) as client:
        try:
            deadline = start + timeout  # one bound for all, not per job
            for job_id in ids:
                jobkit.get(job_id).exception(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            client.backend("local").stop_agent()
    return time.monotonic() - start


def _terminal(db: Path, job_id: str) -> bool:
    return raw_states(db)[job_id][0] in ("SUCCEEDED", "FAILED", "CANCELLED")


@pytest.mark.parametrize("retries", [0, 1])
def test_worker_kill9(tmp_path: Path, retries: int) -> None:
    """No retries: FAILED/LOST naming the signal.  retries=1: run once more, SUCCEEDED."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, ["w"], 30.0, LOCAL, kw={"first_only": True}, retries=retries)
    (job_id,) = tags
    wait_until(lambda: markers(marks, "start").get("w"), 30)
    (worker,) = markers(marks, "start")["w"]
    os.kill(worker, signal.SIGKILL)
    settle = wait_until(lambda: _terminal(db, job_id), 30, interval=0.005)
    _wait_all(db, [job_id], 30)
    state, data = raw_states(db)[job_id]
    runs = len(markers(marks, "start")["w"])
    figures = Figures("worker kill -9", db, marks, tags).count(retried=tags if retries else ())
    report(
        f"worker kill -9, retries={retries}",
        settle_s=round(settle, 3),
        state=f"{state}/{data.get('failure_reason')}",
        runs=runs,
        message=data.get("message"),
        **{k: figures[k] for k in ("duplicated", "stuck")},
    )
    if retries:
        assert state == "SUCCEEDED" and runs == 2 and data["attempt"] == 1
    else:
        assert state == "FAILED" and data["failure_reason"] == "LOST" and runs == 1
        assert "SIGKILL" in data["message"]


@pytest.mark.parametrize("agent_too", [False, True], ids=["agent-alive", "agent-killed-too"])
@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_worker_killed_after_writing_its_outcome(
    tmp_path: Path, agent_too: bool, fails: bool
) -> None:
    """The worker wrote its outcome and is blocked recording the end (another
    process holds the write lock) when it is killed -9 (and the agent too):
    the outcome is recorded (SUCCEEDED or FAILED/ERROR), never LOST, never rerun.

    Only a large outcome can be in that state on SQLite: it is a file written
    before the end; a small one is a row written with the end, in one
    transaction, so the two cannot be apart (hence ``pad``)."""
    db, marks = paths(tmp_path)
    # retries=1 where the function returns: a written outcome must not be rerun either
    # (a raising function with retries left requeues itself and writes no outcome).
    retries = 0 if fails else 1
    kw = {"fail": fails, "pad": 200_000}
    tags = submit_elsewhere(db, marks, ["o"], 1.0, LOCAL, kw=kw, retries=retries)
    (job_id,) = tags
    wait_until(lambda: markers(marks, "start").get("o"), 30)
    (worker,) = markers(marks, "start")["o"]
    agent = agent_pid(db)
    assert agent is not None
    with write_lock(db):
        wait_until(lambda: outcome_file(db, job_id) is not None, 30)
        time.sleep(0.3)  # the worker is now waiting for the lock to record its end
        assert raw_states(db)[job_id][0] == "RUNNING"
        os.kill(worker, signal.SIGKILL)
        if agent_too:
            os.kill(agent, signal.SIGKILL)
        wait_until(lambda: not alive(worker), 10)
    waited = _wait_all(db, [job_id], 60)
    state, data = raw_states(db)[job_id]
    runs = len(markers(marks, "start")["o"])
    report(
        f"worker kill -9 after writing its outcome ({'raises' if fails else 'returns'}, "
        f"{'agent killed too' if agent_too else 'agent alive'})",
        settle_s=round(waited, 2),
        state=f"{state}/{data.get('failure_reason')}",
        runs=runs,
        lost=int(data.get("failure_reason") == "LOST"),
        duplicated=int(runs > 1),
    )
    assert runs == 1
    if fails:
        assert state == "FAILED" and data["failure_reason"] == "ERROR", data
        assert "failed on purpose" in data["message"]
    else:
        assert state == "SUCCEEDED", data
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=LOCAL):
        job = jobkit.get(job_id)
        if fails:
            assert isinstance(job.exception(timeout=5), RuntimeError)
        else:
            assert job.result(timeout=5).rstrip() == "o"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_store_write_lock_held_40s_while_jobs_finish(tmp_path: Path) -> None:
    """Another process holds the write lock for 40 s while jobs finish: the
    workers (and the agent) wait it out; no finished job becomes FAILED."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, [f"l{i}" for i in range(4)], 1.0, LOCAL)
    wait_until(lambda: len(markers(marks, "start")) >= 2, 30)
    with write_lock(db):
        time.sleep(40.0)
    waited = _wait_all(db, list(tags), 120)
    figures = Figures("lock 40 s", db, marks, tags).count()
    report("SQLite write lock held 40 s by another process", settle_s=round(waited, 1), **figures)
    assert figures["states"] == {"SUCCEEDED": 4}, [
        (r[0], r[1].get("message")) for r in raw_states(db).values()
    ]
    assert figures["lost"] == figures["duplicated"] == figures["stuck"] == 0


_FORKING_PARENT = """
import os, sys, time
from pathlib import Path
from jobkit.states import JobRecord, JobState
from jobkit.stores.sqlite import SQLiteStore
db, done = sys.argv[1], Path(sys.argv[2])
store = SQLiteStore(db)
store.create([JobRecord(id="jk-forked", name="f", backend="local", created_at=1.0,
                        state=JobState.RUNNING)])
store.get("jk-forked")  # the parent's connection is open and used
pid = os.fork()
if pid == 0:
    store.get("jk-forked")  # the child's own connection, opened while the parent lives
    done.with_suffix(".open").write_text("open")
    time.sleep(2.0)  # the parent is killed and another process closes the store meanwhile
    store.transition("jk-forked", JobState.SUCCEEDED, host="child")
    done.write_text("committed")
    os._exit(0)
print(pid, flush=True)
time.sleep(120)
"""


def test_forked_child_of_a_killed_parent_keeps_its_commit(tmp_path: Path) -> None:
    """Any process that forks with a SQLite store open (not only the agent):
    the parent is killed -9, `jobkit list` opens and closes the store, then
    the child commits: its commit must be in the file."""
    import subprocess
    import sys

    from jobkit_testing.faults.local import cli

    db, done = tmp_path / "jobkit.db", tmp_path / "done"
    parent = subprocess.Popen(
        [sys.executable, "-c", _FORKING_PARENT, str(db), str(done)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    wait_until(lambda: done.with_suffix(".open").exists(), 30)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    listed = cli(db, "list")
    assert listed.returncode == 0, listed.stderr
    wait_until(lambda: done.exists() and not alive(child), 30)
    cli(db, "list")  # and once more after the child's commit
    state, data = raw_states(db)["jk-forked"]
    report(
        "forked child commits after its parent was killed and the store closed",
        state=state,
        lost=int(state != "SUCCEEDED"),
    )
    assert state == "SUCCEEDED" and data["host"] == "child"
