"""A store of thousands of jobs (``jobkit_testing.bigstore``) through the real CLI.

Not timed (timings are the ``bigstore`` benchmark's): these check that what
the fast paths return is right -- prune removes exactly the old finished jobs
with their blobs and log files and nothing else, ``list`` shows one page, the
listing queries keep the order a full sort would give, and the SQL prune runs
reads an index instead of sorting.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import pruning
from jobkit.errors import BlobNotFoundError
from jobkit.pruning import PROBE_MAX
from jobkit.states import TERMINAL_STATES, JobState
from jobkit.stores._common import id_order
from jobkit.stores.base import outcome_key, payload_key
from jobkit.stores.sqlite import SQLiteStore
from jobkit.stores.sqlite_sql import build_query
from jobkit_testing.bigstore import DAY, BigStore, build

COUNT = 3000
CUTOFF_DAYS = 30


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> BigStore:
    """Read-only tests share one store; prune builds its own."""
    root = tmp_path_factory.mktemp("big")
    return build(root / "jobkit.db", count=COUNT, log_dir=root / "logs")


@pytest.fixture
def store(big: BigStore) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(big.path)
    yield opened
    opened.close()


def cli(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBKIT_")}
    env.update(JOBKIT_STORE=url, JOBKIT_HOME=str(cwd / "home"), XDG_CONFIG_HOME=str(cwd / "xdg"))
    return subprocess.run(
        [sys.executable, "-m", "jobkit", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_generated_store_is_the_mix_it_claims(big: BigStore, store: SQLiteStore) -> None:
    records = store.query()
    assert len(records) == COUNT == len(big.created)
    assert {r.id for r in records if not r.is_terminal} == big.active
    assert big.active and big.with_blobs and big.log_files
    assert sum(1 for r in records if r.array_id) > COUNT / 3  # maps, items ARRAY.INDEX
    assert all(r.id.startswith(f"{r.array_id}.") for r in records if r.array_id)


def test_list_prints_the_newest_page_of_50(big: BigStore, tmp_path: Path) -> None:
    done = cli(big.url, "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + 50  # the header and one page
    newest = sorted(big.created, key=lambda i: (big.created[i], id_order(i)), reverse=True)
    assert [line.split()[0] for line in lines[1:]] == newest[:50]
    assert "the newest 50 shown" in done.stderr


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"backend": "slurm"},
        {"backend": "local", "name": "train*"},
        {"states": [JobState.FAILED, JobState.CANCELLED]},
        {"states": sorted(TERMINAL_STATES), "created_before": CUTOFF_DAYS},
        {"states": sorted(TERMINAL_STATES), "created_before": CUTOFF_DAYS, "oldest_first": True},
    ],
)
def test_indexed_queries_return_what_a_full_sort_would(
    big: BigStore, store: SQLiteStore, filters: dict[str, object]
) -> None:
    if "created_before" in filters:  # days ago
        filters = {**filters, "created_before": big.now - CUTOFF_DAYS * DAY}
    every = store.query()
    states = filters.get("states")
    cutoff = filters.get("created_before")
    wanted = [
        r
        for r in every
        if (states is None or r.state in states)  # type: ignore[operator]
        and r.backend == filters.get("backend", r.backend)
        and (filters.get("name") is None or r.name.startswith("train"))
        and (cutoff is None or r.created_at < cutoff)  # type: ignore[operator]
    ]
    oldest_first = bool(filters.get("oldest_first"))
    wanted.sort(key=lambda r: (r.created_at, id_order(r.id)), reverse=not oldest_first)
    for limit in (50, None):
        found = store.query(limit=limit, **filters)  # type: ignore[arg-type]
        assert [r.id for r in found] == [r.id for r in wanted[:limit]]


def test_the_prune_query_reads_the_time_index_without_sorting_the_rows(big: BigStore) -> None:
    """The exact SQL behind ``pruning.plan`` on a store with data in it."""
    sql, params = build_query(
        states=sorted(TERMINAL_STATES),
        backend=None,
        name=None,
        array_id=None,
        created_before=big.now - CUTOFF_DAYS * DAY,
        oldest_first=True,
    )
    conn = sqlite3.connect(big.path)
    try:
        steps = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, -1, 0])]
    finally:
        conn.close()
    assert steps[0].startswith("SEARCH jobs USING INDEX jobs_by_time (created_at<?)"), steps
    assert all(s == "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY" for s in steps[1:]), steps


def test_prune_removes_exactly_the_old_finished_jobs_their_blobs_and_logs(
    tmp_path: Path,
) -> None:
    made = build(tmp_path / "jobkit.db", count=COUNT, log_dir=tmp_path / "logs")
    store = SQLiteStore(made.path)
    # A killed writer's temporary file of a pruned job's outcome, and an orphan payload.
    doomed = sorted(made.prunable(0) & made.with_blobs)
    for job_id in doomed[:3]:
        folder = tmp_path / "jobkit.db.d" / "blobs" / "outcomes"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{job_id}.abc123.tmp").write_bytes(b"half")
    store.put_blob(payload_key("jk-orphan"), b"x" * 200_000)  # a file, no record
    os.utime(store.blob_location(payload_key("jk-orphan")), (1.0, 1.0))
    store.close()
    pruned = made.prunable(CUTOFF_DAYS * DAY)
    kept = set(made.created) - pruned
    assert pruned and kept and made.active <= kept

    # Submissions are 43 minutes apart here: the seconds between build and
    # command cannot move one across the cutoff.
    done = cli(made.url, "prune", "--older-than", f"{CUTOFF_DAYS}d", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["jobs"]) == pruned and report["orphan_payloads"] == 1

    store = SQLiteStore(made.path)
    try:
        assert {r.id for r in store.query()} == kept
        for job_id in made.with_blobs:
            for key in (payload_key(job_id), outcome_key(job_id)):
                if job_id in pruned:
                    with pytest.raises(BlobNotFoundError):
                        store.get_blob(key)
                else:
                    assert store.get_blob(key)
        with pytest.raises(BlobNotFoundError):
            store.get_blob(payload_key("jk-orphan"))
    finally:
        store.close()
    for job_id, logs in made.log_files.items():
        assert all(os.path.exists(log) == (job_id in kept) for log in logs), job_id
    leftovers = list((tmp_path / "jobkit.db.d" / "blobs").rglob(".*.tmp"))
    assert leftovers == []


@pytest.mark.parametrize("orphans", [3, PROBE_MAX + 20])
def test_orphans_leave_out_corrupted_records_probed_or_scanned(
    tmp_path: Path, orphans: int
) -> None:
    """A few payloads without a readable record are probed one by one, many
    by one scan; either way a corrupted record's payload is no orphan."""
    import time

    store = SQLiteStore(tmp_path / "jobkit.db")
    try:
        made = build(tmp_path / "jobkit.db", count=200, blob_every=5)
        damaged = sorted(made.with_blobs)[0]
        conn = sqlite3.connect(made.path)
        with conn:
            conn.execute("UPDATE jobs SET data = '{broken' WHERE id = ?", (damaged,))
        conn.close()
        lost = [f"jk-orphan{i:04d}" for i in range(orphans)]
        store.put_blobs({payload_key(i): b"payload" for i in lost})
        plan = pruning.plan(
            store, states=[], age=None, corrupted=False, now=time.time() + 10, orphan_grace=5
        )
        assert plan.orphans == lost
    finally:
        store.close()
