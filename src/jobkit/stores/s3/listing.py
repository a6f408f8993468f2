"""How the S3 store answers ``query``: merge index listings, read only what a page needs.

::

    index/RUNNING/  ─ LIST (limit+1 keys) ─┐
    index/QUEUED/   ─ LIST (limit+1 keys) ─┼─► merge newest first ─► groups of equal time
    ...                                    ┘            │
                                                        ▼
              GET the records of the next groups (about `limit - found` of them at once)
                                                        │
                                                        ▼
              keep records that match every filter, ordered by id_order within a group
                                              (a map's items by index)

Index keys (see :mod:`~jobkit.stores.s3.layout`) are only hints: the record
read back decides whether a job matches, and a job is taken from the key
whose time equals its ``created_at``, once.  What the key itself says
(backend, name, time) spares the GET of a job that cannot match, so a
filtered page also costs about ``limit`` GETs; only names too long for a key
must be read to be judged.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Callable, Collection, Iterator, Sequence

from jobkit.states import JobRecord, JobRow, JobState

from .._common import glob_matches, id_order
from .layout import Entry, Layout, time_token

LIST_PAGE = 1000
"""The most keys one ListObjectsV2 request returns."""

ListPages = Callable[[str, "str | None", int], Iterator[list[str]]]
"""``(prefix, start_after, first_page_size)`` -> pages of keys, in S3's order."""
ReadMany = Callable[[Sequence[str]], list["JobRecord | None"]]
"""Job ids -> their records (None when absent or unreadable), in order, in parallel."""
RunAll = Callable[[Callable[["Stream"], None], Sequence["Stream"]], object]
"""Runs a function over streams in parallel (the store's request pool)."""


@dataclasses.dataclass(frozen=True)
class Query:
    """The filters of one ``Store.query`` call."""

    states: frozenset[JobState] | None
    backend: str | None
    name: str | None
    array_id: str | None
    created_before: float | None
    limit: int | None
    oldest_first: bool

    def matches(self, record: JobRecord) -> bool:
        return (
            (self.states is None or record.state in self.states)
            and (self.backend is None or record.backend == self.backend)
            and (self.name is None or glob_matches(record.name, self.name))
            and (self.array_id is None or record.array_id == self.array_id)
            and (self.created_before is None or record.created_at < self.created_before)
        )

    def hinted(self, entry: Entry) -> bool:
        """Whether the job an index key names may match, judging by the key alone."""
        return (
            (entry.backend is None or self.backend is None or entry.backend == self.backend)
            and (self.created_before is None or entry.created_at < self.created_before)
            and (entry.name is None or self.name is None or glob_matches(entry.name, self.name))
        )

    def bases(self, layout: Layout) -> list[str]:
        """The index prefixes to list: the array's, or one per wanted state."""
        if self.array_id is not None:
            return [layout.array_index(self.array_id)]
        return [layout.state_index(s) for s in sorted(self.states or JobState)]


def run_query(
    query: Query, layout: Layout, list_pages: ListPages, read_many: ReadMany, run_all: RunAll
) -> list[JobRecord]:
    """The records ``query`` asks for, newest (or oldest) first."""
    first_page = LIST_PAGE
    if query.limit is not None and not (query.name or query.backend or query.oldest_first):
        first_page = min(query.limit + 1, LIST_PAGE)  # the page, and one to see if ties go on
    start_after = None
    if query.created_before is not None and not query.oldest_first:
        start_after = time_token(query.created_before) + "~"  # sorts after "<time>/..."
    streams = [
        Stream(layout, b, list_pages(b, start_after and b + start_after, first_page))
        for b in query.bases(layout)
    ]
    run_all(Stream.fill, streams)  # the first page of every prefix at once
    groups = oldest_first(streams) if query.oldest_first else newest_first(streams)
    return pick(query, groups, read_many)


