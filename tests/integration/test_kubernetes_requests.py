"""What the kubernetes backend and its client cost in requests, counted where
they arrive: the emulated Kubernetes API over real HTTP (its request log) and
the S3 store on moto (boto3's own request events).  Counts are deterministic
for a given scenario, so they are asserted as upper bounds; timings never are.

* A map's items move PENDING -> QUEUED in one batched ``transition_many``:
  no GET, 2 PUTs an item (the store wrote the records and knows their ETags).
* While a map runs, the client's monitor hands the backend the records it
  already knows: a record is read again when its pod says something changed,
  not on every reconcile (before: every active record every ``poll_interval``).
* A one-shot ``jobkit list`` asks for the pods and Jobs of the active jobs it
  shows, by their id labels, and opens no watch.
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import wait_for
from jobkit.stores.s3 import S3Store
from jobkit_testing.k8s_emulator.clients import NAMESPACE, kubernetes_client, on_kubernetes

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

T = 120


@pytest.fixture
def cluster(
    k8s_emulator: Any, k8s_controller: Any, s3_bucket: str, s3_endpoint: str
) -> Iterator[Any]:
    with on_kubernetes(k8s_emulator, f"s3://{s3_bucket}/k8s") as client:
        yield client


class RequestCounter:
    """The HTTP requests a boto3 client sends, by operation and by key kind."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-parameter-build.s3", self._count)

    def _count(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        key = str(params.get("Key") or params.get("Prefix") or "")
        kind = "record" if "/jobs/" in key else "blob" if "/blobs/" in key else "other"
        self.calls[f"{operation}:{kind}"] += 1
        self.calls[operation] += 1

    def take(self) -> dict[str, int]:
        counts = dict(self.calls)
        self.calls.clear()
        return counts


def s3_of(client: Any) -> S3Store:
    store = client.store
    while not isinstance(store, S3Store):
        store = store._store
    return store


def test_a_map_costs_requests_per_change_not_per_second(cluster: Any) -> None:
    """10 items of 4 s, all at once: the monitor reconciles every 0.2 s (the
    tests' poll_interval), which used to read every active record each time
    (about 300 GETs here); now a record is read when it changes."""
    n = 10
    counter = RequestCounter(s3_of(cluster).client)
    fn = jobkit.remote(helpers.sleep_then).options(kubernetes={"parallelism": n})
    jobs = fn.map([4.0] * n)
    submitted = counter.take()
    assert jobs.results(timeout=T) == [None] * n
    waited = counter.take()
    logging.getLogger(__name__).info("map of %d: submit %s; waiting %s", n, submitted, waited)
    # payload N + index keys 2N + records N (create), then QUEUED: 2 PUTs an item + 1 delete
    assert submitted.get("GetObject", 0) == 0, submitted
    assert submitted["PutObject"] <= 6 * n, submitted
    assert submitted.get("DeleteObjects", 0) <= 1 and "DeleteObject" not in submitted
    # Waiting: each record read when it ended (finished_among), at most once
    # more when its pod's end reached the monitor first and once per result()
    # that found it running; each outcome once.  The allowance on top: a sweep
    # reads up to 3 records outright instead of listing 3 indexes (S3Store.
    # finished_among), so the last few jobs are read on each sweep until they end.
    assert waited.get("GetObject:blob", 0) <= n, waited
    assert waited.get("GetObject:record", 0) <= 8 * n, waited


def test_a_one_shot_list_opens_no_watch_and_asks_only_for_active_jobs(
    cluster: Any, k8s_emulator: Any, tmp_path: Path, s3_bucket: str
) -> None:
    done = jobkit.submit(helpers.square, 3)
    assert done.result(timeout=T) == 9
    slow = jobkit.remote(helpers.sleep_then).options(kubernetes={"parallelism": 1})
    active = slow.map([60.0] * 3)
    try:
        settings = cluster.config.kubernetes
        (tmp_path / "jobkit.toml").write_text(
            "[kubernetes]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        )
        k8s_emulator.clear_requests()
        listed = subprocess.run(
            [sys.executable, "-m", "jobkit", "--store", f"s3://{s3_bucket}/k8s", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert listed.returncode == 0, listed.stderr
        assert all(job.id in listed.stdout for job in active)
        sent = k8s_emulator.requests()
        logging.getLogger(__name__).info("jobkit list: %s", [(r.verb, r.resource) for r in sent])
        assert not [r for r in sent if r.verb == "watch"], sent
        lists = [r for r in sent if r.verb == "list"]
        assert sorted(r.resource for r in lists) == ["jobs", "pods"], sent
        for request in lists:  # the map's labels only: not every jobkit pod of the namespace
            selector = request.params.get("labelSelector", "")
            assert active.id in selector and done.id not in selector, selector
        assert len(sent) <= 2, sent
    finally:
        active.cancel()


def test_a_client_that_keeps_asking_opens_the_watch(
    cluster: Any, k8s_emulator: Any, s3_bucket: str
) -> None:
    """The one-shot answer is for the first question only: a client that
    reattached to running jobs (its monitor asks every poll_interval) follows
    them through the watch, not through a LIST per question."""
    slow = jobkit.remote(helpers.sleep_then).options(kubernetes={"parallelism": 1})
    active = slow.map([60.0] * 2)
    try:
        k8s_emulator.clear_requests()  # the submitting client's watch is already open
        settings = {"api_server": k8s_emulator.url, "namespace": NAMESPACE}
        with kubernetes_client(f"s3://{s3_bucket}/k8s", **settings):
            again = jobkit.get(active.id)
            assert len(again) == 2
            wait_for(lambda: k8s_emulator.requests("watch"), timeout=T)
            lists = k8s_emulator.requests("list")
        assert {r.resource for r in k8s_emulator.requests("watch")} <= {"jobs", "pods"}
        assert len(lists) <= 4, lists  # a one-shot pair, then the watch's own pair
    finally:
        active.cancel()
