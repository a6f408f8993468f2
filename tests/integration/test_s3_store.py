"""The S3 store against a moto server over real HTTP: layout, compare-and-set
across processes, request counts of listing, blobs, and every error path.

The conformance suite (``tests/conformance``) checks the behaviour every store
shares; this module checks what is particular to S3.
"""

from __future__ import annotations

import collections
import http.server
import json
import logging
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobkit.errors import ConfigError, JobNotFoundError, StoreError, StoreUnavailableError
from jobkit.states import TERMINAL_STATES, JobRecord, JobRow, JobState
from jobkit.stores import open_store
from jobkit.stores.s3 import S3Store, parse_url

pytest_plugins = ["s3_fixtures"]

PREFIX = "team/jobs"


def record(job_id: str, **fields: Any) -> JobRecord:
    values: dict[str, Any] = {"name": "job", "backend": "local", "created_at": 1000.0}
    values.update(fields)
    return JobRecord(id=job_id, **values)


@pytest.fixture
def store(s3_bucket: str) -> Iterator[S3Store]:
    store = open_store(f"s3://{s3_bucket}/{PREFIX}")
    assert isinstance(store, S3Store)
    yield store
    store.close()


def keys_under(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


class RequestCounter:
    """Counts the HTTP requests a boto3 client sends, by operation (retries included)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> dict[str, int]:
        """The counts since the last take."""
        counts = dict(self.calls)
        self.calls.clear()
        return counts


# -- the service -----------------------------------------------------------------------


def test_the_server_honours_conditional_writes_over_http(s3_client: Any, s3_bucket: str) -> None:
    """What the store's compare-and-set relies on: moto 5.2 answers 412 to both headers."""
    first = s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(s3_client.exceptions.ClientError) as info:
        s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    second = s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"3", IfMatch=first["ETag"])
    with pytest.raises(s3_client.exceptions.ClientError) as info:
        s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"4", IfMatch=first["ETag"])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    body = s3_client.get_object(Bucket=s3_bucket, Key="k", IfMatch=second["ETag"])["Body"]
    assert body.read() == b"3"


# -- URLs --------------------------------------------------------------------------------


def test_urls_give_bucket_prefix_and_options() -> None:
    assert parse_url("s3://my-bucket")[:2] == ("my-bucket", "")
    assert parse_url("s3://my-bucket/a/b/")[:2] == ("my-bucket", "a/b")
    bucket, prefix, options = parse_url(
        "s3://my.bucket//x?endpoint_url=http://minio:9000&region=eu-west-1&addressing_style=path"
        "&max_attempts=2&connect_timeout=0.5"
    )
    assert (bucket, prefix) == ("my.bucket", "x")
    assert options.endpoint_url == "http://minio:9000"
    assert (options.region, options.addressing_style) == ("eu-west-1", "path")
    assert (options.max_attempts, options.connect_timeout) == (2, 0.5)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://", "names no bucket"),
        ("s3://B", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", r"'\.' or '\.\.'"),
        ("s3://bucket?colour=blue", "unknown parameter 'colour'; known: endpoint_url"),
        ("s3://bucket?max_attempts=0", "max_attempts must be a positive whole number"),
        ("s3://bucket?connect_timeout=soon", "connect_timeout must be a positive number"),
        ("s3://bucket?addressing_style=sideways", "auto, path or virtual"),
        ("s3://bucket#top", "no fragment"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:s3cr3t@bucket/jobs",
        "s3://bucket/jobs?aws_secret_access_key=s3cr3t",
        "s3://bucket/jobs?endpoint_url=http://minio:s3cr3t@localhost:9000",
        "s3://BAD?connect_timeout=soon&secret_key=s3cr3t",  # refused before other problems
    ],
)
def test_credentials_in_the_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError, match="never put credentials in the store URL") as info:
        open_store(url)
    assert "s3cr3t" not in str(info.value)


def test_store_url_is_canonical_and_carries_options(s3_endpoint: str) -> None:
    store = open_store("s3://bucket//jobs/?region=eu-west-1&connect_timeout=5")
    assert store.url == "s3://bucket/jobs?region=eu-west-1"  # 5 s is the default
    assert open_store(store.url).url == store.url
    assert store.local_dir is None and store.shared_across_processes
    assert store.sweep_interval == 1.0


