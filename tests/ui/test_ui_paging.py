"""The jobs table's keyset paging over 100k jobs in a real SQLite file.

The records are made in one ``store.create`` batch: 1,000 "maps" of 100 items
sharing one creation time each (the ties a cursor must get right), in two
backends and three states.  Pages are compared with the order the store
itself promises (newest first, ties by :func:`id_order`), and the last page is
read through the real server as a user's "older" links would.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from uiserver import ui_server

from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores._common import id_order
from jobkit.stores.base import Store
from jobkit.ui import paging

pytestmark = pytest.mark.timeout(120)
GROUPS, ITEMS = 1000, 100
STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def make(group: int, item: int) -> JobRecord:
    number = group * ITEMS + item
    return JobRecord(
        id=f"jk-g{group:04d}.{item}",
        name=f"train-{group % 7}",
        backend="slurm" if group % 2 else "local",
        state=STATES[number % 3],
        created_at=1_700_000_000.0 + group,
        array_id=f"jk-g{group:04d}",
        array_index=item,
        labels={"team": "rare"} if number % 997 == 0 else {"team": "common"},
    )


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, list[JobRecord]]]:
    path = Path(tmp_path_factory.mktemp("big")) / "jobs.db"
    url = f"sqlite:///{path}"
    records = [make(g, i) for g in range(GROUPS) for i in range(ITEMS)]
    store = open_store(url)
    store.create(records)
    expected = sorted(records, key=lambda r: (r.created_at, id_order(r.id)), reverse=True)
    try:
        yield url, store, expected
    finally:
        store.close()


def walk(store: Store, filters: paging.Filters, size: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = paging.page(store, filters, cursor, size)
        seen += [r.id for r in page.records]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_walking_every_page_visits_each_job_once_in_the_store_order(
    big: tuple[str, Store, list[JobRecord]],
) -> None:
    _, store, expected = big
    assert walk(store, paging.Filters(), 2000) == [r.id for r in expected]
    # Pages ending inside a tie (a map of 100 at one instant) resume inside it.
    filters = paging.Filters(states=[JobState.FAILED], backend="slurm")
    wanted = [r.id for r in expected if r.state is JobState.FAILED and r.backend == "slurm"]
    assert walk(store, filters, 777) == wanted


def test_a_deep_page_is_read_from_its_cursor_not_by_skipping(
    big: tuple[str, Store, list[JobRecord]],
) -> None:
    _, store, expected = big
    t0 = time.perf_counter()
    first = paging.page(store, paging.Filters())
    t1 = time.perf_counter()
    deep = paging.page(store, paging.Filters(), paging.cursor_of(expected[99_000 - 1]))
    t2 = time.perf_counter()
    assert [r.id for r in first.records] == [r.id for r in expected[:50]]
    assert [r.id for r in deep.records] == [r.id for r in expected[99_000:99_050]]
    print(f"first page {1000 * (t1 - t0):.1f} ms, page at 99,000: {1000 * (t2 - t1):.1f} ms")


def test_labels_filter_the_scanned_rows_and_the_scan_continues_on_the_next_page(
    big: tuple[str, Store, list[JobRecord]],
) -> None:
    _, store, expected = big
    rare = [r.id for r in expected if r.labels["team"] == "rare"]
    assert len(rare) > 50  # more than a page: the scan must continue
    assert walk(store, paging.Filters(labels={"team": "rare"}), 50) == rare


def test_a_bad_cursor_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="not a page cursor"):
        paging.parse_cursor("yesterday")


def test_the_server_pages_100k_jobs_through_its_older_links(
    big: tuple[str, Store, list[JobRecord]],
) -> None:
    url, _, expected = big
    with ui_server(url) as server:
        bearer = {"Authorization": f"Bearer {server.token}"}
        path = "/?state=&backend=local"
        local = [r.id for r in expected if r.backend == "local"]
        shown: list[str] = []
        for _ in range(3):
            request = urllib.request.Request(server.base + path, headers=bearer)
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read().decode()
            shown += re.findall(r'<td><a href="/jobs/([^"]+)">', body)
            older = re.search(r'id=older href="([^"]+)"', body)
            assert older is not None
            path = older.group(1).replace("&amp;", "&")
        assert shown == local[:150]
        deep = paging.cursor_of(next(r for r in expected[90_000:] if r.backend == "local"))
        request = urllib.request.Request(
            f"{server.base}/?backend=local&before={deep}", headers=bearer
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        took = 1000 * (time.perf_counter() - started)
        print(f"a page at 90,000 of 100,000 through HTTP: {took:.1f} ms")
        bad = urllib.request.Request(server.base + "/?before=yesterday", headers=bearer)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=30)
        assert caught.value.code == 400
        assert "not a page cursor" in caught.value.read().decode()


def test_inside_one_big_map_a_page_is_one_bounded_query_from_the_cursor(
    tmp_path: Path,
) -> None:
    """A map's items share ``created_at``: the SQLite store takes the cursor
    (``after=``), so the query for a deep page returns that page (and one row
    to know there is more), not every tied row before it."""
    from jobkit.stores.sqlite import SQLiteStore

    store = open_store(f"sqlite:///{tmp_path}/map.db")
    assert isinstance(store, SQLiteStore)
    items = [
        JobRecord(
            id=f"jk-map.{i}",
            name="one-map",
            backend="local",
            state=STATES[i % 3],
            created_at=1_700_000_000.0,
            array_id="jk-map",
            array_index=i,
        )
        for i in range(5000)
    ]
    lone = JobRecord(
        id="jk-older", name="x", backend="local", state=JobState.FAILED, created_at=1_600_000_000.0
    )
    store.create([*items, lone])
    try:
        expected = [f"jk-map.{i}" for i in range(4999, -1, -1)] + ["jk-older"]
        rows = store.query(after=(1_700_000_000.0, "jk-map.3000"), limit=51)
        assert [r.id for r in rows] == expected[2000:2051]
        failed = store.query(
            states=[JobState.FAILED], after=(1_700_000_000.0, "jk-map.11"), limit=5
        )
        assert [r.id for r in failed] == [
            "jk-map.10",
            "jk-map.7",
            "jk-map.4",
            "jk-map.1",
            "jk-older",
        ]
        assert walk(store, paging.Filters(), 333) == expected
        deep = paging.page(store, paging.Filters(), paging.cursor_of(items[2500]))
        assert [r.id for r in deep.records] == expected[2500:2550]
    finally:
        store.close()
