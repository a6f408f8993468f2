"""The one place that decides how a job failed and whether it runs again.

Who writes which state (every arrow is the store's compare-and-set)::

    client.submit ──► PENDING ──(backend refused: submit_failed)──► FAILED/SUBMIT_ERROR
    backend.submit ─► QUEUED
    worker ─────────► RUNNING ──► SUCCEEDED
                         │
                         └─ the function raised ─► settle ─┬─► QUEUED, attempt + 1   (retry)
                                                           └─► FAILED/ERROR          (final)
    agent / Slurm / Kubernetes observations
      (the worker could not record: killed, OOM, time limit, node gone)
                         └─────────────────────► settle ─┬─► QUEUED, attempt + 1
                                                           └─► FAILED/TIMEOUT|OOM|LOST|PREEMPTED
    cancel ─────────► CANCELLED

Nothing outside this module writes ``FAILED`` (a unit test greps ``src/`` for
it): :func:`fail` is that write, :func:`retries_left` the one count of what is
left, :func:`retry_allowed` the one policy, and :func:`settle` the decision
between the two outcomes.  An observer hands :func:`settle` a :class:`Failure`
(reason, message, exit code, native state): the shape a backend's future
``observe()`` result is reduced to, so backends can stop writing states
without this module changing.

The policy today retries every failure except ``SUBMIT_ERROR`` while
``resources["retries"]`` exceeds the attempts already made
(:data:`RETRIED_BY_DEFAULT`); a per-job ``retry_on`` will plug into
:func:`retry_allowed` alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection
from typing import Any

from jobkit.states import ACTIVE_STATES, FailureReason, JobRecord, JobState
from jobkit.stores.base import Store

RETRIED_BY_DEFAULT: frozenset[FailureReason] = frozenset(FailureReason) - {
    FailureReason.SUBMIT_ERROR
}
"""Failure classes a job's ``retries`` cover.  ``SUBMIT_ERROR`` never: the same
payload or the same refusal would fail the same way again."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, as its observer saw it."""

    reason: FailureReason
    message: str
    exit_code: int | None = None
    native_state: str | None = None
    """The scheduler's own word for the end (``OUT_OF_MEMORY``, ``Failed/OOM``)."""


def retries_left(record: JobRecord) -> int:
    """How many more attempts ``record`` may make: its ``retries`` minus the
    requeues already recorded in ``attempt`` (never below zero)."""
    try:
        total = int(record.resources.get("retries") or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, total - record.attempt)


def retry_allowed(record: JobRecord, reason: FailureReason) -> bool:
    """Whether a failure of this class goes back to the queue rather than ending the job."""
    return reason in RETRIED_BY_DEFAULT and retries_left(record) > 0


def fail(
    store: Store,
    job_id: str,
    failure: Failure,
    *,
    expect: Collection[JobState] = ACTIVE_STATES,
    finished_at: float | None = None,
) -> JobRecord | None:
    """Record the job FAILED for ``failure``, if its state is still in ``expect``.

    Returns the failed record, or None when the job had already moved on (a
    late observer must not overwrite what the worker or a cancel recorded).
    """
    fields: dict[str, Any] = {
        "failure_reason": failure.reason,
        "message": failure.message,
        "exit_code": failure.exit_code,
        "finished_at": time.time() if finished_at is None else finished_at,
    }
    if failure.native_state is not None:
        fields["native_state"] = failure.native_state
    return store.transition(job_id, JobState.FAILED, expect=expect, **fields)


def fail_all(store: Store, job_ids: Collection[str], failure: Failure) -> None:
    """:func:`fail` for a batch refused together (one submission, one error)."""
    now = time.time()
    for job_id in job_ids:
        fail(store, job_id, failure, finished_at=now)


def requeue(
    store: Store,
    record: JobRecord,
    message: str,
    *,
    expect: Collection[JobState] = (JobState.RUNNING,),
    **fields: Any,
) -> JobRecord | None:
    """Send the job back to QUEUED as its next attempt (``attempt + 1``).

    ``record`` is the latest the caller read: the compare-and-set on ``expect``
    refuses if something else moved the job since.  Used for retries and for
    checkpointed requeues alike: both spend an attempt.
    """
    return store.transition(
        record.id,
        JobState.QUEUED,
        expect=expect,
        attempt=record.attempt + 1,
        message=message,
        **fields,
    )


def settle(
    store: Store,
    record: JobRecord,
    failure: Failure,
    *,
    expect: Collection[JobState] = ACTIVE_STATES,
    requeue_from: Collection[JobState] = (JobState.RUNNING,),
    retry_message: str | None = None,
    finished_at: float | None = None,
) -> JobRecord | None:
    """Retry or fail: the decision for one failed attempt of ``record``.

    A job whose state is in ``requeue_from`` and that :func:`retry_allowed`
    goes back to QUEUED (the caller's scheduler runs it again); otherwise, or
    when that compare-and-set is refused, it ends FAILED if still in
    ``expect``.  Returns the record as written (check its ``state``), or None
    when the job had already moved on.
    """
    if record.state in requeue_from and retry_allowed(record, failure.reason):
        fields: dict[str, Any] = {"exit_code": failure.exit_code}
        if failure.native_state is not None:
            fields["native_state"] = failure.native_state
        message = retry_message or f"retrying after {failure.reason.value}: {failure.message}"
        requeued = requeue(store, record, message, expect=requeue_from, **fields)
        if requeued is not None:
            return requeued
    return fail(store, record.id, failure, expect=expect, finished_at=finished_at)


def vanished(detail: str, *, exit_code: int | None = None, native: str | None = None) -> Failure:
    """A worker that ended without recording anything: LOST, in the words of
    whoever noticed (a reaped process, a scheduler's "completed", a gone pod)."""
    return Failure(FailureReason.LOST, detail, exit_code, native)
