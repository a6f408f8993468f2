"""Many compare-and-sets at once on S3, which has no multi-object transaction.

:meth:`S3Store.transition_many` is how a Kubernetes map's items move from
PENDING to QUEUED (and how any batch of moves goes).  Each change is still
its own compare-and-set on its record's ETag; what is batched is the
waiting: every phase sends its requests for all changes concurrently
(``workers`` at a time), and the old index keys of all of them go in one
DeleteObjects::

    read      GET jobs/<id>.json ─ or the record this store itself wrote last
              (create, an earlier batch: ``Written``), whose ETag it kept
    check     legal move?  no ─► None (a remembered record is re-read first)
    index     PUT the new state keys               (all changes, concurrently)
    write     PUT jobs/<id>.json  If-Match: <ETag> (all changes, concurrently)
    tidy      DeleteObjects of every old state key (1 request per 1,000 changes)
    lost race (412/409) ─► that change alone goes through ``_modify`` (re-read, retry)

Cost per change: 2 PUTs plus a 1/1,000 share of one DeleteObjects when the
record was written by this store last (a map's accept right after its
create), one GET more otherwise; the one-at-a-time ``transition`` costs
GET + 2 PUTs + DELETE.  A remembered ETag is only a guess: If-Match makes a
stale one a lost race, never a lost update.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobkit.states import JobRecord

from .._common import apply_fields
from ..base import Change
from .errors import Conflict, Missing
from .layout import next_generation

if TYPE_CHECKING:
    from jobkit.states import JobState

    from .store import S3Store

REMEMBERED = 100_000
"""Records whose ETag a store keeps after writing them (about 1 KiB each):
enough for a large map's accept to skip its GETs, bounded for long-lived clients."""


@dataclasses.dataclass(frozen=True)
class Stored:
    """A record as stored, with its ETag and index generation."""

    record: JobRecord
    etag: str
    gen: int


class Written:
    """The records this store wrote last, by id: a guess at their ETag that
    saves the GET before the next write (If-Match checks the guess)."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self.limit = limit
        self._items: collections.OrderedDict[str, Stored] = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, stored: Stored) -> None:
        with self._lock:
            self._items[stored.record.id] = stored
            self._items.move_to_end(stored.record.id)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def take(self, job_id: str) -> Stored | None:
        """The remembered record, forgotten (the write about to be made replaces it)."""
        with self._lock:
            return self._items.pop(job_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclasses.dataclass
class _Plan:
    """One change between the phases: what was read and what will be written."""

    change: Change
    sources: frozenset[JobState]
    stored: Stored | None = None
    updated: JobRecord | None = None
    text: str = ""
    gen: int = 0
    outcome: str = "refused"  # refused | written | lost | missing


def transition_all(
    store: S3Store, changes: Sequence[Change], sources: Sequence[frozenset[JobState]]
) -> list[JobRecord | None]:
    """Apply ``changes`` (distinct job ids) phase by phase; see the module docstring."""
    plans = [_Plan(c, s) for c, s in zip(changes, sources, strict=True)]
    store._map(lambda p: _read(store, p), plans)
    moving = [p for p in plans if p.stored is not None and p.updated is not None]
    layout = store.layout
    new_keys = {p.change.job_id: layout.index_keys(p.updated, p.gen) for p in moving if p.updated}
    old_keys = {
        p.change.job_id: layout.index_keys(p.stored.record, p.stored.gen)
        for p in moving
        if p.stored
    }
    store._put_markers(
        k for p in moving for k in new_keys[p.change.job_id] - old_keys[p.change.job_id]
    )
    store._map(lambda p: _write(store, p), moving)
    store._tidy(
        sorted(
            k
            for p in moving
            if p.outcome in ("written", "missing")
            # written: its old keys; deleted meanwhile: the keys written for it above
            for k in (
                old_keys[p.change.job_id] - new_keys[p.change.job_id]
                if p.outcome == "written"
                else new_keys[p.change.job_id] - old_keys[p.change.job_id]
            )
        )
    )
    results: list[JobRecord | None] = []
    for plan in plans:
        if plan.outcome == "written":
            results.append(plan.updated)
        elif plan.outcome == "lost":  # one at a time, as transition would (not in the pool)
            results.append(_retry(store, plan))
        else:
            results.append(None)
    return results


def _read(store: S3Store, plan: _Plan) -> None:
    """The record and what the change makes of it (no write)."""
    job_id = plan.change.job_id
    stored = store._written.take(job_id)
    if stored is None or stored.record.state not in plan.sources:
        stored = store._load(job_id)  # a refusal is judged on the stored record, never a guess
    if stored is None:
        plan.outcome = "missing"
        return
    plan.stored = stored
    if stored.record.state not in plan.sources:
        return
    plan.updated, plan.text = apply_fields(
        stored.record, plan.change.fields, state=plan.change.state
    )
    plan.gen = next_generation(stored.record, plan.updated, stored.gen)


def _write(store: S3Store, plan: _Plan) -> None:
    assert plan.stored is not None and plan.updated is not None
    try:
        etag = store._put_record(plan.updated, plan.text, plan.gen, etag=plan.stored.etag)
    except Conflict:
        plan.outcome = "lost"
        return
    except Missing:  # deleted between the read and the write
        plan.outcome = "missing"
        return
    plan.outcome = "written"
    store._written.remember(Stored(plan.updated, etag, plan.gen))


def _retry(store: S3Store, plan: _Plan) -> JobRecord | None:
    """A change that lost its race: read again and retry, leaving no stale key."""
    from jobkit.errors import JobNotFoundError

    assert plan.updated is not None and plan.stored is not None
    leftovers: dict[str, int] = {}
    if plan.gen != plan.stored.gen:
        leftovers[store.layout.state_key(plan.updated, plan.gen)] = plan.gen
    try:
        return store._modify(
            plan.change.job_id,
            dict(plan.change.fields),
            plan.change.state,
            plan.sources,
            leftovers,
        )
    except JobNotFoundError:  # deleted meanwhile: the key written for it is nobody's
        store._tidy(sorted(leftovers))
        return None
