"""What only the SQLite store promises: files on disk, schema, corruption, processes."""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import re
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit.errors import ConfigError, StoreError
from jobkit.states import TERMINAL_STATES, JobRecord, JobState
from jobkit.stores.base import outcome_key, payload_key
from jobkit.stores.sqlite import SQLiteStore, path_from_url
from jobkit.stores.sqlite_sql import INLINE_MAX, SCHEMA_VERSION, build_query


def record(job_id: str, **fields: Any) -> JobRecord:
    values: dict[str, Any] = {"name": "job", "backend": "local", "created_at": 100.0}
    values.update(fields)
    return JobRecord(id=job_id, **values)


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection, as another tool (or a disk fault) would use the file."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobkit.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db)
    yield store
    store.close()


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- files on disk -------------------------------------------------------------
def test_everything_created_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "new" / "nested" / "jobkit.db"
    old_umask = os.umask(0)
    try:
        store = SQLiteStore(db)
        store.create([record("jk-1")])
        big = b"s" * (INLINE_MAX + 1)  # small blobs live in the database file
        store.put_blob(payload_key("jk-1"), big)
        store.put_blob("logs/jk-1/stdout", [big, b"b"])
        assert mode(db.parent) == mode(db.parent.parent) == 0o700
        assert mode(db) == 0o600
        for suffix in ("-wal", "-shm"):
            assert mode(f"{db}{suffix}") == 0o600
        assert store.local_dir == Path(f"{db}.d")
        blobs = store.local_dir / "blobs"
        for directory in (store.local_dir, blobs, blobs / "payloads", blobs / "logs" / "jk-1"):
            assert mode(directory) == 0o700, directory
        for blob in (blobs / "payloads" / "jk-1", blobs / "logs" / "jk-1" / "stdout"):
            assert mode(blob) == 0o600, blob
        assert [p.name for p in (blobs / "payloads").iterdir()] == ["jk-1"]  # no temp left
        store.close()
    finally:
        os.umask(old_umask)


def test_existing_parent_directories_keep_their_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    SQLiteStore(tmp_path / "jobkit.db").close()
    assert mode(tmp_path) == 0o755


def test_wal_mode_and_schema_version(store: SQLiteStore, db: Path) -> None:
    conn = raw(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"jobs_by_state", "jobs_by_time", "jobs_by_backend", "jobs_by_array"} <= indexes


def test_a_newer_schema_is_refused_naming_file_and_versions(db: Path) -> None:
    SQLiteStore(db).close()
    raw(db).execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError) as info:
        SQLiteStore(db)
    message = str(info.value)
    assert str(db) in message and "99" in message and f"version {SCHEMA_VERSION}" in message


def test_a_file_that_is_not_a_database_is_refused(db: Path) -> None:
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=re.escape(str(db))):
        SQLiteStore(db)


def test_unusable_paths_raise_store_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"a-file.*writable location"):
        SQLiteStore(blocker / "jobkit.db")
    directory = tmp_path / "a-dir.db"
    directory.mkdir()
    with pytest.raises(StoreError, match=r"a-dir\.db"):
        SQLiteStore(directory)


def test_reopening_keeps_everything(db: Path) -> None:
    first = SQLiteStore(db)
    first.create([record("jk-1", labels={"k": "v"})])
    first.put_blob(outcome_key("jk-1"), b"result")
    first.close()
    second = SQLiteStore(db)
    assert second.get("jk-1").labels == {"k": "v"}
    assert second.get_blob(outcome_key("jk-1")) == b"result"
    second.close()


def test_opening_and_listing_10k_jobs_is_fast(db: Path) -> None:
    store = SQLiteStore(db)
    store.create([record(f"jk-{i}", created_at=float(i)) for i in range(10_000)])
    store.close()
    started = time.perf_counter()
    store = SQLiteStore(db)
    page = store.query(states=[JobState.PENDING], limit=50)
    elapsed = time.perf_counter() - started
    store.close()
    assert [r.id for r in page[:2]] == ["jk-9999", "jk-9998"]
    assert elapsed < 0.1  # measured ~2 ms; the whole `jobkit list` must stay under 0.3 s


