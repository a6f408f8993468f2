"""Rerun what failed: ended jobs back to PENDING as new attempts of the same ids.

Data flow (``Client.retry``, ``JobArray.retry_failed``, ``jobkit retry``)::

    ids ──► plan: FAILED | CANCELLED  ─► rerun
                  SUCCEEDED, active   ─► refused by name (ids), left as they are (arrays)
        ──► reopen: one transition_many, one compare-and-set per job
              FAILED|CANCELLED ─► PENDING   attempt + 1, attempts += the ended one,
                                            the end's fields cleared, extra.submitter = us
        ──► delete outcomes/<id> and usage/<id> of the reopened jobs (no reader
              finds the old error, or the old attempt's series)
        ──► backend.submit(group, resources)  one submission per backend, array and
                                              resources (Slurm: one sbatch --array=3,7,12)
        ──► reconcile.accept ─► QUEUED         (refused: FAILED/SUBMIT_ERROR, as on submit)

The payload blob is kept, so the new attempt runs the same call.  A late
writer of the old attempt cannot end the new one while it waits: a worker
records its end only from RUNNING, an observer only from the state it read
(see :mod:`jobkit.states`).  A crash between reopen and submit leaves PENDING
jobs whose submitter is dead: the reconciler hands them over as it does for a
crashed ``submit`` (:func:`jobkit.reconcile.observable`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from jobkit.errors import ConfigError
from jobkit.reconcile import attempt_entry
from jobkit.states import JobRecord, JobState
from jobkit.stores.base import Change, Store, outcome_key
from jobkit.submitter import current as current_submitter
from jobkit.usage import usage_key

__all__ = ["RERUNNABLE", "groups", "refusal", "reopen"]

RERUNNABLE = (JobState.FAILED, JobState.CANCELLED)
"""The ends a rerun leaves: SUCCEEDED is final (its result is kept), and an
active job is still running its attempt."""

CLEARED: dict[str, Any] = {
    "finished_at": None,
    "failure_reason": None,
    "message": None,
    "exit_code": None,
    "backend_id": None,
    "started_at": None,
    "submitted_at": None,
    "host": None,
    "pid": None,
    "native_state": None,
    "usage": {},
}
"""The fields of the ended attempt a new one starts without (kept in
``attempts``; its usage summary under the entry's ``usage`` key)."""

DROPPED_EXTRA = ("released_at", "failed_dependency", "held", "stdout", "stderr")
"""``extra`` keys that described the ended attempt's submission."""


def refusal(records: Sequence[JobRecord]) -> str | None:
    """Why these jobs cannot all be rerun (one line naming them), or None."""
    bad = [r for r in records if r.state not in RERUNNABLE]
    if not bad:
        return None
    shown = ", ".join(f"{r.id} ({r.state.value})" for r in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return (
        f"cannot retry {shown}{more}: only FAILED or CANCELLED jobs are rerun "
        "(a SUCCEEDED job keeps its result; an active one is still running); "
        "leave them out, or retry their array to rerun just its failed items"
    )


def reopen(store: Store, records: Sequence[JobRecord]) -> list[JobRecord]:
    """Move each ended job back to PENDING as its next attempt; returns the
    reopened records (a job that moved meanwhile, e.g. rerun by another
    process, is left out).  Deletes their old outcomes."""
    if not records:
        return []
    now = time.time()
    submitter = dict(current_submitter())
    changes: list[Change] = []
    for record in records:
        if record.state not in RERUNNABLE:
            raise ConfigError(refusal([record]) or "")
        reason = record.failure_reason.value if record.failure_reason else record.state.value
        entry = attempt_entry(record, reason, record.message or "", now=now)
        if record.finished_at is not None:
            entry["ended_at"] = record.finished_at
        extra: dict[str, Any] = {k: v for k, v in record.extra.items() if k not in DROPPED_EXTRA}
        extra["submitter"] = submitter
        extra["rerun_at"] = now
        extra["rerun_attempt"] = record.attempt + 1  # later attempts are retries, not the rerun
        fields = {
            **CLEARED,
            "attempt": record.attempt + 1,
            "attempts": [*record.attempts, entry],
            "extra": extra,
        }
        changes.append(Change(record.id, JobState.PENDING, (record.state,), fields))
    moved = [m for m in store.transition_many(changes) if m is not None]
    store.delete_blobs(key for m in moved for key in (outcome_key(m.id), usage_key(m.id)))
    return moved


def groups(records: Sequence[JobRecord]) -> list[list[JobRecord]]:
    """``records`` split into what one backend submission can take: the same
    backend, array and resources (items whose memory grew after an OOM ask for
    other resources than their siblings), in array order."""
    grouped: dict[tuple[str, str | None, str], list[JobRecord]] = {}
    for record in records:
        key = (
            record.backend,
            record.array_id,
            json.dumps(record.resources, sort_keys=True, default=str),
        )
        grouped.setdefault(key, []).append(record)
    return [
        sorted(g, key=lambda r: r.array_index if r.array_index is not None else -1)
        for g in grouped.values()
    ]
