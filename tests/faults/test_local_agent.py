"""Faults of the local agent: kill -9 with jobs running and queued, SIGSTOP
longer than a run, two agents racing for one store.

Ground truth comes from the SQLite file (raw rows), the marker files each
execution writes, and /proc; each scenario prints its figures (lost,
duplicated, stuck, time to settle) and appends them to $JOBKIT_FAULTS_REPORT.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import jobkit
from jobkit.scheduler.protocol import AgentSettings
from jobkit_testing.faults.local import (
    LOCAL,
    Figures,
    agent_pid,
    alive,
    cli,
    markers,
    paths,
    raw_states,
    report,
    submit_elsewhere,
    wait_until,
)


def _wait_all(db: Path, ids: list[str], timeout: float, back: list[float] | None = None) -> float:
    """A client that waits on ``ids`` (it must bring a dead agent back); seconds.
    ``back`` receives the seconds until an agent served the store again."""
    start = time.monotonic()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if agent_pid(db) is not None:
                if back is not None:
                    back.append(time.monotonic() - start)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=LOCAL) as client:
        try:
            deadline = start + timeout  # one bound for all, not per job
            for job_id in ids:
                jobkit.get(job_id).exception(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            stop.set()
            watcher.join()
            client.backend("local").stop_agent()
    return time.monotonic() - start


OPEN_AND_CLOSE = """
import sys
from jobkit.stores import open_store
store = open_store(sys.argv[1])
store.query(limit=5)
store.close()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_agent_kill9_with_jobs_running_then_store_closed_keeps_their_results(
    tmp_path: Path,
) -> None:
    """40 jobs of 2 s on 2 slots; kill -9 the agent with 2 running; another
    process opens and closes the store while no agent lives; `jobkit list` and a
    waiting client bring an agent back.  Every job ends SUCCEEDED exactly once, the two orphaned
    workers' results included."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, [f"t{i}" for i in range(40)], 2.0, LOCAL)
    wait_until(lambda: len(markers(marks, "start")) >= 2, 30)
    pid = agent_pid(db)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: agent_pid(db) is None, 10)
    orphans = [p for pids in markers(marks, "start").values() for p in pids]
    # A process that opens, reads and closes the store while no agent lives (the
    # last connection as SQLite sees it, were the orphans' locks not their own).
    opened = subprocess.run(
        [sys.executable, "-c", OPEN_AND_CLOSE, f"sqlite:///{db}"], capture_output=True, text=True
    )
    assert opened.returncode == 0, opened.stderr
    assert agent_pid(db) is None
    wait_until(lambda: not any(alive(p) for p in orphans), 30)  # they finish on their own
    listed = cli(db, "list")  # lists, and brings an agent back for the queued jobs
    assert listed.returncode == 0, listed.stderr
    back: list[float] = []
    try:
        waited = _wait_all(db, list(tags), 90, back)
    except concurrent.futures.TimeoutError:
        waited = float("inf")  # reported as stuck below
    figures = Figures("agent kill -9, jobs running, store closed", db, marks, tags).count()
    report(
        "agent kill -9 with 2 running, 38 queued, store opened and closed while down",
        orphans=len(orphans),
        agent_back_s=round(back[0], 2) if back else None,
        settle_s=round(waited, 1),
        **figures,
    )
    rows = raw_states(db)
    orphan_tags = {t for t, pids in markers(marks, "start").items() if set(pids) & set(orphans)}
    for job_id, tag in tags.items():
        if tag in orphan_tags:
            assert rows[job_id][0] == "SUCCEEDED", rows[job_id]
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["stuck"] == 0
    assert figures["states"] == {"SUCCEEDED": 40}


def test_waiting_client_restarts_a_dead_agent_for_queued_jobs(tmp_path: Path) -> None:
    """Queued jobs and a dead agent: a client waiting on them starts one promptly
    (its monitor's reconcile of local jobs wakes an agent when none listens)."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, [f"q{i}" for i in range(8)], 0.5, LOCAL)
    wait_until(lambda: markers(marks, "start"), 30)
    pid = agent_pid(db)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: agent_pid(db) is None, 10)
    start = time.monotonic()
    restarted: list[float] = []
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=LOCAL) as client:
        try:
            last = sorted(tags, key=lambda i: int(tags[i][1:]))[-1]
            job = jobkit.get(last)
            while not job.done() and time.monotonic() - start < 60:
                if not restarted and agent_pid(db) is not None:
                    restarted.append(time.monotonic() - start)
                time.sleep(0.05)
            job.exception(timeout=60)
            for job_id in tags:
                jobkit.get(job_id).exception(timeout=60)
        finally:
            client.backend("local").stop_agent()
    figures = Figures("dead agent, client waiting", db, marks, tags).count()
    report(
        "agent kill -9 with queued jobs, a client waiting",
        agent_back_s=round(restarted[0], 2) if restarted else None,
        settle_s=round(time.monotonic() - start, 1),
        **figures,
    )
    assert restarted and restarted[0] < 15, "no agent was started for the waiting client"
    assert figures["stuck"] == 0 and figures["duplicated"] == 0