# -- columns, JSON and the query plan ------------------------------------------
def test_columns_follow_the_json_on_every_write(store: SQLiteStore, db: Path) -> None:
    store.create([record("jk-1", array_id="arr", priority=3)])
    store.transition("jk-1", JobState.RUNNING, host="n1")
    store.update("jk-1", name="renamed", backend="slurm", owner="bob", priority=7)
    row = (
        raw(db)
        .execute(
            "SELECT id, name, backend, state, created_at, array_id, priority, owner, data FROM jobs"
        )
        .fetchone()
    )
    data = json.loads(row[-1])
    assert row[:-1] == tuple(
        data[k]
        for k in ("id", "name", "backend", "state", "created_at", "array_id", "priority", "owner")
    )
    assert (row[1], row[3], data["host"]) == ("renamed", "RUNNING", "n1")


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"states": [JobState.RUNNING]}, "jobs_by_state"),
        ({"states": [JobState.RUNNING], "created_before": 5.0}, "jobs_by_state"),
        ({}, "jobs_by_time"),
        ({"backend": "slurm", "states": [JobState.QUEUED]}, "jobs_by_backend"),
        ({"array_id": "arr"}, "jobs_by_array"),
        ({"states": [JobState.RUNNING, JobState.QUEUED]}, "jobs_by_state"),
        ({"states": [JobState.RUNNING, JobState.QUEUED], "backend": "x"}, "jobs_by_backend"),
        ({"backend": "slurm"}, "jobs_by_backend"),
        (
            {"states": list(TERMINAL_STATES), "created_before": 5.0, "oldest_first": True},
            "jobs_by_time",
        ),
        ({"states": [JobState.RUNNING, JobState.QUEUED], "created_before": 5.0}, "jobs_by_time"),
        ({"backend": "slurm", "name": "train*"}, "jobs_by_backend"),
    ],
)
def test_queries_read_an_index_without_sorting(
    store: SQLiteStore, db: Path, filters: dict[str, Any], index: str
) -> None:
    params: dict[str, Any] = {
        "states": None,
        "backend": None,
        "name": None,
        "array_id": None,
        "created_before": None,
        "oldest_first": False,
    }
    params.update(filters)
    sql, args = build_query(**params)
    steps = [r[3] for r in raw(db).execute(f"EXPLAIN QUERY PLAN {sql}", [*args, 50, 0])]
    plan = " | ".join(steps)
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    # Rows come in index order; only runs of equal created_at (a map's items) are
    # sorted by index ("RIGHT PART"); a full sort is allowed only over the per-state
    # subqueries' first pages, never over the table.
    for before, step in itertools.pairwise(steps):
        if step == "USE TEMP B-TREE FOR ORDER BY":
            assert before.startswith("SCAN (subquery"), plan
        if step.startswith("USE TEMP B-TREE"):
            assert "jobs" not in before or "RIGHT PART" in step, plan
    assert "SCAN jobs" not in plan or "USING" in plan, plan


# -- corrupted rows ---------------------------------------------------------------
@pytest.fixture
def damaged(store: SQLiteStore, db: Path) -> SQLiteStore:
    store.create([record(f"jk-{i}", created_at=float(i)) for i in range(6)])
    store.put_blob(payload_key("jk-5"), b"payload of a damaged job")
    conn = raw(db)
    conn.execute("UPDATE jobs SET data = '{not json' WHERE id = 'jk-5'")
    bad_state = json.dumps({**record("jk-4", created_at=4.0).to_dict(), "state": "EXPLODED"})
    conn.execute("UPDATE jobs SET data = ?, state = 'EXPLODED' WHERE id = 'jk-4'", (bad_state,))
    conn.execute("UPDATE jobs SET state = 'RUNNING' WHERE id = 'jk-3'")  # column disagrees
    return store


@pytest.mark.parametrize("job_id", ["jk-5", "jk-4", "jk-3"])
def test_get_of_a_corrupted_row_names_the_job_and_the_fix(
    damaged: SQLiteStore, job_id: str
) -> None:
    with pytest.raises(StoreError, match=f"corrupted job record '{job_id}'.*jobkit prune"):
        damaged.get(job_id)
    with pytest.raises(StoreError, match=job_id):
        damaged.transition(job_id, JobState.CANCELLED)
    with pytest.raises(StoreError, match=job_id):
        damaged.update(job_id, message="x")


