"""Faults of the hand-over between a warm worker and the agent.

A warm worker sends a success's outcome and end to the agent, which commits
them with its next transaction and then acknowledges them; until then the
worker holds them (see :mod:`jobkit.scheduler.warm`).  Each side is killed
in the window between the two, made wide and certain with SIGSTOP:

* the agent stopped, the job ends (its end sits in the agent's socket), the
  agent killed -9: the worker reads EOF and records the end itself;
* the agent stopped, the job ends, the worker killed -9, the agent resumed:
  the agent reads the end the dead worker sent and commits it.

Either way the job is SUCCEEDED with its result, ran once, and nothing
is left RUNNING.  Ground truth: raw SQLite rows and marker files.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import jobkit
from jobkit_testing.faults.local import (
    LOCAL,
    agent_pid,
    alive,
    markers,
    paths,
    raw_states,
    report,
    submit_elsewhere,
    wait_until,
)


def _ended_while_agent_stopped(tmp_path: Path) -> tuple[Path, str, int, int]:
    """Submit one job, stop the agent while it runs, wait until it ended:
    (db, job id, worker pid, agent pid), the agent still stopped."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, ["h"], 1.5, LOCAL)
    (job_id,) = tags
    wait_until(lambda: markers(marks, "start").get("h"), 30)
    (worker,) = markers(marks, "start")["h"]
    agent = agent_pid(db)
    assert agent is not None
    os.kill(agent, signal.SIGSTOP)
    wait_until(lambda: markers(marks, "end").get("h"), 30)
    time.sleep(0.5)  # the worker has sent its end and waits for the next job
    assert raw_states(db)[job_id][0] == "RUNNING"  # nobody has recorded it yet
    assert alive(worker)
    return db, job_id, worker, agent


def _result(db: Path, job_id: str) -> object:
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=LOCAL) as client:
        try:
            return jobkit.get(job_id).result(timeout=30)
        finally:
            client.backend("local").stop_agent()


def test_agent_killed_before_committing_a_handed_over_end(tmp_path: Path) -> None:
    db, job_id, worker, agent = _ended_while_agent_stopped(tmp_path)
    os.kill(agent, signal.SIGKILL)
    os.kill(agent, signal.SIGCONT)  # delivered to a stopped process: the kill acts now
    settle = wait_until(lambda: raw_states(db)[job_id][0] != "RUNNING", 30, interval=0.01)
    state, data = raw_states(db)[job_id]
    runs = len(markers(tmp_path / "marks", "start").get("h", []))
    report(
        "agent kill -9 between a worker's hand-over and its commit",
        settle_s=round(settle, 2),
        state=state,
        runs=runs,
        worker_exited=not alive(worker),
    )
    assert state == "SUCCEEDED" and data["exit_code"] == 0 and runs == 1
    wait_until(lambda: not alive(worker), 10)  # it recorded the end, then left
    assert _result(db, job_id) == "h"


def test_worker_killed_before_its_handed_over_end_is_committed(tmp_path: Path) -> None:
    db, job_id, worker, agent = _ended_while_agent_stopped(tmp_path)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(worker), 10)
    os.kill(agent, signal.SIGCONT)
    settle = wait_until(lambda: raw_states(db)[job_id][0] != "RUNNING", 30, interval=0.01)
    state, data = raw_states(db)[job_id]
    runs = len(markers(tmp_path / "marks", "start").get("h", []))
    report(
        "worker kill -9 between its hand-over and the agent's commit",
        settle_s=round(settle, 2),
        state=state,
        runs=runs,
    )
    assert state == "SUCCEEDED" and data["exit_code"] == 0 and runs == 1
    assert _result(db, job_id) == "h"


def test_agent_killed_while_jobs_wait_ahead_in_a_worker(tmp_path: Path) -> None:
    """Jobs sent ahead to a busy warm worker (claimed RUNNING, not started)
    when the agent is killed -9: the worker runs them after its current job
    and records every end itself; each ran once, none is left RUNNING."""
    db, marks = paths(tmp_path)
    one = {**LOCAL, "cpus": 1, "max_jobs": 1}
    # Short jobs (the first imports the module): the worker's last job is short,
    # so the ones after the next are sent ahead.
    submit_elsewhere(db, marks, ["t0", "t1", "t2", "t3"], 0.0, one)
    wait_until(lambda: markers(marks, "end").get("t3"), 30)
    (first,) = submit_elsewhere(db, marks, ["a"], 2.0, one)
    wait_until(lambda: markers(marks, "start").get("a"), 30)
    behind = list(submit_elsewhere(db, marks, ["b", "c"], 0.0, one))
    wait_until(lambda: all(raw_states(db)[i][0] == "RUNNING" for i in behind), 10)
    assert not markers(marks, "start").get("b")  # claimed ahead, not started
    agent = agent_pid(db)
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    ids = [first, *behind]
    settle = wait_until(
        lambda: all(raw_states(db)[i][0] != "RUNNING" for i in ids), 30, interval=0.01
    )
    states = {i: raw_states(db)[i][0] for i in ids}
    runs = {t: len(markers(marks, "start").get(t, [])) for t in ("a", "b", "c")}
    report(
        "agent kill -9 with jobs sent ahead to a busy worker",
        settle_s=round(settle, 2),
        states=sorted(states.values()),
        runs=runs,
    )
    assert set(states.values()) == {"SUCCEEDED"} and runs == {"a": 1, "b": 1, "c": 1}
    assert _result(db, behind[0]) in ("b", "c")