def test_orphaned_worker_still_alive_is_adopted_with_its_limits(tmp_path: Path) -> None:
    """kill -9 the agent while four workers run; the next agent adopts them
    (pid + start time): the short one's result is kept, the time limit of the
    second and the memory limit of the third still apply (FAILED/TIMEOUT,
    FAILED/OOM), and cancelling the fourth kills it."""
    db, marks = paths(tmp_path)
    local = {**LOCAL, "max_jobs": 4, "cpus": 4}
    # "short" must still run when the agent is killed, after three more submitters
    # started (a second each on a loaded machine): 8 s.
    short = submit_elsewhere(db, marks, ["short"], 8.0, local)
    limited = submit_elsewhere(db, marks, ["limited"], 60.0, local, time=4)
    hog = submit_elsewhere(
        db, marks, ["hog"], 3.0, local, kw={"function": "sleep_then_hog", "mib": 300}, mem="100MiB"
    )
    endless = submit_elsewhere(db, marks, ["endless"], 60.0, local)
    tags = {**short, **limited, **hog, **endless}
    wait_until(lambda: len(markers(marks, "start")) == 4, 30)
    workers = {t: pids[0] for t, pids in markers(marks, "start").items()}
    pid = agent_pid(db)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: agent_pid(db) is None, 10)
    assert all(alive(p) for p in workers.values())
    start = time.monotonic()
    (endless_id,), (short_id,), (limited_id,), (hog_id,) = endless, short, limited, hog
    problem = None
    with jobkit.use(store=f"sqlite:///{db}", backend="local", local=local) as client:
        try:
            assert jobkit.get(short_id).result(timeout=30) == "short"
            wait_until(lambda: agent_pid(db) is not None, 15)
            assert jobkit.get(endless_id).cancel() is True
            jobkit.get(limited_id).exception(timeout=30)
            jobkit.get(hog_id).exception(timeout=30)
            for tag in ("endless", "limited", "hog"):
                wait_until(lambda tag=tag: not alive(workers[tag]), 15)
        except (AssertionError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"  # reported with the figures
        finally:
            client.backend("local").stop_agent()
    rows = raw_states(db)

    def shown(job_id: str) -> str:
        state, data = rows[job_id]
        return f"{state}/{data.get('failure_reason')}"

    report(
        "agent kill -9, live workers adopted",
        settle_s=round(time.monotonic() - start, 1),
        short=shown(short_id),
        limited=shown(limited_id),
        hog=shown(hog_id),
        endless=shown(endless_id),
        problem=problem,
        **Figures("adopt", db, marks, tags).count(),
    )
    assert problem is None, problem
    assert shown(short_id) == "SUCCEEDED/None"
    assert shown(limited_id) == "FAILED/TIMEOUT"
    assert shown(hog_id) == "FAILED/OOM"
    assert rows[endless_id][0] == "CANCELLED"
    assert len(markers(marks, "start")["short"]) == 1  # adopted, not rerun


def test_agent_sigstop_longer_than_a_run(tmp_path: Path) -> None:
    """SIGSTOP the agent for longer than its workers run, then SIGCONT:
    nothing runs twice, nothing is lost, nothing stays stuck."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, [f"s{i}" for i in range(6)], 1.0, LOCAL)
    wait_until(lambda: markers(marks, "start"), 30)
    pid = agent_pid(db)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)  # the running workers end while their agent cannot reap them
    finally:
        os.kill(pid, signal.SIGCONT)
    waited = _wait_all(db, list(tags), 60)
    figures = Figures("sigstop", db, marks, tags).count()
    report("agent SIGSTOP 3 s (runs of 1 s), then SIGCONT", settle_s=round(waited, 1), **figures)
    assert figures["states"] == {"SUCCEEDED": 6}
    assert figures["lost"] == figures["duplicated"] == figures["stuck"] == 0


def test_two_agents_racing_for_one_store(tmp_path: Path) -> None:
    """Start two more agents directly while one serves: they find the lock
    taken and exit; each job still runs exactly once."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, [f"r{i}" for i in range(8)], 0.5, LOCAL)
    first = agent_pid(db)
    assert first is not None
    settings = AgentSettings(store=f"sqlite://{db}", cpus=2, max_jobs=2, idle_timeout=30)
    rivals = [
        subprocess.Popen(
            [sys.executable, "-m", "jobkit.scheduler.agent", settings.to_json(), "--foreground"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    codes = [r.wait(timeout=60) for r in rivals]
    for rival in rivals:
        assert rival.stdout is not None
        rival.stdout.close()
    waited = _wait_all(db, list(tags), 60)
    figures = Figures("race", db, marks, tags).count()
    report(
        "two more agents started directly while one serves",
        rival_exit_codes=codes,
        settle_s=round(waited, 1),
        **figures,
    )
    assert codes == [0, 0]
    assert figures["states"] == {"SUCCEEDED": 8}
    assert figures["duplicated"] == 0


def test_reused_pid_is_not_adopted(tmp_path: Path) -> None:
    """Agent and worker killed; the job's pid now names another process (an
    unrelated `sleep`, recorded start time differs): the next agent must call
    the job LOST at once, neither wait for nor signal that process."""
    db, marks = paths(tmp_path)
    tags = submit_elsewhere(db, marks, ["p"], 60.0, LOCAL)
    (job_id,) = tags
    wait_until(lambda: markers(marks, "start").get("p"), 30)
    (worker,) = markers(marks, "start")["p"]
    agent = agent_pid(db)
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(worker), 10)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        start = int(Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        pidfile = Path(f"{db}.d", "logs", f"{job_id}.pid")
        if pidfile.exists():  # a process of its own: the pid file names it
            pidfile.write_text(f"{stranger.pid} {start - 1}\n")  # same pid, another process
        else:  # a warm worker: the claim recorded its pid and start time
            with sqlite3.connect(db) as conn:
                (text,) = conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
                data = json.loads(text)
                assert data["pid"] == worker and data["extra"]["worker_start"] is not None
                data["pid"], data["extra"]["worker_start"] = stranger.pid, start - 1
                conn.execute("UPDATE jobs SET data = ? WHERE id = ?", (json.dumps(data), job_id))
        waited = _wait_all(db, [job_id], 30)
        state, data = raw_states(db)[job_id]
        report(
            "reused pid after agent + worker kill -9",
            settle_s=round(waited, 2),
            state=f"{state}/{data.get('failure_reason')}",
            stranger_alive=stranger.poll() is None,
        )
        assert state == "FAILED" and data["failure_reason"] == "LOST"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