def test_listing_skips_corrupted_rows_loses_nothing_and_reports_them(
    damaged: SQLiteStore, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = raw(db).execute("SELECT * FROM jobs ORDER BY id").fetchall()
    with caplog.at_level(logging.WARNING, logger="jobkit.stores.sqlite"):
        listed = damaged.query()
    assert [r.id for r in listed] == ["jk-2", "jk-1", "jk-0"]
    for job_id in ("jk-3", "jk-4", "jk-5"):
        assert f"corrupted job record '{job_id}'" in caplog.text
    assert [r.id for r in damaged.query(limit=2)] == ["jk-2", "jk-1"]  # pages past bad rows
    assert [r.id for r in damaged.query(states=[JobState.PENDING], limit=1)] == ["jk-2"]
    assert set(damaged.get_many([f"jk-{i}" for i in range(6)])) == {"jk-0", "jk-1", "jk-2"}
    assert sorted(damaged.find_corrupted()) == ["jk-3", "jk-4", "jk-5"]
    assert "JSON" in damaged.find_corrupted()["jk-5"]
    assert raw(db).execute("SELECT * FROM jobs ORDER BY id").fetchall() == before
    assert damaged.get_blob(payload_key("jk-5")) == b"payload of a damaged job"
    assert damaged.delete(["jk-5"]) == 1  # the fix works on rows that do not parse
    assert sorted(damaged.find_corrupted()) == ["jk-3", "jk-4"]


# -- processes ---------------------------------------------------------------------
_SETTERS = ("backend_id", "native_state", "owner", "array_index")


def _race(path: str, ids: list[str], worker: int, start: Any, results: Any) -> None:
    try:
        store = SQLiteStore(path)
        start.wait()
        started, finished = [], []
        for job_id in ids:
            value = worker if _SETTERS[worker] == "array_index" else f"w{worker}"
            store.update(job_id, **{_SETTERS[worker]: value})
            if store.transition(job_id, JobState.RUNNING, expect={JobState.QUEUED}, pid=worker):
                started.append(job_id)
            terminal = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)[worker % 3]
            if store.transition(job_id, terminal, host=f"w{worker}"):
                finished.append(job_id)
        store.close()
        results.put((worker, started, finished, None))
    except BaseException as exc:  # reported to the parent, never swallowed
        results.put((worker, [], [], repr(exc)))


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_concurrent_processes_have_one_winner_per_transition_and_lose_no_update(
    store: SQLiteStore, db: Path
) -> None:
    ids = [f"jk-{i}" for i in range(60)]
    store.create([record(i, state=JobState.QUEUED) for i in ids])
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(db), ids, w, start, results)) for w in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o[3] for o in outcomes] == [None] * 4
    started = sorted(i for o in outcomes for i in o[1])
    finished = sorted(i for o in outcomes for i in o[2])
    assert started == sorted(ids)  # exactly one RUNNING winner per job
    assert finished == sorted(ids)  # exactly one terminal winner per job
    winners = {i: o[0] for o in outcomes for i in o[2]}
    for job in store.get_many(ids).values():
        assert job.is_terminal and job.host == f"w{winners[job.id]}"
        assert (job.backend_id, job.native_state, job.owner, job.array_index) == (
            "w0",
            "w1",
            "w2",
            3,
        )


def _open_new(path: str, start: Any, results: Any) -> None:
    try:
        start.wait()
        store = SQLiteStore(path)
        store.create([record(f"jk-{os.getpid()}")])
        store.close()
        results.put(None)
    except BaseException as exc:
        results.put(repr(exc))


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_processes_creating_the_same_new_database_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for trial in range(3):
        path = str(tmp_path / f"new-{trial}.db")
        start, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_new, args=(path, start, results)) for _ in range(6)]
        for p in procs:
            p.start()
        errors = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert errors == [None] * 6
        store = SQLiteStore(path)
        assert len(store.query()) == 6
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_its_own_connection(store: SQLiteStore) -> None:
    store.create([record("jk-1", state=JobState.RUNNING), record("jk-2")])
    assert store.get("jk-1").state is JobState.RUNNING  # parent connection in use
    pid = os.fork()
    if pid == 0:  # child: must not touch the parent's connection
        code = 1
        try:
            inherited = store._conn
            done = store.transition("jk-1", JobState.SUCCEEDED, host="child")
            if done is not None and store._conn is not inherited:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.get("jk-1").host == "child"
    assert store.transition("jk-2", JobState.QUEUED) is not None  # parent still works


