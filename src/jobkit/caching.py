"""Cached calls: a submit whose key already SUCCEEDED returns that result, run once.

Where things live, all in the store every process shares::

    cache/<key>        JSON pointer {job_id, name, function, created_at}: written
                       when a call with this key is submitted on a miss
    outcomes/<job_id>  the pointed-to job's outcome, signed for *its* id

    submit(f, calls) with resources.cache set
      └─ plan(): keys (jobkit.fingerprint) ─► get_blobs(cache/<key>...) ─► pointers
                 ─► get_many(job ids) ─► SUCCEEDED? ─► blobs_present(outcomes/...)
         hit:  a new record, SUCCEEDED at once, extra {cached_from, cache_key};
               nothing is submitted and no payload is written
         miss: submitted as usual (all misses of a map in one backend
               submission); remember() points cache/<key> at the new job
    result() of a hit: reads outcomes/<cached_from>, verified against that id

Only a pointer is written per key, never a copy of the outcome: a 1 GB result
cached a hundred times is stored once.  A pointer to a job that failed, was
cancelled, is still running or whose outcome was pruned is a miss, and the
next run's pointer replaces it.  Keys come from :mod:`jobkit.fingerprint`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobkit.states import JobRecord, JobState
from jobkit.stores.base import Store, outcome_key

PREFIX = "cache/"
"""Blob keys of cache pointers start with this."""


LIST_FIRST = 64
"""Above this many distinct keys, list the pointers before reading them: on S3 a
listing page answers for 1,000 keys, while each absent key costs a failed GET."""


def pointer_key(key: str) -> str:
    return f"{PREFIX}{key}"


def outcome_owner(record: JobRecord) -> str:
    """The id whose outcome blob holds ``record``'s result (the source of a cached job)."""
    source = record.extra.get("cached_from") if record.extra else None
    return source if isinstance(source, str) and source else record.id


