"""The client's monitor reads what changed, not everything it watches: a local
map on S3 (moto over HTTP), its requests counted by the client's own boto3
client (the agent and its workers use their own).  The local agent pushes each
job's end, so the monitor reads a record when its job ended, and the
reconcile hands the backend the records it already holds: before, it re-read
every watched record on each reconcile (every ``poll_interval``)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Any

import helpers
import pytest

import jobkit
from jobkit.stores.s3 import S3Store

pytest_plugins = ["s3_fixtures"]

T = 120


class RecordReads:
    """GETs of job records (``<prefix>/jobs/<id>.json``) a boto3 client sends."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-parameter-build.s3", self._count)

    def _count(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        key = str(params.get("Key") or params.get("Prefix") or "")
        kind = "record" if "/jobs/" in key else "blob" if "/blobs/" in key else "index"
        self.calls[f"{operation}:{kind}"] += 1


@pytest.fixture
def client(s3_bucket: str) -> Iterator[Any]:
    settings = {"cpus": 2, "idle_timeout": 5}
    url = f"s3://{s3_bucket}/monitor"
    with jobkit.use(store=url, backend="local", local=settings, poll_interval=0.5) as client:
        try:
            yield client
        finally:
            if "local" in client._backends:
                client.backend("local").stop_agent()


def test_a_local_map_reads_each_record_about_once(client: Any) -> None:
    """20 items of 0.5 s on 2 slots (about 5 s); the old monitor re-read all
    20 records every 0.5 s (some 200 GETs)."""
    n = 20
    store = client.store
    while not isinstance(store, S3Store):
        store = store._store
    reads = RecordReads(store.client)
    jobs = jobkit.map(helpers.sleep_then, [0.5] * n)
    assert jobs.results(timeout=T) == [None] * n
    logging.getLogger(__name__).info("local map of %d on S3: %s", n, dict(reads.calls))
    # Each record: read when its end was pushed, and at most once more when a
    # result() call found it still running; a sweep reads the last 3 outright.
    assert reads.calls["GetObject:record"] <= 3 * n, reads.calls
    assert reads.calls["GetObject:blob"] <= n, reads.calls