# -- layout ------------------------------------------------------------------------------


def test_records_index_and_blobs_live_under_the_prefix(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    job = record("jk-1", state=JobState.QUEUED, array_id="arr-1", array_index=0)
    store.create([job])
    store.put_blob("payloads/jk-1", [b"pay", b"load"])
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/jobs/jk-1.json")
    assert json.loads(body["Body"].read()) == job.to_dict()
    assert body["Metadata"] == {"jobkit-gen": "0"}
    keys = keys_under(s3_client, s3_bucket, PREFIX)
    time_token = "3f70bfffffffffff"  # 1000.0, newest first
    assert sorted(keys) == [
        f"{PREFIX}/blobs/payloads/jk-1",
        f"{PREFIX}/index/QUEUED/{time_token}/0/local/job/jk-1/~~~",
        f"{PREFIX}/index/array/arr-1/{time_token}/jk-1",
        f"{PREFIX}/jobs/jk-1.json",
    ]
    store.transition("jk-1", JobState.RUNNING, host="node-1")
    store.update("jk-1", message="halfway")  # no indexed field changed: same index key
    store.transition("jk-1", JobState.SUCCEEDED)
    index = [k for k in keys_under(s3_client, s3_bucket, PREFIX) if "/index/" in k]
    assert sorted(index) == [
        f"{PREFIX}/index/SUCCEEDED/{time_token}/2/local/job/jk-1/~~~node-1",
        f"{PREFIX}/index/array/arr-1/{time_token}/jk-1",
    ]
    assert store.delete(["jk-1"]) == 1
    assert keys_under(s3_client, s3_bucket, PREFIX) == []


def test_one_url_on_two_endpoints_is_two_stores(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local agent is shared by store identity: the URL alone would mix them up."""
    here = open_store("s3://bucket/jobs")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    there = open_store("s3://bucket/jobs")
    assert here.url == there.url
    assert here.identity != there.identity
    assert there.identity.endswith("at http://127.0.0.1:1")


def test_ids_with_slashes_stay_one_key_segment(store: S3Store) -> None:
    odd = record("team/run 1", backend="my/backend", state=JobState.RUNNING)
    store.create([odd])
    assert store.get(odd.id) == odd
    assert store.query(states=[JobState.RUNNING], backend="my/backend") == [odd]
    store.transition(odd.id, JobState.FAILED)
    assert [r.id for r in store.query(states=[JobState.FAILED])] == [odd.id]


def test_create_refuses_an_id_another_store_created(s3_bucket: str, store: S3Store) -> None:
    other = open_store(f"s3://{s3_bucket}/{PREFIX}")
    other.create([record("jk-taken", name="first")])
    with pytest.raises(StoreError, match=r"already exist.*jk-taken"):
        store.create([record("jk-new"), record("jk-taken", name="second", backend="slurm")])
    assert store.get("jk-taken").name == "first"
    assert store.get_many(["jk-new"]) == {}
    assert [r.id for r in store.query()] == ["jk-taken"]  # no stray index entry of "second"
    assert store.query(backend="slurm") == []
    other.close()


def test_stale_index_keys_never_show_a_job_twice_or_in_a_wrong_state(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    """What a writer that crashed between its index and record writes leaves behind."""
    store.create([record("jk-a", state=JobState.RUNNING), record("jk-b", created_at=999.0)])
    store.transition("jk-a", JobState.SUCCEEDED)
    time_token = "3f70bfffffffffff"
    for leftover in (
        f"{PREFIX}/index/RUNNING/{time_token}/0/local/job/jk-a",  # old key, not deleted
        f"{PREFIX}/index/FAILED/{time_token}/7/local/job/jk-a",  # a move that never happened
        f"{PREFIX}/index/QUEUED/{time_token}/0/local/job/jk-gone",  # a job since deleted
        f"{PREFIX}/index/QUEUED/not-a-time/0/local/job/jk-x",  # not ours at all
    ):
        s3_client.put_object(Bucket=s3_bucket, Key=leftover, Body=b"")
    assert [r.id for r in store.query()] == ["jk-a", "jk-b"]
    assert store.query(states=[JobState.RUNNING, JobState.FAILED, JobState.QUEUED]) == []
    assert [r.id for r in store.query(states=[JobState.SUCCEEDED])] == ["jk-a"]


# -- compare-and-set across processes ------------------------------------------------------


def _race(url: str, ids: list[str], worker: int, start: Any, out: Any) -> None:
    """One writer: try to finish every job, each worker with its own terminal state."""
    store = open_store(url)
    target = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED][worker % 3]
    start.wait()
    won = []
    for job_id in ids:
        if store.transition(job_id, target, pid=worker, message=f"by {worker}") is not None:
            won.append(job_id)
    out.put((worker, won))
    store.close()


def _annotate(url: str, ids: list[str], start: Any, out: Any) -> None:
    """A writer that only sets a field, racing the ones that finish the jobs."""
    store = open_store(url)
    start.wait()
    for job_id in ids:
        store.update(job_id, host="annotated")
    out.put(("annotator", ids))
    store.close()


def test_processes_racing_terminal_transitions_have_one_winner_each(
    store: S3Store, s3_client: Any, s3_bucket: str
) -> None:
    ids = [f"jk-race-{i:03d}" for i in range(40)]
    store.create(
        [record(i, state=JobState.RUNNING, created_at=1000.0 + n) for n, i in enumerate(ids)]
    )
    ctx = multiprocessing.get_context("spawn")  # the moto server runs on a thread here
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_race, args=(store.url, ids, w, start, out)) for w in range(4)]
    workers.append(ctx.Process(target=_annotate, args=(store.url, ids, start, out)))
    for process in workers:
        process.start()
    time.sleep(0.5)  # let them import and open their stores
    start.set()
    results = dict(out.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    wins = collections.Counter(job for w, won in results.items() if w != "annotator" for job in won)
    assert wins == dict.fromkeys(ids, 1), "every job has exactly one winner"
    records = store.get_many(ids)
    for worker, won in results.items():
        if worker == "annotator":
            continue
        for job_id in won:  # the winner's fields, and nobody else's, are on the record
            assert (records[job_id].pid, records[job_id].message) == (worker, f"by {worker}")
    # the annotator's update was never lost, and never undid a finished state
    assert all(r.host == "annotated" and r.state in TERMINAL_STATES for r in records.values())
    # exactly one index key per job: losers removed the keys of moves that did not happen
    index = keys_under(s3_client, s3_bucket, f"{PREFIX}/index/")
    assert len(index) == len(ids)
    listed = [r.id for s in TERMINAL_STATES for r in store.query(states=[s])]
    assert sorted(listed) == ids


# -- listing cost --------------------------------------------------------------------------


def _fill(store: S3Store, count: int, offset: int = 0) -> None:
    states = [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.QUEUED]
    store.create(
        [
            record(
                f"jk-{offset + i:05d}",
                name=f"train-{i}" if i % 10 == 0 else f"eval-{i}",
                backend="slurm" if i % 2 else "local",
                state=states[i % len(states)],
                created_at=1_700_000_000.0 + offset + i,
            )
            for i in range(count)
        ]
    )


def test_first_page_costs_the_same_on_a_bigger_store(store: S3Store) -> None:
    counter = RequestCounter(store.client)
    pages = {}
    for size, offset in ((200, 0), (200, 200)):  # 200 jobs, then 400
        _fill(store, size, offset)
        counter.take()
        running = store.query(states=[JobState.RUNNING], limit=50)
        by_state = counter.take()
        everything = store.query(limit=50)
        unfiltered = counter.take()
        local = store.query(states=[JobState.RUNNING, JobState.QUEUED], backend="local", limit=50)
        filtered = counter.take()
        assert [r.state for r in running] == [JobState.RUNNING] * 50
        assert [r.created_at for r in everything] == sorted(
            (r.created_at for r in everything), reverse=True
        )
        assert everything[0].id == f"jk-{offset + size - 1:05d}"  # the newest job
        assert all(r.backend == "local" for r in local) and len(local) == 50
        pages[size + offset] = (by_state, unfiltered, filtered)
    for by_state, unfiltered, filtered in pages.values():
        assert by_state == {"ListObjectsV2": 1, "GetObject": 50}
        assert unfiltered == {"ListObjectsV2": 6, "GetObject": 50}
        assert filtered["GetObject"] == 50 and filtered["ListObjectsV2"] <= 4
    assert pages[200] == pages[400]
    logging.getLogger(__name__).info("first page of 50: %s", pages)


def test_a_page_of_the_job_list_is_read_from_index_keys_alone(store: S3Store) -> None:
    _fill(store, 400)
    store.transition("jk-00399", JobState.RUNNING, host="h" * 500)  # the key cannot hold it
    counter = RequestCounter(store.client)
    page = store.rows(limit=50)
    assert counter.take() == {"ListObjectsV2": 6, "GetObject": 1}  # only the long host
    assert page == [JobRow.of(r) for r in store.query(limit=50)]
    counter.take()
    assert len(store.rows(states=[JobState.SUCCEEDED], limit=50)) == 50
    assert counter.take() == {"ListObjectsV2": 1}
    assert len(store.rows(name="train-*", backend="local", limit=20)) == 20
    assert counter.take() == {"ListObjectsV2": 6}


def test_a_job_lifecycle_is_a_small_constant_number_of_requests(store: S3Store) -> None:
    counter = RequestCounter(store.client)
    job = record("jk-life")
    steps = {
        "create": lambda: store.create([job]),
        "payload": lambda: store.put_blob("payloads/jk-life", [b"x" * 1000, b"y"]),
        "queued": lambda: store.transition("jk-life", JobState.QUEUED, backend_id="42"),
        "running": lambda: store.transition("jk-life", JobState.RUNNING, host="n1"),
        "outcome": lambda: store.put_blob("outcomes/jk-life", b"result"),
        "succeeded": lambda: store.transition("jk-life", JobState.SUCCEEDED, exit_code=0),
        "finished?": lambda: store.finished_among(["jk-life"]),
        "result": lambda: store.get_blob("outcomes/jk-life"),
    }
    cost = {}
    for step, call in steps.items():
        call()
        cost[step] = counter.take()
    assert cost["create"] == {"PutObject": 2}  # index key, then the record
    assert cost["payload"] == cost["outcome"] == {"PutObject": 1}
    for step in ("queued", "running", "succeeded"):  # GET, new index key, record, old key
        assert cost[step] == {"GetObject": 1, "PutObject": 2, "DeleteObject": 1}
    assert cost["finished?"] == cost["result"] == {"GetObject": 1}
    total = sum(n for c in cost.values() for n in c.values())
    assert total == 18


def test_watching_running_jobs_costs_a_list_per_final_state_not_a_read_per_job(
    store: S3Store,
) -> None:
    _fill(store, 300)  # jk-00000 .. jk-00299, one second apart, states in rotation
    watched = [f"jk-{i:05d}" for i in range(200, 300)]  # a client's last 100 jobs
    since = 1_700_000_200.0
    expected = {i: r for i, r in store.get_many(watched).items() if r.state in TERMINAL_STATES}
    counter = RequestCounter(store.client)
    found = store.finished_among(watched, since=since)
    assert found == expected and 0 < len(found) < 100
    assert counter.take() == {"ListObjectsV2": 3, "GetObject": len(found)}

    assert store.finished_among(watched) == expected  # no hint: a read per job
    assert counter.take() == {"GetObject": 100}

    few = watched[:3]
    assert store.finished_among(few, since=since) == {i: expected[i] for i in few if i in expected}
    assert counter.take() == {"GetObject": 3}  # three reads beat three listings


def test_watching_reads_records_when_listing_would_cost_more(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobkit.stores.s3.listing as listing

    _fill(store, 300)
    monkeypatch.setattr(listing, "LIST_PAGE", 10)  # pages of 10 keys: listing is dear
    watched = [f"jk-{i:05d}" for i in (0, 1, 2, 3, 299)]  # the oldest: all 300 are "since"
    expected = {i: r for i, r in store.get_many(watched).items() if r.state in TERMINAL_STATES}
    counter = RequestCounter(store.client)
    assert store.finished_among(watched, since=1_700_000_000.0) == expected
    cost = counter.take()
    assert cost["ListObjectsV2"] == 5 and cost["GetObject"] == 5  # gave up listing


def test_filters_are_judged_on_index_keys_before_any_read(store: S3Store) -> None:
    _fill(store, 120)
    counter = RequestCounter(store.client)
    trains = store.query(name="train-*", limit=5)
    assert [r.name for r in trains] == [
        "train-110",
        "train-100",
        "train-90",
        "train-80",
        "train-70",
    ]
    assert counter.take() == {"ListObjectsV2": 6, "GetObject": 5}
    slurm = store.query(backend="slurm", states=[JobState.QUEUED], limit=3)
    assert [r.id for r in slurm] == ["jk-00119", "jk-00115", "jk-00111"]
    assert counter.take() == {"ListObjectsV2": 1, "GetObject": 3}
    before = store.query(created_before=1_700_000_010.0, states=[JobState.RUNNING], limit=2)
    assert [r.id for r in before] == ["jk-00008", "jk-00004"]
    assert counter.take() == {"ListObjectsV2": 1, "GetObject": 2}  # StartAfter skips the newer
    oldest = store.query(states=[JobState.RUNNING], oldest_first=True, limit=3)
    assert [r.id for r in oldest] == ["jk-00000", "jk-00004", "jk-00008"]
    assert counter.take() == {"ListObjectsV2": 1, "GetObject": 3}  # all 30 keys in one page


def test_long_names_and_renames_stay_findable(store: S3Store) -> None:
    long_name = "train-" + "x" * 300
    store.create([record("jk-long", name=long_name), record("jk-short", name="train-1")])
    counter = RequestCounter(store.client)
    assert [r.id for r in store.query(name="train-*")] == ["jk-short", "jk-long"]
    assert counter.take()["GetObject"] == 2  # the long name is read to be judged
    store.update("jk-short", name="eval-1")  # the name is in the key: a new generation
    assert [r.id for r in store.query(name="eval-*")] == ["jk-short"]
    assert [r.id for r in store.query(name="train-*")] == ["jk-long"]


# -- blobs ---------------------------------------------------------------------------------


def test_large_blobs_go_up_in_parallel_parts_from_the_callers_buffers(store: S3Store) -> None:
    store.multipart_threshold = 6 * 1024 * 1024
    store.multipart_part_size = 5 * 1024 * 1024
    chunks = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(4)]  # ~12 MiB in 4 buffers
    counter = RequestCounter(store.client)
    store.put_blob("outcomes/big", [memoryview(c) for c in chunks])
    cost = counter.take()
    assert cost == {"CreateMultipartUpload": 1, "UploadPart": 3, "CompleteMultipartUpload": 1}
    blob = store.get_blob("outcomes/big")
    assert isinstance(blob, bytearray) and blob == b"".join(chunks)
    store.put_blob("outcomes/big", b"small again")
    assert store.get_blob("outcomes/big") == b"small again"


# -- errors --------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_missing_bucket_names_it_and_how_to_create_it(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket/jobs")
    for call in (
        lambda: store.get("jk-1"),
        lambda: store.create([record("jk-1")]),
        lambda: store.query(limit=5),
        lambda: store.put_blob("payloads/jk-1", b"x"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        text = one_line(info.value)
        assert "'no-such-bucket' does not exist" in text
        assert "aws s3 mb s3://no-such-bucket" in text


def test_no_credentials_say_where_to_put_them(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"s3://{s3_bucket}/jobs")
    with pytest.raises(ConfigError) as info:
        store.get("jk-1")
    text = one_line(info.value)
    assert f"s3://{s3_bucket}/jobs/jobs/jk-1.json" in text
    assert "AWS_ACCESS_KEY_ID" in text and "AWS_PROFILE" in text


def test_refused_and_denied_credentials_name_the_key_and_the_permissions(
    s3_bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import moto.settings

    iam = boto3.client("iam", endpoint_url=s3_endpoint)
    iam.create_user(UserName="no-s3")
    key = iam.create_access_key(UserName="no-s3")["AccessKey"]
    iam.close()
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks IAM now
    unknown = open_store(f"s3://{s3_bucket}/jobs")  # "testing" is no IAM user's key
    with pytest.raises(ConfigError, match="credentials were refused") as info:
        unknown.get("jk-1")
    assert "InvalidAccessKeyId" in one_line(info.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    denied = open_store(f"s3://{s3_bucket}/jobs")
    with pytest.raises(ConfigError) as info:
        denied.put_blob("payloads/jk-1", b"x")
    text = one_line(info.value)
    assert f"access denied to write blob s3://{s3_bucket}/jobs/blobs/payloads/jk-1" in text
    assert "s3:PutObject" in text
    assert key["SecretAccessKey"] not in text


def test_a_transition_that_cannot_tidy_its_old_key_still_succeeds(
    s3_bucket: str,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials without s3:DeleteObject: the move happens; the old key stays behind."""
    import boto3
    import moto.settings

    open_store(f"s3://{s3_bucket}/jobs").create([record("jk-1", state=JobState.RUNNING)])
    iam = boto3.client("iam", endpoint_url=s3_endpoint)
    iam.create_user(UserName="no-delete")
    allowed = ["s3:GetObject", "s3:PutObject", "s3:ListBucket"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="no-delete", PolicyName="no-delete", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName="no-delete")["AccessKey"]
    iam.close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    store = open_store(f"s3://{s3_bucket}/jobs")
    with caplog.at_level(logging.WARNING, logger="jobkit.stores.s3"):
        done = store.transition("jk-1", JobState.SUCCEEDED)
    assert done is not None and store.get("jk-1").state is JobState.SUCCEEDED
    assert "left 1 stale index key(s) behind" in caplog.text
    # (moto's signature check fails ListObjectsV2 under IAM users: list with auth off)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    assert store.query(states=[JobState.RUNNING]) == []
    assert [r.id for r in store.query(states=[JobState.SUCCEEDED])] == ["jk-1"]


def test_unreachable_endpoint_fails_fast_naming_it(s3_endpoint: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    store = open_store(
        f"s3://bucket/jobs?endpoint_url=http://127.0.0.1:{port}&max_attempts=1&connect_timeout=1"
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:  # what workers retry
        store.query(states=[JobState.RUNNING], limit=5)
    assert time.monotonic() - started < 10
    text = one_line(info.value)
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in text
    assert "s3://bucket/jobs/index/RUNNING/" in text and "AWS_ENDPOINT_URL" in text


class _SlowDown(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint under load: every request answered 503 SlowDown, as AWS does."""

    def _answer(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>"
        )
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_throttling_and_server_errors_are_marked_retryable(s3_endpoint: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        store = open_store(f"s3://bucket/jobs?endpoint_url=http://127.0.0.1:{port}&max_attempts=1")
        with pytest.raises(StoreUnavailableError) as info:
            store.get("jk-1")
    finally:
        server.shutdown()
    text = one_line(info.value)
    assert "S3 could not read job record s3://bucket/jobs/jobs/jk-1.json just now" in text
    assert "SlowDown, HTTP 503: Please reduce your request rate." in text


def test_corrupted_record_raises_on_get_and_is_skipped_by_listings(
    store: S3Store, s3_client: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    store.create([record("jk-bad", created_at=2000.0), record("jk-good")])
    key = f"{PREFIX}/jobs/jk-bad.json"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"{not json")
    with pytest.raises(StoreError) as info:
        store.get("jk-bad")
    text = one_line(info.value)
    assert f"corrupted job record 'jk-bad' at s3://{s3_bucket}/{key}: not JSON" in text
    assert "jobkit prune --corrupted" in text
    with caplog.at_level(logging.WARNING, logger="jobkit.stores.s3"):
        assert [r.id for r in store.query()] == ["jk-good"]
        assert [r.id for r in store.query()] == ["jk-good"]
        assert set(store.get_many(["jk-bad", "jk-good"])) == {"jk-good"}
    assert len([r for r in caplog.records if "jk-bad" in r.getMessage()]) == 1  # warned once
    with pytest.raises(StoreError, match="corrupted"):
        store.transition("jk-bad", JobState.CANCELLED)
    s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/jobs/jk-list.json", Body=b"[1, 2]")
    problems = store.find_corrupted()
    assert set(problems) == {"jk-bad", "jk-list"}
    assert "a JSON list, not an object" in problems["jk-list"]
    assert store.delete(["jk-bad", "jk-list"]) == 2
    assert store.find_corrupted() == {}
    with pytest.raises(JobNotFoundError):
        store.get("jk-bad")