def keyed_by_source(
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    states: Mapping[str, Sequence[JobRecord]],
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """``calls`` as they are keyed: a SUCCEEDED dependency passed as an argument
    stands for the job whose outcome it reads (:func:`outcome_owner`), so a
    stage downstream of a cache hit has the same key as the run it reuses
    (the hit is a new job with a new id, its result the source's)."""
    from jobkit.placeholders import KEEP, ArrayResults, JobResult, walk

    owners = {
        r.id: outcome_owner(r)
        for members in states.values()
        for r in members
        if r.state is JobState.SUCCEEDED
    }
    if not owners:
        return list(calls)

    def source(value: Any) -> Any:
        if isinstance(value, JobResult) and value.job_id in owners:
            return JobResult(owners[value.job_id])
        if isinstance(value, ArrayResults) and all(i in owners for i in value.item_ids):
            return ArrayResults("", tuple(owners[i] for i in value.item_ids))
        return KEEP

    return [(walk(args, source), walk(kwargs, source)) for args, kwargs in calls]


def cache_version(cache: bool | str) -> str | None:
    """``cache="v2"`` -> "v2" (the code is not hashed); ``cache=True`` -> None."""
    return cache if isinstance(cache, str) else None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which calls of one submission are served from the cache."""

    keys: list[str]
    """The key of each call, in order."""
    hits: dict[int, str]
    """Call index -> id of the SUCCEEDED job whose outcome answers it."""

    def cached_extra(self, index: int) -> dict[str, Any]:
        return {"cached_from": self.hits[index], "cache_key": self.keys[index]}


def plan(
    store: Store,
    fn: Callable[..., Any],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    cache: bool | str,
) -> Plan | None:
    """The cache keys of ``calls`` and those already answered; None when not cached.

    A few round trips for a whole map: one ``get_blobs`` of the pointers (a big
    map lists them first), one ``get_many`` of the jobs they name, one
    presence check of their outcomes.
    """
    if cache is False:
        return None
    from jobkit.fingerprint import call_keys

    keys = call_keys(fn, list(calls), version=cache_version(cache))
    wanted = {pointer_key(k) for k in keys}
    if len(wanted) > LIST_FIRST:  # a big map: one listing, then read only what exists
        wanted &= set(store.blob_keys(PREFIX))
    pointers = store.get_blobs(wanted) if wanted else {}
    sources: dict[str, str] = {}
    for blob_key, data in pointers.items():
        job_id = _pointer(bytes(data)).get("job_id")
        if isinstance(job_id, str):
            sources[blob_key[len(PREFIX) :]] = job_id
    hits: dict[int, str] = {}
    if sources:
        records = store.get_many(set(sources.values()))
        done = {i for i, r in records.items() if r.state is JobState.SUCCEEDED}
        present = store.blobs_present([outcome_key(i) for i in done])
        good = {i for i in done if outcome_key(i) in present}
        for index, key in enumerate(keys):
            source = sources.get(key)
            if source in good:
                hits[index] = source
    return Plan(keys, hits)


def fitted(plan: Plan, count: int, *, sparse: bool) -> Plan:
    """``plan`` as a backend can run it: one without ``sparse_arrays`` takes
    only an array's first items, so unless the misses are those, nothing is
    taken from the cache (every item runs, and its key points at the new job)."""
    if sparse or not plan.hits:
        return plan
    misses = count - len(plan.hits)
    if all(i not in plan.hits for i in range(misses)):
        return plan
    return Plan(plan.keys, {})


def as_cached(record: JobRecord, plan: Plan, index: int) -> JobRecord:
    """``record`` answered from the cache: SUCCEEDED from the start, never submitted."""
    return dataclasses.replace(
        record,
        state=JobState.SUCCEEDED,
        submitted_at=record.created_at,
        finished_at=record.created_at,
        exit_code=0,
        extra=plan.cached_extra(index),
    )


def remember(
    store: Store, plan: Plan, records: Sequence[JobRecord], fn: Callable[..., Any]
) -> None:
    """Point the keys of the calls that missed at the jobs just recorded for them."""
    function = f"{getattr(fn, '__module__', '') or ''}.{getattr(fn, '__qualname__', '?')}"
    blobs: dict[str, bytes] = {}
    for record in records:
        index = record.array_index if record.array_id is not None else 0
        if index is None or index in plan.hits:
            continue
        pointer = {
            "job_id": record.id,
            "name": record.name,
            "function": function,
            "created_at": record.created_at,
        }
        blobs[pointer_key(plan.keys[index])] = json.dumps(pointer, sort_keys=True).encode()
    if blobs:
        store.put_blobs(blobs)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One cache pointer, as ``jobkit cache list`` shows it."""

    key: str
    job_id: str
    name: str
    function: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def entries(store: Store, *, name: str | None = None) -> list[Entry]:
    """Every cache pointer in the store (newest first), optionally by job-name glob."""
    keys = store.blob_keys(PREFIX)
    found: list[Entry] = []
    for blob_key, data in store.get_blobs(keys).items():
        pointer = _pointer(bytes(data))
        entry = Entry(
            key=blob_key[len(PREFIX) :],
            job_id=str(pointer.get("job_id", "")),
            name=str(pointer.get("name", "")),
            function=str(pointer.get("function", "")),
            created_at=float(pointer.get("created_at") or 0.0),
        )
        if name is None or fnmatch.fnmatchcase(entry.name, name):
            found.append(entry)
    found.sort(key=lambda e: (-e.created_at, e.key))
    return found


def clear(store: Store, found: Sequence[Entry]) -> int:
    """Forget these pointers (the jobs and their outcomes stay); how many."""
    store.delete_blobs([pointer_key(e.key) for e in found])
    return len(found)


def _pointer(data: bytes) -> dict[str, Any]:
    """A pointer's JSON; an unreadable one is an empty dict (a miss, listed blank)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
