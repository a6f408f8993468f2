"""The S3 store's batches against a moto server over real HTTP: what
``transition_many``, ``put_blobs`` and ``get_blobs`` cost in requests (upper
bounds: the counts are deterministic), and that a batch leaves the same
records and index keys as one ``transition`` at a time would, lost races
included."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest

from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import Change
from jobkit.stores.s3 import S3Store

pytest_plugins = ["s3_fixtures"]

PREFIX = "batch"
N = 30


class RequestCounter:
    """Counts the HTTP requests a boto3 client sends, by operation (retries included)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> dict[str, int]:
        counts = dict(self.calls)
        self.calls.clear()
        return counts


def _open(bucket: str) -> S3Store:
    store = open_store(f"s3://{bucket}/{PREFIX}")
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def store(s3_bucket: str) -> Iterator[S3Store]:
    store = _open(s3_bucket)
    yield store
    store.close()


def _records(n: int = N) -> list[JobRecord]:
    return [
        JobRecord(id=f"jk-b{i:03d}", name="item", backend="kubernetes", created_at=1000.0 + i)
        for i in range(n)
    ]


def _queue(ids: list[str]) -> list[Change]:
    return [
        Change(i, JobState.QUEUED, (JobState.PENDING,), {"backend_id": f"job[{n}]"})
        for n, i in enumerate(ids)
    ]


def _index(s3_client: Any, bucket: str) -> dict[str, set[str]]:
    """Job ids listed under each state's index, read behind the store's back."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{PREFIX}/index/"
    )
    found: dict[str, set[str]] = collections.defaultdict(set)
    for page in pages:
        for item in page.get("Contents", ()):
            parts = item["Key"].split("/")
            if parts[2] != "array":
                found[parts[2]].add(parts[-2])
    return dict(found)


def test_queueing_a_map_right_after_create_costs_two_puts_an_item(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    records = _records()
    store.create(records)
    counter = RequestCounter(store.client)
    moved = store.transition_many(_queue([r.id for r in records]))
    cost = counter.take()
    assert [m.state if m else None for m in moved] == [JobState.QUEUED] * N
    assert [m.backend_id for m in moved if m] == [f"job[{n}]" for n in range(N)]
    # The one-at-a-time transition: GET, PUT key, PUT record, DELETE key = 4 an item.
    assert cost.get("GetObject", 0) == 0  # the store wrote these records: it knows their ETags
    assert cost["PutObject"] <= 2 * N
    assert cost["DeleteObjects"] <= 1 and "DeleteObject" not in cost
    assert sum(cost.values()) <= 2 * N + 1
    assert _index(s3_client, s3_bucket) == {"QUEUED": {r.id for r in records}}
    assert [r.state for r in store.get_many([r.id for r in records]).values()] == [
        JobState.QUEUED
    ] * N


def test_a_batch_from_another_process_reads_each_record_once(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    records = _records()
    store.create(records)
    other = _open(s3_bucket)  # knows no ETag: a reconciler, the CLI, another client
    try:
        counter = RequestCounter(other.client)
        moved = other.transition_many(_queue([r.id for r in records]))
        cost = counter.take()
    finally:
        other.close()
    assert all(m is not None and m.state is JobState.QUEUED for m in moved)
    assert cost["GetObject"] <= N and cost["PutObject"] <= 2 * N
    assert sum(cost.values()) <= 3 * N + 1
    assert _index(s3_client, s3_bucket) == {"QUEUED": {r.id for r in records}}


def test_a_batch_that_loses_races_ends_as_transitions_one_by_one_would(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    """Another writer moved some jobs after this store wrote them: its remembered
    ETags are stale, If-Match refuses, and each such change is judged again on
    the stored record (refused where the job left PENDING, applied where it did not)."""
    records = _records(6)
    store.create(records)
    other = _open(s3_bucket)
    try:
        other.transition("jk-b000", JobState.CANCELLED)  # gone from PENDING
        other.transition("jk-b001", JobState.RUNNING, host="pod-1")  # a fast worker
        other.update("jk-b002", message="touched")  # still PENDING, new ETag
    finally:
        other.close()
    moved = store.transition_many(_queue([r.id for r in records]))
    assert moved[0] is None and moved[1] is None
    assert moved[2] is not None and moved[2].message == "touched"
    assert [m.state if m else None for m in moved[2:]] == [JobState.QUEUED] * 4
    states = {i: r.state for i, r in store.get_many([r.id for r in records]).items()}
    assert states["jk-b000"] is JobState.CANCELLED and states["jk-b001"] is JobState.RUNNING
    assert _index(s3_client, s3_bucket) == {  # no key left behind by the lost attempts
        "CANCELLED": {"jk-b000"},
        "RUNNING": {"jk-b001"},
        "QUEUED": {f"jk-b00{i}" for i in range(2, 6)},
    }


def test_a_job_deleted_behind_the_batch_answers_none_and_leaves_no_key(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    records = _records(3)
    store.create(records)
    other = _open(s3_bucket)
    try:
        assert other.delete(["jk-b001"]) == 1
    finally:
        other.close()
    moved = store.transition_many(_queue([r.id for r in records]))
    assert [m.id if m else None for m in moved] == ["jk-b000", None, "jk-b002"]
    assert _index(s3_client, s3_bucket) == {"QUEUED": {"jk-b000", "jk-b002"}}


def test_a_batch_naming_a_missing_job_answers_none_for_it(store: S3Store) -> None:
    store.create(_records(2))
    moved = store.transition_many(_queue(["jk-b000", "jk-nope", "jk-b001"]))
    assert [m.id if m else None for m in moved] == ["jk-b000", None, "jk-b001"]


def test_blobs_in_batches_cost_one_request_each_and_round_trip(store: S3Store) -> None:
    blobs = {f"payloads/jk-b{i:03d}": f"payload {i}".encode() for i in range(N)}
    counter = RequestCounter(store.client)
    store.put_blobs(blobs)
    assert counter.take() == {"PutObject": N}
    found = store.get_blobs([*blobs, "payloads/jk-absent"])
    assert counter.take() == {"GetObject": N + 1}
    assert found == {k: bytearray(v) for k, v in blobs.items()}