def run_rows(
    query: Query, layout: Layout, list_pages: ListPages, read_many: ReadMany, run_all: RunAll
) -> list[JobRow]:
    """The list rows of the jobs ``query`` asks for, newest first, from index keys."""
    first_page = LIST_PAGE
    if query.limit is not None and not (query.name or query.backend):
        first_page = min(query.limit + 1, LIST_PAGE)
    streams = [Stream(layout, b, list_pages(b, None, first_page)) for b in query.bases(layout)]
    run_all(Stream.fill, streams)
    found: list[JobRow] = []
    for group in newest_first(streams):
        newest: dict[str, Entry] = {}  # a job's keys share its time: keep its newest generation
        for entry in group:
            if query.hinted(entry) and (
                entry.job_id not in newest or (entry.gen or 0) > (newest[entry.job_id].gen or 0)
            ):
                newest[entry.job_id] = entry
        rows = {i: e.job_row() for i, e in newest.items()}
        unread = [i for i, row in rows.items() if row is None]
        for record in read_many(unread) if unread else ():
            if record is not None and record.created_at == newest[record.id].created_at:
                rows[record.id] = JobRow.of(record)
        picked = [
            row
            for row in rows.values()
            if row is not None
            and (query.name is None or glob_matches(row.name, query.name))
            and (query.states is None or row.state in query.states)
        ]
        found += sorted(picked, key=lambda r: id_order(r.id), reverse=True)
        if query.limit is not None and len(found) >= query.limit:
            return found[: query.limit]
    return found


class Stream:
    """One index prefix, listed lazily a page at a time, decoded into entries."""

    def __init__(self, layout: Layout, base: str, pages: Iterator[list[str]]) -> None:
        self._layout = layout
        self._base = base
        self._pages = pages
        self._buffer: collections.deque[Entry] = collections.deque()
        self._done = False

    def fill(self) -> None:
        """Read pages until one holds an entry or the listing ends."""
        while not self._buffer and not self._done:
            page = next(self._pages, None)
            if page is None:
                self._done = True
                return
            for key in page:
                entry = self._layout.parse(self._base, key)
                if entry is not None:
                    self._buffer.append(entry)

    def head(self) -> Entry | None:
        self.fill()
        return self._buffer[0] if self._buffer else None

    def pop(self) -> Entry:
        return self._buffer.popleft()


def newest_first(streams: Collection[Stream]) -> Iterator[list[Entry]]:
    """Entries of all streams merged newest first, in groups of equal time."""
    while True:
        heads = [(s, e) for s in streams if (e := s.head()) is not None]
        if not heads:
            return
        newest = min(e.time for _, e in heads)  # times sort descending
        group: list[Entry] = []
        for stream, _ in heads:
            while (entry := stream.head()) is not None and entry.time == newest:
                group.append(stream.pop())
        yield group


def oldest_first(streams: Collection[Stream]) -> Iterator[list[Entry]]:
    """Every entry of all streams (the oldest come last from S3), oldest first."""
    entries: list[Entry] = []
    for stream in streams:
        while stream.head() is not None:
            entries.append(stream.pop())
    entries.sort(key=lambda e: e.time, reverse=True)
    for _, group in itertools.groupby(entries, key=lambda e: e.time):
        yield list(group)


def pick(query: Query, groups: Iterator[list[Entry]], read_many: ReadMany) -> list[JobRecord]:
    """Read the records the entries name, a round at a time, until ``limit`` match."""
    found: list[JobRecord] = []
    seen: set[str] = set()
    cache: dict[str, JobRecord | None] = {}
    exhausted = False
    while not exhausted:
        wanted = 256 if query.limit is None else query.limit - len(found)
        chosen: list[list[Entry]] = []
        count = 0
        while count < wanted:
            group = next(groups, None)
            if group is None:
                exhausted = True
                break
            group = [e for e in group if e.job_id not in seen and query.hinted(e)]
            chosen.append(group)
            count += len({e.job_id for e in group} - cache.keys())
        unread = [i for i in dict.fromkeys(e.job_id for g in chosen for e in g) if i not in cache]
        cache.update(zip(unread, read_many(unread), strict=True))
        for group in chosen:
            picked: dict[str, JobRecord] = {}
            for entry in group:
                record = cache.get(entry.job_id)
                if (
                    record is not None
                    and record.id not in seen
                    and record.created_at == entry.created_at  # else taken at its own time
                    and query.matches(record)
                ):
                    picked[record.id] = record
            seen.update(picked)
            found += sorted(
                picked.values(), key=lambda r: id_order(r.id), reverse=not query.oldest_first
            )
            if query.limit is not None and len(found) >= query.limit:
                return found[: query.limit]
    return found