# -- URLs ------------------------------------------------------------------------------
def test_url_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_from_url("sqlite:///abs/x.db") == Path("/abs/x.db")
    assert path_from_url("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert path_from_url("sqlite:///~/x.db") == tmp_path / "x.db"
    assert path_from_url("sqlite://~/x.db") == tmp_path / "x.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite:///x.db?mode=ro"):
        with pytest.raises(ConfigError, match=r"sqlite:///abs/path/jobkit\.db"):
            path_from_url(bad)
    with pytest.raises(ConfigError, match="ambiguous"):
        path_from_url("sqlite://rel.db")
    store = SQLiteStore(tmp_path / "u.db")
    assert store.url == f"sqlite://{tmp_path}/u.db"
    assert path_from_url(store.url) == store.path
    store.close()


def test_relative_constructor_path_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("rel.db")
    assert store.path == tmp_path / "rel.db"
    assert store.url == f"sqlite://{tmp_path}/rel.db"
    store.close()


def test_a_write_lock_held_too_long_is_retryable_and_a_patient_store_waits(db: Path) -> None:
    from jobkit.errors import StoreUnavailableError
    from jobkit.stores.patient import PatientStore

    store = SQLiteStore(db, timeout=0.2)
    store.create([JobRecord(id="jk-1", name="x", backend="local", created_at=1.0)])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process sits on the write lock
    with pytest.raises(StoreUnavailableError, match=r"held the write lock for 0\.2 s"):
        store.transition("jk-1", JobState.RUNNING)

    log: list[str] = []

    def release_then_sleep(seconds: float) -> None:
        log.append(f"slept {seconds:.2f}")
        if holder.in_transaction:
            holder.execute("COMMIT")

    patient = PatientStore(store, patience=30, sleep=release_then_sleep, log=sys.stderr)
    moved = patient.transition("jk-1", JobState.RUNNING)
    assert moved is not None and moved.state is JobState.RUNNING
    assert len(log) == 1  # one wait, then the lock was free
    holder.close()

    with pytest.raises(StoreError, match="jk-nope"):  # not retried: a retry cannot fix it
        PatientStore(store, patience=30, sleep=lambda s: log.append("slept")).get("jk-nope")
    assert len(log) == 1


def test_identity_is_the_resolved_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    one = SQLiteStore(tmp_path / "real" / "jobs.db")
    two = SQLiteStore(tmp_path / "link" / "jobs.db")
    assert one.url != two.url and one.identity == two.identity


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    db = tmp_path / "jobkit.db"
    store = SQLiteStore(db)
    store.create([record("jk-old")])
    store.close()
    conn = raw(db)  # as jobkit 0.x left it: no blobs table, version 1
    conn.execute("DROP TABLE blobs")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    reopened = SQLiteStore(db)
    assert reopened.get("jk-old").id == "jk-old"
    reopened.put_blob(payload_key("jk-old"), b"inline")
    assert reopened.get_blob(payload_key("jk-old")) == b"inline"
    assert raw(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened.close()


def test_small_blobs_are_rows_large_ones_files_and_a_rewrite_moves_between_them(
    store: SQLiteStore, db: Path
) -> None:
    key = outcome_key("jk-1")
    store.put_blob(key, b"small")
    assert raw(db).execute("SELECT data FROM blobs WHERE key = ?", (key,)).fetchone()[0] == b"small"
    big = b"b" * (INLINE_MAX + 1)
    store.put_blob(key, big)  # a retried attempt's larger outcome replaces the row
    assert raw(db).execute("SELECT 1 FROM blobs WHERE key = ?", (key,)).fetchone() is None
    assert store.get_blob(key) == big and store.blob_location(key).endswith("outcomes/jk-1")
    store.put_blob(key, b"small again")  # and a smaller one replaces the file
    assert store.get_blob(key) == b"small again"
    assert not (store.local_dir / "blobs" / "outcomes" / "jk-1").exists()
    assert store.get_blobs([key, "outcomes/absent"]) == {key: bytearray(b"small again")}
