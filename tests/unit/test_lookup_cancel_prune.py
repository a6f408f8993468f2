"""The library functions behind ``jobkit status/cancel/prune`` and ``jobkit.get``.

Real SQLite stores and a real :class:`~jobkit.client.Client`; the CLI tests
check the rendering, these check the typed results scripts can use directly.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobkit.cancelling import cancel_ids
from jobkit.client import Client
from jobkit.config_loading import load_config
from jobkit.errors import ConfigError, JobNotFoundError
from jobkit.job import Job
from jobkit.lookup import ArrayIdError, array_members, find, find_job
from jobkit.pruning import execute, plan
from jobkit.states import FailureReason, JobRecord, JobState

NOW = time.time()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("JOBKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBKIT_STORE", f"sqlite:///{tmp_path}/jobkit.db")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JOBKIT_PROFILE", raising=False)
    monkeypatch.delenv("JOBKIT_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    made = Client(load_config([]))
    yield made
    made.store.close()


def rec(job_id: str, state: JobState = JobState.SUCCEEDED, **fields: Any) -> JobRecord:
    values: dict[str, Any] = {
        "name": "train",
        "backend": "local",
        "state": state,
        "created_at": fields.pop("created_at", NOW - 1),
        "owner": "me",
    }
    values.update(fields)
    return JobRecord(id=job_id, **values)


def test_find_tells_a_job_from_an_array_and_orders_members(client: Client) -> None:
    client.store.create(
        [
            rec("jk-one"),
            rec("jk-a.1", array_id="jk-a", array_index=1),
            rec("jk-a.0", array_id="jk-a", array_index=0),
        ]
    )
    job = find(client.store, " jk-one ")
    assert not job.is_array and job.records[0].id == "jk-one"
    array = find(client.store, "jk-a")
    assert array.is_array and [r.id for r in array.records] == ["jk-a.0", "jk-a.1"]
    assert [r.id for r in array_members(client.store, "jk-a")] == ["jk-a.0", "jk-a.1"]
    assert array_members(client.store, "jk-none") == []
    with pytest.raises(JobNotFoundError):
        find(client.store, "jk-none")
    with pytest.raises(ArrayIdError, match=r"'jk-a' is a job array, not a job.*'jk-a\.0'"):
        find_job(client.store, "jk-a")
    with pytest.raises(ConfigError, match=re.escape("invalid job id '  ': expected a string")):
        find(client.store, "  ")
    got = client.get("jk-a")
    assert [j.id for j in got] == ["jk-a.0", "jk-a.1"]


def test_cancel_ids_reports_each_id_typed(client: Client) -> None:
    client.store.create(
        [
            rec("jk-q", JobState.QUEUED),
            rec("jk-done"),
            rec("jk-a.0", JobState.PENDING, array_id="jk-a", array_index=0),
            rec("jk-a.1", JobState.FAILED, array_id="jk-a", array_index=1),
            rec("jk-x", JobState.RUNNING, backend="nowhere"),
        ]
    )
    report = cancel_ids(client, ["jk-q", "jk-unknown", "jk-done", "jk-a", "jk-x", "jk-q"])
    assert not report.ok
    by_id = {t.id: t for t in report.targets}
    assert list(by_id) == ["jk-q", "jk-done", "jk-a", "jk-x"]  # duplicates once, in order
    assert by_id["jk-q"].cancelled == ["jk-q"] and not by_id["jk-q"].is_array
    assert [r.state for r in by_id["jk-done"].ended] == [JobState.SUCCEEDED]
    array = by_id["jk-a"]
    assert array.is_array and array.total == 2 and array.cancelled == ["jk-a.0"]
    assert [r.id for r in array.ended] == ["jk-a.1"]
    assert by_id["jk-x"].stuck == ["jk-x"] and by_id["jk-x"].cancelled == []
    assert len(report.unknown) == 1 and "jk-unknown" in report.unknown[0]
    assert (
        len(report.problems) == 1
        and "backend 'nowhere' could not stop jk-x" in (report.problems[0])
    )
    assert client.store.get("jk-a.0").state is JobState.CANCELLED
    again = cancel_ids(client, ["jk-q"])
    assert again.ok and [r.state for r in again.targets[0].ended] == [JobState.CANCELLED]


def test_prune_plan_reads_only_and_never_plans_a_live_job(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "old.out"
    log.write_text("log\n")
    old = NOW - 10 * 86400
    client.store.create(
        [
            rec("jk-old", created_at=old, extra={"stdout": str(log)}),
            rec("jk-old-live", JobState.RUNNING, created_at=old),
            rec("jk-new", created_at=NOW - 1),
        ]
    )
    planned = plan(
        client.store,
        states=[JobState.SUCCEEDED, JobState.RUNNING],
        age=timedelta(days=7),
        corrupted=False,
        now=NOW,
    )
    assert [r.id for r in planned.records] == ["jk-old"]
    assert planned.log_files == [str(log)] and planned.state_counts() == {"SUCCEEDED": 1}
    assert planned.to_dict(dry_run=True)["jobs"] == ["jk-old"]
    assert client.store.get("jk-old").state is JobState.SUCCEEDED  # planning deleted nothing
    assert execute(client.store, planned) == []
    assert not log.exists()
    with pytest.raises(JobNotFoundError):
        client.store.get("jk-old")
    assert client.store.get("jk-old-live").state is JobState.RUNNING


def test_wait_and_as_completed_see_jobs_the_monitor_finishes(client: Client) -> None:
    """The Future protocol through the public settling path: FAILED counts as an
    exception for FIRST_EXCEPTION, CANCELLED as done and cancelled."""
    client.store.create([rec("jk-f", JobState.RUNNING), rec("jk-c", JobState.RUNNING)])
    failing: Job[Any] = Job(client, client.store.get("jk-f"))
    cancelled: Job[Any] = Job(client, client.store.get("jk-c"))
    seen: list[str] = []
    failing.add_done_callback(lambda f: seen.append("callback"))
    client.store.transition(
        "jk-f", JobState.FAILED, failure_reason=FailureReason.TIMEOUT, finished_at=time.time()
    )
    done, not_done = concurrent.futures.wait(
        [failing, cancelled], timeout=30, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert failing in done and cancelled in not_done
    assert seen == ["callback"]
    error = failing.exception(timeout=5)
    assert error is not None and "TIMEOUT" in str(error)
    client.store.transition("jk-c", JobState.CANCELLED, finished_at=time.time())
    assert list(concurrent.futures.as_completed([cancelled], timeout=30)) == [cancelled]
    assert cancelled.cancelled() and cancelled.done()
    with pytest.raises(concurrent.futures.CancelledError, match="job jk-c was cancelled"):
        cancelled.result(timeout=5)
