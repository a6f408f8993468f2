"""Pruning the store: what to delete, decided before anything is deleted.

Pruning is split into a *plan* (a pure read of the store) and its
*execution*, so a dry run shows exactly what a real run would remove.
Only jobs in a final state are ever planned: a final state has no way out
(see :data:`jobkit.states.LEGAL_TRANSITIONS`), so a job chosen here cannot
come back to life between the query and the delete.  Deleting a record
removes its payload and outcome blobs (the store does that); the log files a
backend listed in ``record.extra["stdout"/"stderr"]`` are removed here.
The ``jobkit prune`` command only parses its options and renders these.

Orphan payloads: a client writes each job's payload blob *before* its
record, so one killed in between leaves payloads that no record points to.
Every prune finds them (``Store.payload_blobs`` less the ids that have a
record, readable or corrupted) and removes those older than
:data:`ORPHAN_GRACE`, which no live submission can still be writing.
Orphan usage series: a sampler's live write that lands just after its job
was pruned.  Every job with a record has a payload, so only the series whose
id has no payload are checked for a record (a few reads, not a scan).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import stat
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

from jobkit.errors import JobNotFoundError, StoreError, StoreUnavailableError
from jobkit.states import JobRecord, JobState
from jobkit.stores.base import Store, payload_key
from jobkit.usage import USAGE_PREFIX, usage_key

__all__ = ["PrunePlan", "execute", "plan"]

_LOG_KEYS = ("stdout", "stderr")

ORPHAN_GRACE = 3600.0
"""Seconds a payload must be older than to be pruned without a record: far
more than writing the payloads of the largest map to S3 takes, before its
records are created."""


@dataclasses.dataclass
class PrunePlan:
    records: list[JobRecord]
    corrupted: dict[str, str]
    """Ids of unreadable records, with what is wrong with each."""
    log_files: list[str]
    cutoff: float | None
    """Jobs created before this time (epoch seconds) are planned; None: none by age."""
    orphans: list[str] = dataclasses.field(default_factory=list)
    """Job ids whose payload blob has no record (their submitter died first)."""
    orphan_series: list[str] = dataclasses.field(default_factory=list)
    """Job ids whose usage series has no record (written as the job was pruned)."""

    @property
    def job_ids(self) -> list[str]:
        return [r.id for r in self.records] + list(self.corrupted)

    def state_counts(self) -> dict[str, int]:
        """Planned jobs per state, in lifecycle order, states with none left out."""
        counts = collections.Counter(r.state for r in self.records)
        return {s.value: counts[s] for s in JobState if counts[s]}

    def to_dict(self, *, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "cutoff": self.cutoff,
            "jobs": [r.id for r in self.records],
            "states": self.state_counts(),
            "corrupted": sorted(self.corrupted),
            "orphan_payloads": len(self.orphans),
            "orphan_series": len(self.orphan_series),
            "log_files": self.log_files,
        }


def plan(
    store: Store,
    *,
    states: Sequence[JobState],
    age: timedelta | None,
    corrupted: bool,
    now: float,
    orphan_grace: float = ORPHAN_GRACE,
) -> PrunePlan:
    """What a prune would delete; reads the store, changes nothing."""
    records: list[JobRecord] = []
    cutoff = None
    if age is not None:
        cutoff = now - age.total_seconds()
        found = store.query(states=states, created_before=cutoff, oldest_first=True)
        records = [r for r in found if r.is_terminal]  # never a live job, whatever the store says
    bad: dict[str, str] = {}
    find_corrupted = getattr(store, "find_corrupted", None)
    if corrupted and callable(find_corrupted):
        bad = dict(find_corrupted())
    logs = [
        path
        for r in records
        for key in _LOG_KEYS
        if isinstance(path := r.extra.get(key), str) and path
    ]
    payloads = store.payload_blobs()
    orphans = orphan_payloads(
        store,
        now=now,
        grace=orphan_grace,
        known_bad=bad if corrupted else None,
        recorded={r.id for r in records},
        listed=payloads,
    )
    series = orphan_series(store, payloads, recorded={r.id for r in records})
    return PrunePlan(records, bad, list(dict.fromkeys(logs)), cutoff, orphans, series)


def orphan_series(
    store: Store, payloads: Collection[str], *, recorded: Collection[str] = ()
) -> list[str]:
    """Ids of usage series that no record points to; ``payloads``: the ids
    that have a payload (and so a record, or an orphan payload's fate)."""
    try:
        keys = store.blob_keys(USAGE_PREFIX)
    except StoreUnavailableError:
        raise
    except StoreError:  # a store that cannot list its blobs has none to prune
        return []
    ids = [k[len(USAGE_PREFIX) :] for k in keys]
    unknown = [i for i in ids if i not in payloads and i not in recorded]
    if not unknown:
        return []
    readable = store.get_many(unknown)
    return sorted(i for i in unknown if i not in readable and not _has_record(store, i))


def orphan_payloads(
    store: Store,
    *,
    now: float,
    grace: float = ORPHAN_GRACE,
    known_bad: dict[str, str] | None = None,
    recorded: Collection[str] = (),
    listed: Mapping[str, float] | None = None,
) -> list[str]:
    """Ids of payloads older than ``grace`` seconds that no record points to
    (``listed``: ``store.payload_blobs()``, where the caller has it).

    A corrupted record still points to its payload: candidates whose record
    did not read are probed one by one (up to :data:`PROBE_MAX`), or by one
    ``find_corrupted`` scan; ``known_bad`` saves both when the caller already
    made that scan.  ``recorded``: ids whose records the caller just read (the
    plan's), not read again -- a prune of 100,000 jobs would otherwise parse
    their records twice.
    """
    old = [
        i
        for i, written in (store.payload_blobs() if listed is None else listed).items()
        if now - written >= grace and i not in recorded
    ]
    if not old:
        return []
    readable = store.get_many(old)
    unknown = [i for i in old if i not in readable]
    if not unknown:
        return []
    if known_bad is not None:
        return sorted(i for i in unknown if i not in known_bad)
    if len(unknown) <= PROBE_MAX:  # a few: one read each, not a parse of the store
        return sorted(i for i in unknown if not _has_record(store, i))
    bad = store.find_corrupted()
    return sorted(i for i in unknown if i not in bad)


PROBE_MAX = 100
"""Up to this many payloads without a readable record are checked one by one
(:func:`_has_record`); more, and one ``find_corrupted`` scan is cheaper.  On a
100,000-job store that scan parses every record, seconds that one orphan
should not cost."""


def _has_record(store: Store, job_id: str) -> bool:
    """Whether ``job_id`` has a record, readable or not (a corrupted one still
    points to its payload); one that appeared since ``get_many`` counts too."""
    try:
        store.get(job_id)
    except JobNotFoundError:
        return False
    except StoreUnavailableError:
        raise
    except StoreError:
        return True  # there, but unreadable: corrupted
    return True


def execute(store: Store, planned: PrunePlan) -> list[str]:
    """Delete the planned records, then their log files; returns files not removed."""
    if planned.job_ids:
        store.delete(planned.job_ids)
    if planned.orphans:
        store.delete_blobs(payload_key(i) for i in planned.orphans)
    if planned.orphan_series:
        store.delete_blobs(usage_key(i) for i in planned.orphan_series)
    failures = []
    for path in planned.log_files:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                failures.append(f"{path}: is a directory, not a log file")
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            failures.append(f"{path}: {exc.strerror or exc}")
    return failures
