"""The SQL of the SQLite store and its row codec: what is on disk, apart from how it is reached.

:mod:`jobkit.stores.sqlite` owns the connection, its transactions and the
fork rules; this module owns the text that runs inside them -- the schema and
its version, the statements, the listing query -- and the two directions of
one row (:func:`row_values` for writing, :func:`decode` for reading).  A
schema change is one file to read; tests ``EXPLAIN QUERY PLAN`` the exact SQL
:func:`build_query` builds without opening a store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Any

from jobkit.errors import StoreError
from jobkit.states import JobRecord, JobState

from ._common import SQL_ID_ORDER, glob_to_sql, id_order

SCHEMA_VERSION = 2
BLOBS_TABLE = """CREATE TABLE IF NOT EXISTS blobs (
        key TEXT PRIMARY KEY NOT NULL,
        data BLOB NOT NULL,
        written_at REAL NOT NULL
    )"""
"""Small blobs (payloads and outcomes up to :data:`INLINE_MAX`) live in the
database: written in the transaction that records the state they go with,
read with one indexed lookup instead of an open/read/close of a file."""
INLINE_MAX = 128 * 1024
"""Largest blob kept inline; bigger ones are files (SQLite's own measurements
put the crossover between in-database and file blobs near 100 KB)."""
MIGRATIONS = {1: (BLOBS_TABLE,)}
"""Statements that bring a database of version N to N + 1."""
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        backend TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        array_id TEXT,
        priority INTEGER NOT NULL,
        owner TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    # Each index ends in (created_at, id): the listing order up to ties of
    # equal time, so a page of 50 is read off the index; only a run of equal
    # times (a map's items) is sorted, by index (see build_query).
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_backend ON jobs (backend, state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_by_array ON jobs (array_id, created_at, id)",
    BLOBS_TABLE,
)
PUT_BLOB = "INSERT OR REPLACE INTO blobs (key, data, written_at) VALUES (?, ?, ?)"
COLUMNS = "id, name, backend, state, created_at, array_id, priority, owner, data"
INSERT = f"INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
UPDATE = (
    "UPDATE jobs SET name = ?, backend = ?, state = ?, created_at = ?, array_id = ?,"
    " priority = ?, owner = ?, data = ? WHERE id = ? AND state = ?"
)
CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


def build_query(
    *,
    states: Collection[JobState] | None,
    backend: str | None,
    name: str | None,
    array_id: str | None,
    created_before: float | None,
    oldest_first: bool,
    after: tuple[float, str] | None = None,
) -> tuple[str, list[Any]]:
    """The SELECT behind :meth:`SQLiteStore.query`; bind ``[*params, limit, offset]``.

    The indexes give ``created_at`` order; only runs of equal times (a map's
    items) are sorted further, by :func:`._common.id_order` -- SQLite's
    partial "RIGHT PART OF ORDER BY" sort.  Several states are one query per
    state, each reading its index and keeping ``limit + offset`` rows, merged:
    ``state IN (...)`` would sort every matching row to find the first page.
    A backend without states is every state, so that it reads the backend index too.
    Separate so tests can ``EXPLAIN QUERY PLAN`` exactly what runs.

    ``after`` (``(created_at, id)`` of the last row shown, newest first only) is
    a keyset cursor: the rows after it in this order, ties included, so a page
    deep inside a map of tied items is read from where the last one ended
    instead of from the map's first item.
    """
    where: list[str] = []
    params: list[Any] = []

    def bind(condition: str, value: Any) -> None:
        params.append(value)
        where.append(condition.replace("?", f"?{len(params)}"))

    if states is None and backend is not None:
        # jobs_by_backend is (backend, state, created_at, id): one branch per state
        # reads it in order; "backend = ?" alone would sort every job of the backend.
        states = list(JobState)
    values = None if states is None else sorted({JobState(s).value for s in states})
    # A cutoff with several states (prune's question, every row wanted): the time
    # index up to the cutoff, in order, keeping those states ("+state": not through
    # jobs_by_state); the per-state union would sort all the rows, data included.
    by_time = bool(values and len(values) > 1 and created_before is not None)
    by_time = by_time and backend is None and array_id is None
    if by_time:
        marks = []
        for value in values or ():
            params.append(value)
            marks.append(f"?{len(params)}")
        where.append(f"+state IN ({', '.join(marks)})")
    elif values is not None and len(values) <= 1:
        if values:
            bind("state = ?", values[0])
        else:
            where.append("0")
    if backend is not None:
        bind("backend = ?", backend)
    if name is not None:
        bind("name GLOB ?", glob_to_sql(name))
    if array_id is not None:
        bind("array_id = ?", array_id)
    if created_before is not None:
        bind("created_at < ?", created_before)
    if after is not None:
        if oldest_first:
            raise ValueError("a keyset cursor (after=) pages newest first only")
        when, job_id = after
        bind("created_at <= ?", when)  # the time index's range; ties sorted below
        at = f"?{len(params)}"
        marks = []
        for part in id_order(job_id):
            params.append(part)
            marks.append(f"?{len(params)}")
        where.append(f"(created_at < {at} OR ({', '.join(SQL_ID_ORDER)}) < ({', '.join(marks)}))")
    order = "ASC" if oldest_first else "DESC"
    order_by = ", ".join(f"{term} {order}" for term in ("created_at", *SQL_ID_ORDER))
    if values is None or len(values) <= 1 or by_time:
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        limit, offset = f"?{len(params) + 1}", f"?{len(params) + 2}"
        sql = f"SELECT id, state, data FROM jobs{clause} ORDER BY {order_by}"
        return f"{sql} LIMIT {limit} OFFSET {offset}", params
    first_state = len(params) + 1
    limit, offset = f"?{first_state + len(values)}", f"?{first_state + len(values) + 1}"
    keep = f"CASE WHEN {limit} < 0 THEN -1 ELSE {limit} + {offset} END"
    branches = [
        "SELECT * FROM (SELECT id, state, data, created_at FROM jobs WHERE "
        f"{' AND '.join([f'state = ?{first_state + i}', *where])} "
        f"ORDER BY {order_by} LIMIT {keep})"
        for i in range(len(values))
    ]
    sql = (
        f"SELECT id, state, data FROM ({' UNION ALL '.join(branches)}) "
        f"ORDER BY {order_by} LIMIT {limit} OFFSET {offset}"
    )
    return sql, [*params, *values]


def row_values(record: JobRecord, text: str) -> tuple[Any, ...]:
    """The column values of ``record``, whose JSON is ``text``: always written together."""
    return (
        record.id,
        record.name,
        record.backend,
        record.state.value,
        record.created_at,
        record.array_id,
        record.priority,
        record.owner,
        text,
    )


def decode(job_id: object, state: object, data: object) -> JobRecord:
    """The record in a row's ``data``; StoreError if it does not parse or disagrees
    with the row's ``id``/``state`` columns (the caller adds which store and the fix)."""
    if not isinstance(data, (str, bytes)):
        raise StoreError(f"data is {type(data).__name__}, not JSON text")
    try:
        values = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"data is not JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise StoreError(f"data is a JSON {type(values).__name__}, not an object")
    try:
        record = JobRecord.from_dict(values)
    except StoreError as exc:
        raise StoreError(str(exc.__cause__ or exc)) from exc
    if record.id != job_id or record.state.value != state:
        raise StoreError(
            f"columns (id={job_id!r}, state={state!r}) disagree with its JSON "
            f"(id={record.id!r}, state={record.state.value!r})"
        )
    return record


def existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """Which of ``ids`` have a row: to name the clashes when an insert fails."""
    found: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)
        )
    return found
