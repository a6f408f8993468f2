"""Real jobs whose store is S3 over HTTP (moto): the local agent and a Slurm job
read payloads and write outcomes in the bucket; another process finds them by id.

This is the store's purpose: every machine of a cluster reaches the bucket.
Credentials and the endpoint reach workers through the standard boto3 chain
(``AWS_*`` variables inherited by the agent and by ``sbatch``), never in the URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import helpers
import pytest

import jobkit
from jobkit.states import JobState

pytest_plugins = ["s3_fixtures"]

T = 120


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/team"


@pytest.fixture
def on_s3_locally(s3_url: str) -> Iterator[Any]:
    with jobkit.use(store=s3_url, backend="local", local={"cpus": 2, "idle_timeout": 5}) as client:
        try:
            yield client
        finally:
            if "local" in client._backends:
                client.backend("local").stop_agent()


def test_local_jobs_round_trip_through_the_bucket(on_s3_locally: Any, s3_url: str) -> None:
    job = jobkit.submit(helpers.square, 12)
    bad = jobkit.submit(helpers.fail_with, 5)
    array = jobkit.map(helpers.square, range(5))
    assert job.result(timeout=T) == 144
    with pytest.raises(helpers.CustomError) as info:
        bad.result(timeout=T)
    assert info.value.code == 5
    assert array.results(timeout=T) == [0, 1, 4, 9, 16]
    assert job.info.state is JobState.SUCCEEDED and job.info.host

    # Another process that knows only the bucket: the CLI.
    shown = cli(s3_url, "result", job.id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == 144
    listed = cli(s3_url, "list", "--json", "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [
        f"{array.id}.4",
        f"{array.id}.3",
        f"{array.id}.2",
    ]
    failed = cli(s3_url, "status", bad.id, "--json")
    assert json.loads(failed.stdout)["failure_reason"] == "ERROR"


def test_slurm_jobs_read_and_write_the_bucket(
    slurm_cluster: str, s3_url: str, tmp_path: Any
) -> None:
    with jobkit.use(store=s3_url, backend="slurm", poll_interval=0.5):
        array = jobkit.map(helpers.square, range(4))
        bad = jobkit.submit(helpers.fail_with, 7)
        assert array.results(timeout=T) == [0, 1, 4, 9]
        with pytest.raises(helpers.CustomError):
            bad.result(timeout=T)
        assert {j.info.backend for j in array} == {"slurm"}
    found = cli(s3_url, "result", f"{array.id}.3", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == 9


def test_an_agent_leaves_other_machines_local_jobs_alone(on_s3_locally: Any) -> None:
    """Two laptops, one bucket: each agent runs only the local jobs submitted on its machine."""
    import time

    from jobkit.serialization import Call, dump_payload
    from jobkit.states import JobRecord
    from jobkit.stores.base import payload_key

    store = on_s3_locally.store
    theirs = JobRecord(
        id="jk-elsewhere",
        name="theirs",
        backend="local",
        created_at=time.time() - 5,
        resources={"cpus": 1},
        extra={"machine": "another-laptop"},
    )
    payload = dump_payload(
        Call(fn=helpers.square, args=(3,), kwargs={}), key=on_s3_locally.key, job_id=theirs.id
    )
    store.put_blob(payload_key(theirs.id), payload)
    unowned = dataclasses.replace(theirs, id="jk-unowned", extra={})  # made before "machine"
    store.create([theirs, unowned])

    ours = jobkit.submit(helpers.square, 4)
    assert ours.result(timeout=T) == 16
    assert ours.info.extra["machine"] == os.uname().nodename
    time.sleep(1.5)  # a few agent rescans
    assert store.get(theirs.id).state is JobState.PENDING  # not claimed, not run here
    assert store.get(unowned.id).state is JobState.PENDING  # a shared store: no one's
    with pytest.raises(TimeoutError):
        jobkit.get(theirs.id).result(timeout=1)
    assert store.get(theirs.id).state is JobState.PENDING


def test_a_corrupted_result_object_is_named_and_never_unpickled(
    on_s3_locally: Any, s3_url: str, s3_client: Any, s3_bucket: str
) -> None:
    job = jobkit.submit(helpers.square, 5)
    assert job.result(timeout=T) == 25
    key = f"team/blobs/outcomes/{job.id}"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"JKB1" + b"\0" * 64)
    shown = cli(s3_url, "result", job.id)
    assert shown.returncode == 1
    (line,) = shown.stderr.strip().splitlines()
    assert f"outcome of job {job.id} has a bad signature" in line
    assert f"(stored at s3://{s3_bucket}/{key})" in line
