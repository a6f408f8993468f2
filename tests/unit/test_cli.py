"""The ``jobkit`` command line against real SQLite stores.

Most cases run in-process through typer's ``CliRunner`` on a store filled
directly with ``open_store(...).create(...)`` (and signed outcome blobs for
``result``), so they take milliseconds; a few run the installed ``jobkit``
console script to check real exit codes and that no traceback ever reaches
stderr, and one submits real local jobs end to end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from child_signals import reap, with_default_signals
from jobkit.cli.app import app
from jobkit.serialization import dump_outcome
from jobkit.signing import load_key
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import Store, outcome_key, payload_key

NOW = time.time()
DAY = 86400.0


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private jobkit home and store for one test; returns the tmp directory."""
    monkeypatch.setenv("JOBKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBKIT_STORE", f"sqlite:///{tmp_path}/jobkit.db")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JOBKIT_PROFILE", raising=False)
    monkeypatch.delenv("JOBKIT_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)  # no project jobkit.toml above us
    return tmp_path


@pytest.fixture
def store(env: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{env}/jobkit.db")
    yield opened
    opened.close()


def rec(job_id: str, state: JobState = JobState.SUCCEEDED, **fields: Any) -> JobRecord:
    """A record as a backend would leave it; ``age`` is days since creation."""
    age = fields.pop("age", 0.0)
    created = fields.pop("created_at", NOW - age * DAY - 1)
    values: dict[str, Any] = {
        "name": "train",
        "backend": "local",
        "state": state,
        "created_at": created,
        "owner": "me",
        "host": "node1",
    }
    if state is not JobState.PENDING and state is not JobState.QUEUED:
        values["started_at"] = created + 1
    if state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        values["finished_at"] = created + 3
    values.update(fields)
    return JobRecord(id=job_id, **values)


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def one_error_line(result: Any) -> str:
    """The single ``Error: ...`` line a failing command must print on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return str(lines[0])


def put_outcome(store: Store, job_id: str, **outcome: Any) -> None:
    store.put_blob(outcome_key(job_id), dump_outcome(key=load_key(), job_id=job_id, **outcome))


# -- list ---------------------------------------------------------------------------


def test_list_table_newest_first_with_reason_and_duration(store: Store) -> None:
    store.create(
        [
            rec("jk-old", age=2),
            rec("jk-mid", JobState.FAILED, age=1, failure_reason=FailureReason.TIMEOUT),
            rec("jk-new", JobState.PENDING, name="prep", host=None),
        ]
    )
    result = run("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "BACKEND", "STATE", "CREATED", "DURATION", "HOST"]
    assert [line.split()[0] for line in lines[1:]] == ["jk-new", "jk-mid", "jk-old"]
    assert "FAILED (TIMEOUT)" in lines[2] and "1d ago" in lines[2] and "2.0s" in lines[2]
    assert lines[1].split()[-2:] == ["-", "-"]  # never started, no host
    assert "\x1b[" not in result.stdout  # no colour when not a terminal


def test_list_escapes_control_characters_and_colours_only_terminals(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobkit.cli import render

    store.create([rec("jk-1", name="evil\x1b[31m\nname", state=JobState.FAILED)])
    out = run("list").stdout
    assert "\x1b" not in out and "evil\\x1b[31m\\nname" in out and len(out.splitlines()) == 2
    table = render.columns(
        ("A", "B"), [("x", "FAILED")], style_column=1, styles=["<r>"], color=True
    )
    assert table == "\x1b[1mA\x1b[0m  \x1b[1mB\x1b[0m\nx  <r>FAILED\x1b[0m\n"
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.use_color(sys.stdout)


def test_list_json_is_the_record_with_epoch_timestamps(store: Store) -> None:
    store.create([rec("jk-a", age=1), rec("jk-b")])
    result = run("list", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["id"] for d in data] == ["jk-b", "jk-a"]
    assert isinstance(data[0]["created_at"], float) and data[0]["state"] == "SUCCEEDED"
    assert set(data[0]) == set(JobRecord("x", "n", "b").to_dict())


def test_list_filters_states_any_case_repeated_or_comma_separated(store: Store) -> None:
    store.create(
        [
            rec("jk-r", JobState.RUNNING),
            rec("jk-f", JobState.FAILED),
            rec("jk-c", JobState.CANCELLED),
            rec("jk-s", JobState.SUCCEEDED),
        ]
    )
    for args in (["-s", "failed,Cancelled"], ["--state", "FAILED", "--state", "cancelled"]):
        data = json.loads(run("list", "--json", *args).stdout)
        assert sorted(d["id"] for d in data) == ["jk-c", "jk-f"]


def test_list_filters_backend_name_and_limit(store: Store) -> None:
    store.create(
        [
            rec("jk-1", name="train-a", age=3),
            rec("jk-2", name="eval", age=2),
            rec("jk-3", name="train-b", backend="slurm", age=1),
        ]
    )

    def ids(*args: str) -> list[str]:
        return [d["id"] for d in json.loads(run("list", "--json", *args).stdout)]

    assert ids("--name", "train*") == ["jk-3", "jk-1"]
    assert ids("--backend", "slurm") == ["jk-3"]
    assert ids("--limit", "1") == ["jk-3"]
    result = run("list", "--limit", "2")
    assert len(result.stdout.splitlines()) == 3 and "--limit" in result.stderr
    result = run("list", "--limit", "3")  # all of them: no hint that more exist
    assert len(result.stdout.splitlines()) == 4 and result.stderr == ""


def test_list_empty_store(store: Store) -> None:
    result = run("list")
    assert result.exit_code == 0 and result.stdout == "" and "No jobs" in result.stderr
    assert json.loads(run("list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--state", "bogus"], "'bogus'"),
        (["--state", "running,nope"], "'nope'"),
        (["--state", " , "], "no state given"),
        (["--limit", "0"], "0 is not a positive number"),
        (["--limit", "-3"], "-3"),
        (["--frobnicate"], "--frobnicate"),
    ],
)
def test_list_usage_errors_exit_2_in_one_line(store: Store, args: list[str], needle: str) -> None:
    result = run("list", *args)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert needle in line and "jobkit list --help" in line


def test_bad_state_names_the_valid_ones(store: Store) -> None:
    line = one_error_line(run("list", "--state", "bogus"))
    assert "PENDING" in line and "CANCELLED" in line


def test_corrupted_record_does_not_break_list_and_status_says_so(store: Store) -> None:
    store.create([rec("jk-good"), rec("jk-bad", age=1)])
    import sqlite3

    with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE jobs SET data = '{not json' WHERE id = 'jk-bad'")
    result = run("list")
    assert result.exit_code == 0
    assert "jk-good" in result.stdout and "jk-bad" not in result.stdout
    assert "Warning:" in result.stderr and "jk-bad" in result.stderr
    result = run("status", "jk-bad")
    assert result.exit_code == 1
    assert "corrupted job record 'jk-bad'" in one_error_line(result)


# -- status -------------------------------------------------------------------------


def test_status_table_shows_every_field_readably(store: Store) -> None:
    store.create(
        [
            rec(
                "jk-1",
                JobState.FAILED,
                failure_reason=FailureReason.OOM,
                message="killed [oom]",
                resources={"cpus": 2, "mem": 2 * 1024**3, "time": 7200.0},
                labels={"team": "ml"},
                extra={"stdout": "/x/jk-1.out"},
            )
        ]
    )
    result = run("status", "jk-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for field in ("backend_id", "exit_code", "array_index", "created_at", "run time"):
        assert field in out
    assert "FAILED (OOM)" in out and "killed [oom]" in out  # no rich markup eaten
    assert "ago)" in out and time.strftime("%Y-") in out
    assert "mem=2GiB" in out
    assert "time=2h" in out and "team=ml" in out and "stdout=/x/jk-1.out" in out


def test_status_json_has_all_fields(store: Store) -> None:
    record = rec("jk-1", labels={"a": "b"})
    store.create([record])
    data = json.loads(run("status", "jk-1", "--json").stdout)
    assert data == record.to_dict()


def test_status_unknown_id_is_one_line_exit_1(store: Store) -> None:
    result = run("status", "jk-nope")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "jk-nope" in line and "jobkit list" in line


def test_status_of_array_summarises_states(store: Store) -> None:
    states = [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.RUNNING, JobState.FAILED]
    store.create(
        [
            rec(f"jk-arr.{i}", s, array_id="jk-arr", array_index=i, message="bad" * (i == 3))
            for i, s in enumerate(states)
        ]
    )
    result = run("status", "jk-arr")
    assert result.exit_code == 0, result.output
    assert "4 jobs" in result.stdout and "jk-arr.3" in result.stdout
    data = json.loads(run("status", "jk-arr", "--json").stdout)
    assert data["total"] == 4
    assert data["states"] == {
        "PENDING": 0,
        "QUEUED": 0,
        "RUNNING": 1,
        "SUCCEEDED": 2,
        "FAILED": 1,
        "CANCELLED": 0,
    }
    assert [j["id"] for j in data["jobs"]] == [f"jk-arr.{i}" for i in range(4)]


# -- logs ---------------------------------------------------------------------------


def test_logs_prints_stdout_or_stderr(store: Store, env: Path) -> None:
    (env / "out.txt").write_text("line 1\nline 2\n")
    (env / "err.txt").write_text("oops\n")
    extra = {"stdout": str(env / "out.txt"), "stderr": str(env / "err.txt")}
    store.create([rec("jk-1", extra=extra)])
    result = run("logs", "jk-1")
    assert result.exit_code == 0 and result.stdout == "line 1\nline 2\n"
    assert run("logs", "jk-1", "--stderr").stdout == "oops\n"
    assert run("logs", "jk-1", "--follow").stdout == "line 1\nline 2\n"  # ended: all, then stop


def test_logs_of_unknown_job_or_array(store: Store) -> None:
    store.create([rec("jk-a.0", array_id="jk-a", array_index=0)])
    result = run("logs", "jk-missing")
    assert result.exit_code == 1 and "jk-missing" in one_error_line(result)
    result = run("logs", "jk-a")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "job array" in line and "jk-a.0" in line


# -- result -------------------------------------------------------------------------


def test_result_prints_repr_or_json(store: Store) -> None:
    store.create([rec("jk-1"), rec("jk-2")])
    put_outcome(store, "jk-1", value={"loss": 0.5, "tags": ("a",)})
    put_outcome(store, "jk-2", value={1, 2})
    result = run("result", "jk-1")
    assert result.exit_code == 0 and result.stdout.strip() == repr({"loss": 0.5, "tags": ("a",)})
    assert json.loads(run("result", "jk-1", "--json").stdout) == {"loss": 0.5, "tags": ["a"]}
    result = run("result", "jk-2", "--json")
    assert result.exit_code == 1
    assert "not JSON-serialisable" in one_error_line(result) and "set" in result.stderr


def test_result_of_failed_job_names_the_exception(store: Store) -> None:
    store.create([rec("jk-1", JobState.FAILED, failure_reason=FailureReason.ERROR)])
    put_outcome(store, "jk-1", error=ValueError("bad input\nmore detail"))
    result = run("result", "jk-1")
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: job jk-1 failed: ValueError: bad input"


def test_result_of_job_failed_without_outcome_names_the_reason(store: Store) -> None:
    store.create(
        [rec("jk-1", JobState.FAILED, failure_reason=FailureReason.TIMEOUT, message="ran 2h")]
    )
    result = run("result", "jk-1")
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: job jk-1 failed: TIMEOUT: ran 2h"


def test_result_of_unfinished_or_cancelled_job(store: Store) -> None:
    store.create(
        [rec("jk-run", JobState.RUNNING, backend="nowhere"), rec("jk-c", JobState.CANCELLED)]
    )
    result = run("result", "jk-run")
    assert result.exit_code == 1
    assert "RUNNING" in one_error_line(result) and "--wait" in result.stderr
    result = run("result", "jk-run", "--timeout", "0.1")
    assert result.exit_code == 1
    waiting, error = result.stderr.splitlines()
    assert waiting == "waiting for job jk-run (RUNNING)..."
    assert error.startswith("Error: job jk-run did not finish within 0.1 s")
    result = run("result", "jk-c")
    assert result.exit_code == 1 and "cancelled" in one_error_line(result)
    assert run("result", "jk-run", "--timeout", "-1").exit_code == 2


def test_result_wait_returns_once_the_job_ends(store: Store) -> None:
    store.create([rec("jk-1", JobState.RUNNING, backend="nowhere")])

    def finish() -> None:
        time.sleep(0.2)
        put_outcome(store, "jk-1", value=42)
        store.transition("jk-1", JobState.SUCCEEDED, finished_at=time.time())

    worker = threading.Thread(target=finish)
    worker.start()
    try:
        result = run("result", "jk-1", "--wait", "--timeout", "20")
    finally:
        worker.join()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "42"


def test_result_missing_outcome_is_one_line(store: Store) -> None:
    store.create([rec("jk-1")])
    result = run("result", "jk-1")
    assert result.exit_code == 1 and "outcome is missing" in one_error_line(result)


# -- cancel -------------------------------------------------------------------------


def test_cancel_reports_each_job_and_fails_for_unknown_ids(store: Store) -> None:
    store.create(
        [
            rec("jk-q", JobState.QUEUED),
            rec("jk-done", JobState.SUCCEEDED),
            rec("jk-a.0", JobState.PENDING, array_id="jk-a", array_index=0),
            rec("jk-a.1", JobState.FAILED, array_id="jk-a", array_index=1),
        ]
    )
    result = run("cancel", "jk-q", "jk-unknown", "jk-done", "jk-a")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "cancelled jk-q",
        "jk-done had already ended (SUCCEEDED)",
        "array jk-a: cancelled 1 of 2 jobs (1 had already ended)",
    ]
    assert "jk-unknown" in one_error_line(result)
    assert store.get("jk-q").state is JobState.CANCELLED
    assert store.get("jk-a.0").state is JobState.CANCELLED
    assert store.get("jk-done").state is JobState.SUCCEEDED
    assert run("cancel", "jk-q").stdout == "jk-q had already ended (CANCELLED)\n"


def test_cancel_survives_a_failing_backend(store: Store) -> None:
    store.create([rec("jk-x", JobState.RUNNING, backend="nowhere"), rec("jk-y", JobState.RUNNING)])
    result = run("cancel", "jk-x", "jk-y")
    assert result.exit_code == 1
    assert result.stdout == "cancelled jk-y\n"
    line = one_error_line(result)
    assert "backend 'nowhere' could not stop jk-x" in line and "unknown backend" in line
    assert store.get("jk-y").state is JobState.CANCELLED


# -- backends -----------------------------------------------------------------------


def test_backends_says_which_are_usable_and_why_not(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobkit.backends import _known

    monkeypatch.setitem(_known, "broken", ("no_such_module_xyz:Backend", "pip install broken"))
    monkeypatch.setitem(_known, "weird", ("jobkit.states:JobRecord", ""))  # no available()
    result = run("backends")
    assert result.exit_code == 0, result.output
    local = next(line for line in result.stdout.splitlines() if line.startswith("local"))
    assert "(default)" in local and "yes" in local
    rows = {r["name"]: r for r in json.loads(run("backends", "--json").stdout)}
    assert rows["local"]["available"] is True and rows["local"]["default"] is True
    assert rows["broken"]["available"] is False
    assert rows["broken"]["detail"].startswith("not available: ")
    assert rows["broken"]["detail"].count("\n") == 0
    assert "pip install broken" in rows["broken"]["detail"]
    assert rows["weird"]["available"] is False
    assert rows["weird"]["detail"].startswith("not available: AttributeError")


# -- prune --------------------------------------------------------------------------


@pytest.fixture
def aged(store: Store, env: Path) -> Store:
    """Old and new jobs in every state, with blobs and log files."""
    records = []
    for state in JobState:
        for age in (10, 1):
            job_id = f"jk-{state.value.lower()}-{age}"
            out = env / f"{job_id}.out"
            out.write_text("log\n")
            records.append(rec(job_id, state, age=age, extra={"stdout": str(out)}))
    store.create(records)
    for r in records:
        store.put_blob(payload_key(r.id), b"payload")
        store.put_blob(outcome_key(r.id), b"outcome")
    return store


def test_prune_deletes_old_ended_jobs_with_blobs_and_logs(aged: Store, env: Path) -> None:
    result = run("prune", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert "deleted 3 jobs" in result.stdout
    remaining = {r.id for r in aged.query()}
    gone = {"jk-succeeded-10", "jk-failed-10", "jk-cancelled-10"}
    assert not (remaining & gone) and len(remaining) == 9
    for job_id in gone:
        assert not (env / f"{job_id}.out").exists()
        with pytest.raises(KeyError):
            aged.get_blob(outcome_key(job_id))
    assert (env / "jk-running-10.out").exists()  # live jobs are never touched
    assert aged.get_blob(payload_key("jk-running-10")) == b"payload"


def test_prune_dry_run_and_json_and_state_filter(aged: Store) -> None:
    result = run("prune", "--older-than", "7d", "--dry-run")
    assert result.exit_code == 0 and "would delete 3 jobs" in result.stdout
    assert len(aged.query()) == 12
    report = json.loads(run("prune", "--older-than", "2d", "--state", "failed", "--json").stdout)
    assert report["jobs"] == ["jk-failed-10"] and report["dry_run"] is False
    assert report["states"] == {"FAILED": 1} and len(report["log_files"]) == 1
    assert len(aged.query()) == 11


def test_prune_removes_usage_series_whose_record_is_gone(aged: Store) -> None:
    from jobkit.usage import usage_key

    aged.create([rec("jk-no-payload", JobState.RUNNING, age=1)])  # a record is enough
    for job_id in ("jk-pruned-meanwhile", "jk-running-1", "jk-no-payload"):
        aged.put_blob(usage_key(job_id), b'{"version":1}')
    report = json.loads(run("prune", "--orphans", "--json").stdout)
    assert report["orphan_series"] == 1
    assert aged.blob_keys("usage/") == ["usage/jk-no-payload", "usage/jk-running-1"]
    assert "orphan usage series" not in run("prune", "--orphans").stdout  # none left


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "--older-than 7d"),
        (["--older-than", "soon"], "'soon'"),
        (["--older-than", "7d", "--state", "running"], "RUNNING is not a final state"),
        (["--older-than", "7d", "--state", "queued,failed"], "QUEUED"),
    ],
)
def test_prune_usage_errors(aged: Store, args: list[str], needle: str) -> None:
    result = run("prune", *args)
    assert result.exit_code == 2
    assert needle in one_error_line(result)
    assert len(aged.query()) == 12


def test_prune_corrupted_records(store: Store) -> None:
    store.create([rec("jk-good"), rec("jk-bad")])
    import sqlite3

    with sqlite3.connect(store.path) as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE jobs SET data = 'garbage' WHERE id = 'jk-bad'")
    report = json.loads(run("prune", "--corrupted", "--json").stdout)
    assert report["corrupted"] == ["jk-bad"] and report["jobs"] == []
    assert run("status", "jk-bad").exit_code == 1
    assert "no job 'jk-bad'" in run("status", "jk-bad").stderr
    assert store.get("jk-good").id == "jk-good"


# -- global options, config and store errors ----------------------------------------


def test_store_option_overrides_the_environment(store: Store, env: Path) -> None:
    other = open_store(f"sqlite:///{env}/other.db")
    other.create([rec("jk-other")])
    other.close()
    data = json.loads(run("--store", f"sqlite:///{env}/other.db", "list", "--json").stdout)
    assert [d["id"] for d in data] == ["jk-other"]


@pytest.mark.parametrize(
    ("url", "needle"),
    [("nonsense", "store"), ("ftp://host/x", "unknown scheme"), ("sqlite:///", "no database")],
)
def test_bad_store_url_is_one_line_exit_1(env: Path, url: str, needle: str) -> None:
    result = run("--store", url, "list")
    assert result.exit_code == 1
    assert needle in one_error_line(result)


def test_unreachable_store_is_one_line_exit_1(env: Path) -> None:
    (env / "afile").write_text("")
    result = run("--store", f"sqlite:///{env}/afile/jobkit.db", "list")
    assert result.exit_code == 1
    assert "afile" in one_error_line(result)


def test_config_file_errors_are_one_line_exit_1(env: Path) -> None:
    config = env / "xdg" / "jobkit" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("store = [unclosed\n")
    result = run("list")
    assert result.exit_code == 1
    assert "invalid TOML" in one_error_line(result)
    config.write_text("[profiles.cluster]\nbackend = 'local'\n")
    result = run("--profile", "clustr", "list")
    assert result.exit_code == 1
    assert "did you mean 'cluster'" in one_error_line(result)
    assert run("--profile", "cluster", "list").exit_code == 0


def test_version_help_and_missing_command(env: Path) -> None:
    from jobkit import __version__

    assert run("--version").stdout.strip() == f"jobkit {__version__}"
    assert run("--help").exit_code == 0
    result = run()
    assert result.exit_code == 2 and "list" in result.output
    result = run("status")
    assert result.exit_code == 2 and "JOB_ID" in one_error_line(result)


def test_unexpected_internal_error_is_one_line(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobkit.cli import render

    def explode(*_: Any) -> None:
        raise RuntimeError("kaboom")

    store.create([rec("jk-1")])
    monkeypatch.setattr(render, "jobs_table", explode)
    result = run("list")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "internal error: RuntimeError: kaboom" in line and "JOBKIT_DEBUG" in line


# -- the installed console script ---------------------------------------------------

SCRIPT = Path(sys.executable).with_name("jobkit")
needs_script = pytest.mark.skipif(not SCRIPT.exists(), reason="jobkit console script not installed")


def script(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, **kwargs
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@needs_script
def test_console_script_exit_codes(store: Store) -> None:
    store.create([rec("jk-1")])
    assert script("list").returncode == 0
    done = script("status", "jk-nope")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert script("list", "--state", "nope").returncode == 2
    assert script("--store", "bogus://x", "list").returncode == 1
    done = script("list", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)[0]["id"] == "jk-1"


@needs_script
def test_list_does_not_import_rich_or_the_submission_api(store: Store) -> None:
    store.create([rec("jk-1")])
    code = (
        "import sys; sys.argv = ['jobkit', 'list']\n"
        "from jobkit.cli.app import main\n"
        "code = main()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rich' or m in "
        "('jobkit.api', 'jobkit.client', 'jobkit.job', 'cloudpickle'))\n"
        "print('LOADED', bad, file=sys.stderr); sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stderr


@needs_script
def test_a_maps_items_list_by_index_and_piped_output_has_no_trailing_spaces(
    store: Store,
) -> None:
    items = [
        rec(f"jk-m.{i}", JobState.FAILED if i in (2, 10) else JobState.SUCCEEDED) for i in range(12)
    ]
    items = [
        dataclasses.replace(r, created_at=NOW - 5, array_id="jk-m", array_index=i, message="boom")
        for i, r in enumerate(items)
    ]
    store.create([*items[::-1], rec("jk-old", age=1), rec("jk-new", name="x" * 70)])
    listed = script("list")
    assert listed.returncode == 0, listed.stderr
    order = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert order == ["jk-new", *(f"jk-m.{i}" for i in range(11, -1, -1)), "jk-old"]
    summary = script("status", "jk-m").stdout
    assert summary.index("jk-m.2 ") < summary.index("jk-m.10 ")  # failed items by index
    for args in (["list"], ["status", "jk-new"], ["status", "jk-m"], ["backends"]):
        done = script(*args)
        assert done.returncode == 0, done.stderr
        padded = [line for line in done.stdout.splitlines() if line != line.rstrip()]
        assert not padded, (args, padded)


@needs_script
def test_ctrl_c_while_waiting_exits_130_quietly(store: Store) -> None:
    store.create([rec("jk-1", JobState.RUNNING, backend="nowhere")])
    proc = subprocess.Popen(
        with_default_signals([str(SCRIPT), "result", "--wait", "jk-1"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "waiting for job jk-1 (RUNNING)...\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert out == "" and err == ""
    finally:
        reap(proc)


@needs_script
def test_signal_tests_pass_when_sigint_is_inherited_ignored(env: Path) -> None:
    """As under ``pytest &`` from a script: the Ctrl-C test must not depend on it."""
    test = f"{__file__}::test_ctrl_c_while_waiting_exits_130_quietly"
    ignoring = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh"]  # pytest inherits SIG_IGN
    proc = subprocess.Popen(
        [*ignoring, sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parent,
    )
    try:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "1 passed" in out
    finally:
        reap(proc)


@needs_script
def test_a_printed_sqlite_url_finds_its_jobs_through_every_entry_point(
    env: Path, tmp_path: Path
) -> None:
    """The URL jobkit prints (``store.url``, ``No jobs match in ...``) round-trips."""
    data = tmp_path / "data"
    data.mkdir()
    seeded = open_store(f"sqlite://{data}/a.db")
    seeded.create([rec("jk-a1"), rec("jk-a2")])
    printed = seeded.url
    seeded.close()
    assert printed == f"sqlite://{data}/a.db"  # three slashes and the absolute path
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    elsewhere = {"cwd": project / "sub"}  # a relative reading would look under here

    def ids(done: subprocess.CompletedProcess[str]) -> list[str]:
        assert done.returncode == 0, done.stderr
        return sorted(d["id"] for d in json.loads(done.stdout))

    want = ["jk-a1", "jk-a2"]
    for form in (printed, f"sqlite://{data}/../data/a.db", f"sqlite:///{data}/a.db"):
        assert ids(script("--store", form, "list", "--json", **elsewhere)) == want
    environ = {**os.environ, "JOBKIT_STORE": printed}
    assert ids(script("list", "--json", env=environ, **elsewhere)) == want
    no_env = {k: v for k, v in os.environ.items() if k != "JOBKIT_STORE"}
    (project / "jobkit.toml").write_text(f'store = "{printed}"\n')
    assert ids(script("list", "--json", env=no_env, **elsewhere)) == want
    (project / "jobkit.toml").write_text('store = "sqlite://../data/a.db"\n')  # relative
    assert ids(script("list", "--json", env=no_env, **elsewhere)) == want  # to the file
    code = (
        "import json, sys, jobkit\n"
        "with jobkit.use(store=sys.argv[1]) as c: a = sorted(j.id for j in c.jobs())\n"
        "jobkit.configure(store=sys.argv[1]); b = sorted(j.id for j in jobkit.jobs())\n"
        "print(json.dumps([a, b]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, printed], capture_output=True, text=True, timeout=60
    )
    assert json.loads(done.stdout) == [want, want], done.stderr
    copied = script("store", "copy", printed, f"sqlite://{tmp_path}/copy.db", **elsewhere)
    assert copied.returncode == 0, copied.stderr
    listed = script("--store", f"sqlite://{tmp_path}/copy.db", "list", "--json")
    assert ids(listed) == want
    empty = script("--store", f"sqlite://{data}/empty.db", "list")
    assert empty.stderr == f"No jobs match in sqlite://{data}/empty.db.\n"


# -- end to end with real local jobs -------------------------------------------------


def test_result_and_logs_of_real_local_jobs(local: Any) -> None:
    import jobkit

    url = local.config.store
    ok = jobkit.submit(print, "hello from a job")
    bad = jobkit.submit(int, "not a number")
    ok.result(timeout=60)
    bad.exception(timeout=60)
    result = run("--store", url, "result", ok.id)
    assert result.exit_code == 0 and result.stdout.strip() == "None"
    assert run("--store", url, "logs", ok.id).stdout == "hello from a job\n"
    result = run("--store", url, "result", bad.id)
    assert result.exit_code == 1
    assert one_error_line(result).startswith(
        f"Error: job {bad.id} failed: ValueError: invalid literal"
    )
    listed = json.loads(run("--store", url, "list", "--json").stdout)
    assert {ok.id, bad.id} <= {d["id"] for d in listed}


def test_follow_streams_a_real_job_until_it_ends(local: Any) -> None:
    import jobkit

    def chatty() -> None:
        for i in range(3):
            print("tick", i, flush=True)
            time.sleep(0.3)

    job = jobkit.submit(chatty)
    result = run("--store", local.config.store, "logs", "--follow", job.id)
    assert result.exit_code == 0, result.output
    assert result.stdout == "tick 0\ntick 1\ntick 2\n"
    assert job.done()
