"""Rerunning what failed: ``jobkit retry`` as a real subprocess, and the race
of a late worker of the ended attempt against the new one (real processes,
real SQLite files).  The per-backend behaviour (one submission for the rerun
items) is in the backend conformance suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jobkit
from conftest import local_env
from jobkit.errors import ConfigError
from jobkit.rerun import reopen
from jobkit.serialization import Call, dump_payload
from jobkit.signing import load_key
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import outcome_key, payload_key
from jobkit.usage import usage_key

T = 60.0


def needs_marker(folder: str, index: int) -> int:
    if not (Path(folder) / str(index)).exists():
        raise RuntimeError(f"no marker for {index}")
    return index * 10


def wait_for_file(path: str) -> str:
    Path(path + ".started").touch()
    while not Path(path).exists():
        time.sleep(0.02)
    return "old attempt"


def wait_until(predicate: object, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOBKIT_STORE": url, "JOBKIT_BACKEND": "local"}
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        capture_output=True,
        text=True,
        timeout=T,
        env=env,
    )


def test_jobkit_retry_reruns_the_failed_items_of_an_array(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "0").touch()
    (markers / "2").touch()
    with local_env(tmp_path) as client:
        url = client.config.store
        jobs = jobkit.map(needs_marker, [str(markers)] * 4, range(4))
        jobs.wait(timeout=T, progress=False)
        assert [j.info.state for j in jobs] == [
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.SUCCEEDED,
            JobState.FAILED,
        ]
        ok = jobs[0].info

        # A succeeded job named by id: one line, exit 1, nothing changed.
        refused = cli(url, "retry", jobs[1].id, jobs[0].id)
        assert refused.returncode == 1, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert jobs[0].id in line and "SUCCEEDED" in line and "Traceback" not in line
        assert jobs[1].info.state is JobState.FAILED and jobs[1].info.attempt == 0
        missing = cli(url, "retry", "jk-nosuchjob")
        assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1

        (markers / "1").touch()
        (markers / "3").touch()
        done = cli(url, "retry", jobs.id, "--json")
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        assert [r["id"] for r in rows] == [jobs[1].id, jobs[3].id]
        assert all(r["attempt"] == 1 for r in rows)

        again = jobkit.get(jobs.id)
        assert isinstance(again, jobkit.JobArray)
        assert again.results(timeout=T, progress=False) == [0, 10, 20, 30]
        assert again[0].info == ok  # the succeeded item untouched
        history = again[1].info.attempts
        assert [h["reason"] for h in history] == ["ERROR"]
        assert "no marker for 1" in history[0]["message"]

        nothing = cli(url, "retry", jobs.id)
        assert nothing.returncode == 0 and "nothing to retry" in nothing.stdout


def test_a_late_worker_of_the_ended_attempt_cannot_end_the_new_one(tmp_path: Path) -> None:
    """Cancelled while its worker still runs, then rerun: when the old worker
    finishes, its end is refused (the new attempt waits, PENDING, attempt 1)."""
    url = f"sqlite:///{tmp_path}/jobkit.db"
    store = open_store(url)
    go = tmp_path / "go"
    job_id = "jk-late"
    store.create([JobRecord(id=job_id, name="wait", backend="local", created_at=time.time())])
    call = Call(fn=wait_for_file, args=(str(go),), kwargs={})
    store.put_blob(payload_key(job_id), dump_payload(call, key=load_key(), job_id=job_id))
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobkit.worker", "--store", url, job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: Path(f"{go}.started").exists())
        cancelled = store.transition(
            job_id, JobState.CANCELLED, expect=(JobState.RUNNING,), finished_at=time.time()
        )
        assert cancelled is not None
        (reopened,) = reopen(store, [cancelled])
        assert reopened.state is JobState.PENDING and reopened.attempt == 1
        assert reopened.pid is None and reopened.host is None
        go.touch()  # the old attempt's function returns now
        assert worker.wait(timeout=T) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    now = store.get(job_id)
    assert now == reopened  # not SUCCEEDED by the old attempt: still waiting for its own
    assert [a["reason"] for a in now.attempts] == ["CANCELLED"]


def test_reopen_refuses_what_is_not_failed_or_cancelled(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/jobkit.db")
    done = JobRecord(id="jk-done", name="d", backend="local", state=JobState.SUCCEEDED)
    failed = JobRecord(
        id="jk-failed",
        name="f",
        backend="local",
        state=JobState.FAILED,
        failure_reason=FailureReason.ERROR,
        message="boom",
        finished_at=5.0,
        usage={"cpu_seconds": 2.5, "final": True},
    )
    store.create([done, failed])
    store.put_blob(outcome_key(failed.id), b"old error")
    store.put_blob(usage_key(failed.id), b'{"version":1,"t":[0.1,2.5]}')
    with pytest.raises(ConfigError, match="jk-done"):
        reopen(store, [done])
    (moved,) = reopen(store, [failed])
    assert moved.attempt == 1 and moved.attempts[0]["ended_at"] == 5.0
    assert store.get_blobs([outcome_key(failed.id)]) == {}  # no stale error to read
    # The new attempt measured nothing yet: the old figures are its attempts entry's.
    assert moved.usage == {} and store.get(failed.id).usage == {}
    assert moved.attempts[0]["usage"] == {"cpu_seconds": 2.5, "final": True}
    assert store.get_blobs([usage_key(failed.id)]) == {}
    assert reopen(store, [failed]) == []  # the stale copy: already reopened, refused


def test_a_late_success_outcome_never_answers_a_failed_attempt(tmp_path: Path) -> None:
    """A late worker of an ended attempt may leave its success outcome (its end
    was refused, its blob written); if the rerun then ends LOST without an
    outcome of its own, ``result()`` says LOST, never the old attempt's value."""
    from jobkit.serialization import dump_outcome

    store_url = f"sqlite:///{tmp_path}/jobkit.db"
    with jobkit.use(store=store_url) as client:
        record = JobRecord(
            id="jk-lateoutcome",
            name="late",
            backend="local",
            state=JobState.FAILED,
            created_at=time.time(),
            finished_at=time.time(),
            failure_reason=FailureReason.LOST,
            message="the worker vanished",
            attempt=1,
        )
        client.store.create([record])
        client.store.put_blob(
            outcome_key(record.id), dump_outcome(key=client.key, job_id=record.id, value="old")
        )
        job = client.get(record.id)
        with pytest.raises(jobkit.JobFailedError) as caught:
            job.result(timeout=5)
        assert caught.value.reason is FailureReason.LOST
        assert client.load_outcomes([record]) == {}
