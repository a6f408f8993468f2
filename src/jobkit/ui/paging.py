"""The jobs table's pages: keyset paging over the store's time index.

A page never counts or skips what came before it, so page 2,000 of 100k jobs
costs what page 1 does::

    cursor "T~ID" (the last row shown) ──► Store.query(created_before=just after T,
                                                        limit=batch, filters...)
                                      └─► drop rows at or before the cursor
                                          (ties: a map's items share T) ──► page

The store orders equal times by :func:`jobkit.stores._common.id_order`, so
the cursor's id settles which tied rows were shown.  A SQLite store takes the
cursor itself (``SQLiteStore.query(after=...)``): the rows after it, ties
included, so a page inside a 100k-item map costs what page 1 does.  Other
stores (S3, memory) have no such argument in the :class:`Store` contract:
there a page inside a run of ties re-reads the run from its first row
(doubling the batch), so page N of one big map reads about N pages of it.
Labels are not indexed:
they filter the scanned rows here, and a page stops scanning after
:data:`SCAN_LIMIT` rows (the "older" link then continues the scan).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping

from jobkit.states import JobRecord, JobState
from jobkit.stores._common import id_order
from jobkit.stores.base import Store
from jobkit.stores.sqlite import SQLiteStore

PAGE_SIZE = 50
SCAN_LIMIT = 5000
"""Rows read at most for one page when labels filter (unindexed) rows out."""


@dataclasses.dataclass(frozen=True)
class Filters:
    """What the jobs table was asked to show (indexed filters, then labels)."""

    states: Collection[JobState] | None = None
    backend: str | None = None
    name: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Page:
    records: list[JobRecord]
    next_cursor: str | None
    """Where the next (older) page starts, or None at the oldest job."""


def cursor_of(record: JobRecord) -> str:
    return f"{record.created_at!r}~{record.id}"


def parse_cursor(text: str) -> tuple[float, str]:
    """``T~ID`` back to its parts; ValueError says what a cursor looks like."""
    when, sep, job_id = text.partition("~")
    try:
        value = float(when)
    except ValueError:
        value = math.nan
    if not sep or not job_id or not math.isfinite(value):
        raise ValueError(f"{text!r} is not a page cursor (TIME~JOB_ID, as the 'older' link has)")
    return value, job_id


def page(store: Store, filters: Filters, cursor: str | None = None, size: int = PAGE_SIZE) -> Page:
    """The ``size`` newest jobs older than ``cursor`` that match ``filters``."""
    after = parse_cursor(cursor) if cursor else None
    found: list[JobRecord] = []
    scanned = 0
    batch = size + 1
    while True:
        if isinstance(store, SQLiteStore):
            rows = store.query(
                states=filters.states,
                backend=filters.backend,
                name=filters.name,
                after=after,
                limit=batch,
            )
        else:
            rows = store.query(
                states=filters.states,
                backend=filters.backend,
                name=filters.name,
                created_before=math.nextafter(after[0], math.inf) if after else None,
                limit=batch,
            )
        fresh = [r for r in rows if after is None or _older(r, after)]
        if not fresh and len(rows) == batch:  # only ties already shown: read more of them
            batch *= 2
            continue
        for record in fresh:
            scanned += 1
            if _labels_match(record, filters.labels):
                found.append(record)
            if len(found) > size:  # one more than a page: there is an older page
                return Page(found[:size], cursor_of(found[size - 1]))
            if scanned >= SCAN_LIMIT:  # labels filtered most rows out: stop here
                return Page(found, cursor_of(record))
        if len(rows) < batch:  # the oldest job was read
            return Page(found, None)
        after = (fresh[-1].created_at, fresh[-1].id)


def _older(record: JobRecord, cursor: tuple[float, str]) -> bool:
    if record.created_at != cursor[0]:
        return record.created_at < cursor[0]
    return id_order(record.id) < id_order(cursor[1])


def _labels_match(record: JobRecord, labels: Mapping[str, str]) -> bool:
    return all(record.labels.get(key) == value for key, value in labels.items())
