"""Jobs as arguments: the argument walk, the worker's resolution, bad input.

Real stores (SQLite files, memory) and real signed blobs; no job runs on a
backend here (the conformance suite runs chains on every backend).
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from jobkit.dependencies import (
    ArrayResults,
    DependencyUnavailable,
    JobResult,
    placeholders,
    resolve,
    states_of,
    verdict,
)
from jobkit.job import Job, JobArray
from jobkit.serialization import Call, dump_outcome, dump_payload
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores.base import outcome_key, payload_key
from jobkit.submitter import current as current_submitter
from jobkit.worker import run_job

KEY = b"k" * 32
Pair = collections.namedtuple("Pair", "left right")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    with jobkit.use(
        store=f"sqlite:///{tmp_path}/jobkit.db", backend="local", key=KEY.hex()
    ) as used:
        yield used


def _job(client: Any, job_id: str, **fields: Any) -> Job[Any]:
    record = JobRecord(id=job_id, name="dep", backend="local", **fields)
    client.store.create([record])
    return Job(client, record)


def _array(client: Any, array_id: str, n: int) -> JobArray[Any]:
    records = [
        JobRecord(
            id=f"{array_id}.{i}", name="item", backend="local", array_id=array_id, array_index=i
        )
        for i in range(n)
    ]
    client.store.create(records)
    return JobArray(array_id, [Job(client, r) for r in records])


def _succeed(client: Any, job_id: str, value: Any) -> None:
    client.store.put_blob(outcome_key(job_id), dump_outcome(key=KEY, job_id=job_id, value=value))
    client.store.transition(job_id, JobState.SUCCEEDED, finished_at=1.0)


def test_the_walk_replaces_jobs_and_arrays_and_keeps_container_types(client: Any) -> None:
    a, b = _job(client, "jk-a"), _job(client, "jk-b")
    array = _array(client, "jk-arr", 3)
    data = [1, 2, 3]
    args = (a, [b, {"x": a}], Pair(a, 5), {b}, frozenset({a}), data, "plain")
    new_args, new_kwargs, ids = placeholders(args, {"arr": array, "n": 1}, client.store.identity)
    assert new_args[0] == JobResult("jk-a")
    assert type(new_args[1]) is list and new_args[1][0] == JobResult("jk-b")
    assert new_args[1][1] == {"x": JobResult("jk-a")}
    assert type(new_args[2]) is Pair and new_args[2] == Pair(JobResult("jk-a"), 5)
    assert new_args[3] == {JobResult("jk-b")} and type(new_args[3]) is set
    assert type(new_args[4]) is frozenset
    assert new_args[5] is data  # nothing replaced inside: the same object, not a copy
    assert new_kwargs["arr"] == ArrayResults("jk-arr", ("jk-arr.0", "jk-arr.1", "jk-arr.2"))
    assert ids == ["jk-a", "jk-b", "jk-arr"]  # each once, in order of appearance


def test_no_jobs_among_the_arguments_means_no_dependencies(client: Any) -> None:
    args = ([1, 2], {"a": (3,)})
    new_args, new_kwargs, ids = placeholders(args, {"k": [4]}, client.store.identity)
    assert ids == [] and new_args == args and new_kwargs == {"k": [4]}
    assert new_args[0] is args[0]


def test_the_worker_receives_results_in_place_of_placeholders(client: Any) -> None:
    store = client.store
    _job(client, "jk-a")
    array = _array(client, "jk-arr", 2)
    _succeed(client, "jk-a", {"rows": 3})
    for i, job in enumerate(array):
        _succeed(client, job.id, [i])  # a result that is a list is not walked into
    args = (JobResult("jk-a"), [ArrayResults("jk-arr", ("jk-arr.0", "jk-arr.1"))])
    new_args, new_kwargs = resolve(store, KEY, args, {"p": Pair(JobResult("jk-a"), 1)})
    assert new_args == ({"rows": 3}, [[[0], [1]]])
    assert new_kwargs == {"p": Pair({"rows": 3}, 1)}


def test_a_missing_or_failed_outcome_is_a_dependency_failure(client: Any) -> None:
    _job(client, "jk-gone")
    with pytest.raises(DependencyUnavailable) as caught:
        resolve(client.store, KEY, (JobResult("jk-gone"),), {})
    assert caught.value.dependency_id == "jk-gone"
    _job(client, "jk-err")
    blob = dump_outcome(key=KEY, job_id="jk-err", error=ValueError("bad"))
    client.store.put_blob(outcome_key("jk-err"), blob)
    with pytest.raises(DependencyUnavailable, match="did not succeed"):
        resolve(client.store, KEY, (), {"x": JobResult("jk-err")})


def test_an_outcome_signed_for_another_job_is_refused(client: Any) -> None:
    _job(client, "jk-a")
    client.store.put_blob(outcome_key("jk-a"), dump_outcome(key=KEY, job_id="jk-b", value=1))
    with pytest.raises(DependencyUnavailable, match="could not be loaded"):
        resolve(client.store, KEY, (JobResult("jk-a"),), {})


def test_run_job_fails_with_dependency_instead_of_crashing(client: Any) -> None:
    store = client.store
    _job(client, "jk-dep")
    record = JobRecord(id="jk-me", name="me", backend="local", depends_on=["jk-dep"])
    store.create([record])
    call = Call(fn=len, args=(JobResult("jk-dep"),), kwargs={})
    store.put_blob(payload_key("jk-me"), dump_payload(call, key=KEY, job_id="jk-me"))
    assert run_job(store, "jk-me", KEY) == 1
    ended = store.get("jk-me")
    assert ended.state is JobState.FAILED and ended.failure_reason is FailureReason.DEPENDENCY
    assert ended.extra["failed_dependency"] == "jk-dep" and "jk-dep" in (ended.message or "")
    with pytest.raises(jobkit.DependencyError) as caught:
        Job(client, ended).result()
    assert caught.value.dependency_id == "jk-dep" and caught.value.job_id == "jk-me"


def test_run_job_passes_the_results(client: Any) -> None:
    store = client.store
    _job(client, "jk-dep")
    _succeed(client, "jk-dep", [1, 2, 3])
    record = JobRecord(id="jk-me", name="me", backend="local", depends_on=["jk-dep"])
    store.create([record])
    call = Call(fn=sum, args=(JobResult("jk-dep"),), kwargs={})
    store.put_blob(payload_key("jk-me"), dump_payload(call, key=KEY, job_id="jk-me"))
    assert run_job(store, "jk-me", KEY) == 0
    assert Job(client, store.get("jk-me")).result() == 6


def test_verdict_names_the_root_failure_transitively(client: Any) -> None:
    store = client.store
    _job(client, "jk-root")
    store.transition("jk-root", JobState.CANCELLED, finished_at=1.0)
    mid = JobRecord(id="jk-mid", name="m", backend="local", depends_on=["jk-root"])
    last = JobRecord(id="jk-last", name="l", backend="local", depends_on=["jk-mid"])
    store.create([mid, last])
    found = verdict(mid, states_of(store, mid.depends_on))
    assert found.root == "jk-root" and found.failure is not None
    assert found.failure.message == "dependency jk-root failed (CANCELLED)"
    from jobkit.reconcile import fail

    fail(store, "jk-mid", found.failure, extra={"failed_dependency": found.root})
    again = verdict(last, states_of(store, last.depends_on))
    assert again.root == "jk-root" and again.failure is not None
    assert again.failure.message == "dependency jk-root failed (CANCELLED)"


def test_after_takes_only_jobs_and_arrays(client: Any) -> None:
    fn = jobkit.remote(len)
    for bad in ([3], ["jk-abc"], 3, [None]):
        with pytest.raises(jobkit.ConfigError) as caught:
            fn.options(after=bad)
        assert "\n" not in str(caught.value) and "after" in str(caught.value)
        assert "Job" in str(caught.value)


def test_a_job_of_another_store_is_refused_before_anything_is_written(
    client: Any, tmp_path: Path
) -> None:
    with jobkit.use(store=f"sqlite:///{tmp_path}/other.db", backend="local") as other:
        foreign = _job(other, "jk-foreign")
    before = client.store.query()
    with pytest.raises(jobkit.ConfigError) as caught:
        jobkit.submit(len, [foreign])
    message = str(caught.value)
    assert "\n" not in message and "jk-foreign" in message and "other.db" in message
    with pytest.raises(jobkit.ConfigError):
        jobkit.remote(len).options(after=[foreign]).submit([1])
    assert client.store.query() == before


def test_a_dependency_failed_at_submit_fails_the_job_without_running_it(client: Any) -> None:
    dep = _job(client, "jk-dep")
    client.store.transition(
        "jk-dep",
        JobState.FAILED,
        failure_reason=FailureReason.OOM,
        message="killed",
        finished_at=1.0,
    )
    job = jobkit.submit(len, dep)  # the local backend is never asked (no agent starts)
    assert job.info.state is JobState.FAILED
    assert job.info.failure_reason is FailureReason.DEPENDENCY
    assert job.info.message == "dependency jk-dep failed (OOM: killed)"
    assert job.info.depends_on == ["jk-dep"] and job.info.backend_id is None
    with pytest.raises(jobkit.DependencyError) as caught:
        job.result(timeout=5)
    assert caught.value.dependency_id == "jk-dep"


def test_the_cli_status_of_a_failed_dependent_names_the_root(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobkit.db"
    with jobkit.use(store=url, backend="local", key=KEY.hex()) as used:
        _job(used, "jk-dep")
        used.store.transition("jk-dep", JobState.CANCELLED, finished_at=1.0)
        job = jobkit.submit(len, [Job(used, used.store.get("jk-dep"))])
    out = subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", url, "status", job.id, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"failure_reason": "DEPENDENCY"' in out.stdout
    assert '"failed_dependency": "jk-dep"' in out.stdout


def test_an_unknown_dependency_is_refused_before_anything_is_written(client: Any) -> None:
    ghost = Job(client, JobRecord(id="jk-ghost", name="g", backend="local"))
    with pytest.raises(jobkit.ConfigError, match="jk-ghost") as caught:
        jobkit.submit(len, ghost)
    assert "\n" not in str(caught.value)
    assert client.store.query() == [] and client.store.payload_blobs() == {}


def test_a_store_held_job_of_a_dead_submitter_is_not_handed_over() -> None:
    from jobkit.reconcile import observable, submitter_gone

    dead = {"host": "elsewhere", "pid": 1, "started": 1}
    old = dict(created_at=1.0, depends_on=["jk-dep"])
    held = JobRecord(
        id="jk-h", name="h", backend="toy", extra={"held": "store", "submitter": dead}, **old
    )
    plain = JobRecord(id="jk-p", name="p", backend="toy", extra={"submitter": dead}, created_at=1.0)
    claimed = JobRecord(
        id="jk-c",
        name="c",
        backend="toy",
        state=JobState.QUEUED,
        extra={"held": "store", "released_at": 2.0, "submitter": dead},
        **old,
    )
    assert not submitter_gone(held) and submitter_gone(plain) and submitter_gone(claimed)
    assert [r.id for r in observable([held, plain, claimed])] == ["jk-p", "jk-c"]
    mine = {**claimed.extra, "submitter": current_submitter()}
    releasing = dataclasses.replace(claimed, extra=mine)
    assert observable([releasing]) == []  # its releaser still submits it
