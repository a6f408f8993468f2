"""``jobkit store copy``: real jobs moved from SQLite to S3 over HTTP (moto) and back.

A copied job must be a job again in its new store: found by id, its result
read back, its exception re-raised, from a client that only knows the new
store.  The CLI runs as a real subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from conftest import local_env
from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import Store, outcome_key, payload_key

pytest_plugins = ["s3_fixtures"]


def square(x: int) -> int:
    return x * x


class Boom(ValueError):
    pass


def explode(text: str) -> None:
    raise Boom(text)


def copy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", "store", "copy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def every_record(store: Store) -> dict[str, JobRecord]:
    return {r.id: r for r in store.query()}


@pytest.fixture
def history(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A SQLite store holding real finished jobs: results, an exception, an array."""
    with local_env(tmp_path / "laptop") as client:
        one = jobkit.remote(square).submit(7)
        bad = jobkit.remote(explode).submit("kaput")
        array = jobkit.remote(square).map(range(4))
        assert one.result(timeout=60) == 49
        with pytest.raises(Boom):
            bad.result(timeout=60)
        assert array.results(timeout=60) == [0, 1, 4, 9]
        ids = {"one": one.id, "bad": bad.id, "array": array.id}
        yield client.store.url, ids


def test_sqlite_to_s3_and_back_loses_nothing(
    history: tuple[str, dict[str, Any]], s3_bucket: str, tmp_path: Path
) -> None:
    sqlite_url, ids = history
    s3_url = f"s3://{s3_bucket}/moved"
    first = copy_cli(sqlite_url, s3_url)
    assert first.returncode == 0, first.stderr
    assert "copied 6 job(s), updated 0, 0 already there" in first.stdout

    source, target = open_store(sqlite_url), open_store(s3_url)
    assert every_record(target) == every_record(source)
    for job_id in every_record(source):
        assert target.get_blob(payload_key(job_id)) == source.get_blob(payload_key(job_id))
        assert target.get_blob(outcome_key(job_id)) == source.get_blob(outcome_key(job_id))

    # A process that only knows the bucket finds the jobs again and reads them.
    with jobkit.use(store=s3_url):
        assert jobkit.get(ids["one"]).result(timeout=10) == 49
        with pytest.raises(Boom, match="kaput"):
            jobkit.get(ids["bad"]).result(timeout=10)
        assert jobkit.get(ids["array"]).results(timeout=10) == [0, 1, 4, 9]

    again = copy_cli(sqlite_url, s3_url, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["copied"], report["unchanged"], report["complete"]) == ([], 6, True)

    back = f"sqlite:///{tmp_path}/back.db"
    assert copy_cli(s3_url, back).returncode == 0
    assert every_record(open_store(back)) == every_record(source)


def test_a_job_copied_while_running_is_brought_up_to_date(tmp_path: Path) -> None:
    source = open_store(f"sqlite:///{tmp_path}/a.db")
    target = open_store(f"sqlite:///{tmp_path}/b.db")
    source.create([JobRecord(id="jk-run", name="train", backend="slurm", created_at=5.0)])
    source.transition("jk-run", JobState.RUNNING, host="node1", started_at=6.0)
    source.put_blob(payload_key("jk-run"), b"payload")
    first = copy_cli(source.url, target.url, "--json")
    report = json.loads(first.stdout)
    assert report["copied"] == ["jk-run"] and report["active"] == ["jk-run"]
    assert target.get("jk-run").state is JobState.RUNNING

    source.put_blob(outcome_key("jk-run"), b"outcome")
    source.transition("jk-run", JobState.SUCCEEDED, finished_at=9.0, exit_code=0)
    second = copy_cli(source.url, target.url)
    assert second.returncode == 0, second.stderr
    assert "copied 0 job(s), updated 1, 0 already there" in second.stdout
    assert target.get("jk-run") == source.get("jk-run")
    assert target.get_blob(outcome_key("jk-run")) == b"outcome"


def test_two_histories_of_one_id_are_reported_never_overwritten(tmp_path: Path) -> None:
    source = open_store(f"sqlite:///{tmp_path}/a.db")
    target = open_store(f"sqlite:///{tmp_path}/b.db")
    for store, final in ((source, JobState.SUCCEEDED), (target, JobState.CANCELLED)):
        store.create([JobRecord(id="jk-twin", name="x", backend="local", created_at=1.0)])
        store.transition("jk-twin", final)
    source.create([JobRecord(id="jk-other", name="y", backend="local", created_at=2.0)])
    kept = target.get("jk-twin")

    result = copy_cli(source.url, target.url)
    assert result.returncode == 1
    assert "1 conflict(s), left as they are:" in result.stderr
    assert "jk-twin: the destination holds it as CANCELLED" in result.stderr
    assert target.get("jk-twin") == kept
    assert target.get("jk-other") == source.get("jk-other")  # the rest was copied


def test_an_unreadable_source_record_is_named_and_the_rest_copied(
    s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    source = open_store(f"s3://{s3_bucket}/src")
    source.create(
        [JobRecord(id=f"jk-{i}", name="x", backend="local", created_at=i) for i in (1, 2)]
    )
    s3_client.put_object(Bucket=s3_bucket, Key="src/jobs/jk-2.json", Body=b"{not json")
    target_url = f"sqlite:///{tmp_path}/b.db"

    result = copy_cli(source.url, target_url, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["copied"] == ["jk-1"]
    assert list(report["failed"]) == ["jk-2"]
    assert "unreadable in the source: corrupted job record 'jk-2'" in report["failed"]["jk-2"]


def test_dry_run_writes_nothing(history: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    sqlite_url, _ = history
    target = f"sqlite:///{tmp_path}/b.db"
    result = copy_cli(sqlite_url, target, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would copy 6 job(s)" in result.stdout
    assert open_store(target).query() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sqlite:///{tmp}/a.db", "sqlite:///{tmp}/a.db"), "source and destination are the same"),
        (("ftp://host/x", "sqlite:///{tmp}/b.db"), "store URL 'ftp://host/x': unknown scheme"),
        (("sqlite:///{tmp}/a.db",), "Missing argument 'DST'"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    source = open_store(f"sqlite:///{tmp_path}/a.db")
    source.create([JobRecord(id="jk-1", name="x", backend="local", created_at=1.0)])
    result = copy_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert [r.id for r in source.query()] == ["jk-1"]
    assert not (tmp_path / "b.db").exists()
