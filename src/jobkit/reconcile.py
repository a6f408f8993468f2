"""The one place that decides what happened to a job, and whether it runs again.

Who writes which state (every arrow is the store's compare-and-set)::

    client.submit ──► PENDING ──(backend refused: submit_failed)──► FAILED/SUBMIT_ERROR
    backend.submit ─► [Accepted] ──► accept ──► QUEUED (backend_id, extra)
    worker ─────────► RUNNING ──► SUCCEEDED
                         │
                         └─ the function raised ─► settle ─┬─► QUEUED, attempt + 1   (retry)
                                                           └─► FAILED/ERROR          (final)
    backend.observe / a backend's report ──► {id: Observation} ──► apply
      WAITING   ─► QUEUED (the scheduler requeued it)
      ENDED, STUCK (the worker could not record: killed, OOM, time limit, node gone)
                 ─► retry_allowed? ─┬─► QUEUED, attempt + 1, grown mem after an OOM
                                    │     the backend reruns it (Kubernetes), or apply
                                    │     returns it and the caller (Client._apply)
                                    │     resubmits it ─► resubmitted (new backend id)
                                    └─► FAILED/TIMEOUT|OOM|LOST|PREEMPTED|SUBMIT_ERROR
      ENDED of a requeued attempt not yet resubmitted (awaiting_resubmission)
                 ─► resubmitted by this process if nobody else will; never counted again
      CANCELLED ─► CANCELLED
    the local agent (the local backend's scheduler) ──► settle, as above
    cancel ─────────► CANCELLED

Hand-over: a submitter killed between ``store.create`` and the backend's
answer leaves PENDING records with no backend id.  Every reconciling process
(a client's monitor, ``jobkit list``/``status``) sends its active records
through :func:`observable` before asking backends, which holds back the
PENDING ones still in their submitter's hands::

    PENDING, no backend_id ──submitter_gone?──no──► left alone (it is still submitting)
                                   │ yes: same host and its pid is dead or reused,
                                   │      or another host / no submitter and older
                                   │      than HANDOVER_GRACE
                                   ▼
                      backend.observe(records) ──► apply
      local:      the agent is woken (it takes PENDING jobs itself; so does any
                  agent at start-up and on its sweeps)
      Slurm, k8s: found by its mark (sbatch --comment / the Job's name)
                  ─► WAITING + backend_id ─► QUEUED with that id
                  not found ─► STUCK ─► FAILED/SUBMIT_ERROR "the submitting
                  process stopped before handing it to ..."

Nothing outside this module writes ``FAILED`` (a unit test greps ``src/`` for
it): :func:`fail` is that write, :func:`retries_left` the one count of what is
left, :func:`retry_allowed` the one policy, :func:`settle` the decision
between the two outcomes, and :func:`apply` the one reading of a backend's
:class:`~jobkit.observation.Observation` (:data:`REASONS` is the table from
what a backend saw to a :class:`~jobkit.states.FailureReason`).  Backends
never write states: they return observations and acceptances, and whoever
opened them (the Client, for the monitor and the CLI) hands those here.

A failed attempt is retried while ``resources["retries"]`` exceeds the
attempts already made and its class is one the job's ``retry_on`` names
(:func:`retry_classes`; by default PREEMPTED and LOST, :data:`RETRIED_BY_DEFAULT`).
Every requeue appends the attempt that ended to ``JobRecord.attempts``
(:func:`attempt_entry`), and an OOM retry of a job with ``mem_growth`` asks
for more memory (:func:`grown_resources`).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from jobkit.observation import Accepted, Failure, Observation, Phase
from jobkit.states import (
    ACTIVE_STATES,
    LEGAL_TRANSITIONS,
    FailureReason,
    JobRecord,
    JobState,
)
from jobkit.stores.base import Change, Store
from jobkit.submitter import alive as submitter_alive
from jobkit.submitter import current as current_submitter

__all__ = [
    "HANDOVER_GRACE",
    "REASONS",
    "RETRIED_BY_DEFAULT",
    "Failure",
    "accept",
    "apply",
    "attempt_entry",
    "awaiting_resubmission",
    "exception_names",
    "fail",
    "fail_all",
    "grown_resources",
    "observable",
    "requeue",
    "resubmitted",
    "resubmitter_gone",
    "retries_left",
    "retry_allowed",
    "retry_classes",
    "settle",
    "settle_from_outcome",
    "submitter_dead",
    "submitter_gone",
    "vanished",
    "would_write",
]

RETRIED_BY_DEFAULT: frozenset[FailureReason] = frozenset(
    {FailureReason.PREEMPTED, FailureReason.LOST}
)
"""Failure classes ``retries`` cover when a job sets no ``retry_on``: the
infrastructure's failures, never a user's bug (plus OOM when ``mem_growth``
is set, as that names what to change).  ``SUBMIT_ERROR`` and ``DEPENDENCY``
never: the same job would fail the same way again."""


def retries_left(record: JobRecord) -> int:
    """How many more attempts ``record`` may make: its ``retries`` minus the
    requeues already recorded in ``attempt`` (never below zero)."""
    try:
        total = int(record.resources.get("retries") or 0)
    except (TypeError, ValueError):
        return 0
    return max(0, total - record.attempt)


def retry_classes(record: JobRecord) -> tuple[frozenset[FailureReason], frozenset[str]]:
    """The failure reasons and exception class names (``"module.QualName"``)
    that ``record``'s ``retries`` cover; see :data:`RETRIED_BY_DEFAULT`."""
    stored = record.resources.get("retry_on")
    if stored is None:
        reasons = set(RETRIED_BY_DEFAULT)
        if record.resources.get("mem_growth"):
            reasons.add(FailureReason.OOM)
        return frozenset(reasons), frozenset()
    names = {str(item) for item in stored} if isinstance(stored, list | tuple) else set()
    reasons = {FailureReason(n) for n in names if n in FailureReason.__members__}
    reasons -= {FailureReason.SUBMIT_ERROR, FailureReason.DEPENDENCY}
    return frozenset(reasons), frozenset(n for n in names if "." in n)


def retry_allowed(
    record: JobRecord, reason: FailureReason, error_types: Collection[str] = ()
) -> bool:
    """Whether a failure of this class goes back to the queue rather than ending the job.

    ``error_types``: for ``ERROR``, the raised exception's classes
    (:func:`exception_names`); an ``ERROR`` is retried when ``retry_on``
    names ``ERROR`` or one of them.
    """
    if retries_left(record) <= 0:
        return False
    reasons, exceptions = retry_classes(record)
    if reason in reasons:
        return True
    return reason is FailureReason.ERROR and not exceptions.isdisjoint(error_types)


def exception_names(error: BaseException) -> list[str]:
    """``"module.QualName"`` of each class in ``error``'s MRO: what ``retry_on``
    matches, without the worker importing the classes the user named."""
    return [f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__]


def attempt_entry(
    record: JobRecord,
    reason: str,
    message: str,
    *,
    now: float,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the record keeps of an attempt that ended (``JobRecord.attempts``):
    why, where, when, and what it was given.

    ``usage``: the attempt's usage summary (default ``record.usage``), kept
    under the entry's ``usage`` key (absent when nothing was sampled), so the
    next attempt starts its own figures from ``{}`` and none is mistaken for
    the previous attempt's final ones."""
    entry: dict[str, Any] = {
        "attempt": record.attempt,
        "reason": reason,
        "message": message[:500],
        "host": record.host,
        "backend_id": record.backend_id,
        "started_at": record.started_at,
        "ended_at": now,
        "exit_code": record.exit_code,
        "mem": record.resources.get("mem"),
    }
    figures = record.usage if usage is None else usage
    if figures:
        entry["usage"] = dict(figures)
    return entry


def grown_resources(record: JobRecord) -> dict[str, Any] | None:
    """``record``'s resources with ``mem`` multiplied by ``mem_growth`` (capped
    at ``mem_max``) for its next attempt after an OOM; None when it sets no
    growth or has no ``mem`` to grow."""
    res = record.resources
    growth, mem = res.get("mem_growth"), res.get("mem")
    if not growth or not mem:
        return None
    new = int(mem * float(growth))
    cap = res.get("mem_max")
    if cap:
        new = min(new, int(cap))
    return {**res, "mem": max(new, int(mem))}


def fail(
    store: Store,
    job_id: str,
    failure: Failure,
    *,
    expect: Collection[JobState] = ACTIVE_STATES,
    finished_at: float | None = None,
    host: str | None = None,
    extra: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
) -> JobRecord | None:
    """Record the job FAILED for ``failure``, if its state is still in ``expect``
    (``host``: where it ran, when the worker never got to record it; ``extra``:
    the record's whole ``extra`` to write alongside, e.g. the root of a
    DEPENDENCY failure; ``usage``: the worker's final usage summary).

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
    if host is not None:
        fields["host"] = host
    if extra is not None:
        fields["extra"] = dict(extra)
    if usage is not None:
        fields["usage"] = dict(usage)
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
    reason: FailureReason | str = "REQUEUED",
    usage: Mapping[str, Any] | None = None,
    **fields: Any,
) -> JobRecord | None:
    """Send the job back to QUEUED as its next attempt (``attempt + 1``).

    The ended attempt's usage (``usage``, the worker's final summary, else the
    last one recorded) moves into its ``attempts`` entry and ``usage`` starts
    empty; so do ``started_at``, ``host`` and ``pid`` (the entry keeps them):
    the next attempt has not started, and its wait is not drawn as running.

    ``record`` is the latest the caller read: the compare-and-set on ``expect``
    refuses if something else moved the job since.  Used for retries and for
    checkpointed requeues alike: both spend an attempt, and both are kept in
    ``attempts`` (``reason``: why this one ended).  After an OOM the next
    attempt asks for more memory where the job sets ``mem_growth``.
    """
    now = time.time()
    why = reason.value if isinstance(reason, FailureReason) else reason
    history = [*record.attempts, attempt_entry(record, why, message, now=now, usage=usage)]
    if reason is FailureReason.OOM and "resources" not in fields:
        grown = grown_resources(record)
        if grown is not None:
            fields["resources"] = grown
            message = f"{message}; next attempt asks for mem={grown['mem']} bytes"
    return store.transition(
        record.id,
        JobState.QUEUED,
        expect=expect,
        attempt=record.attempt + 1,
        message=message,
        attempts=history,
        **{"usage": {}, "started_at": None, "host": None, "pid": None, **fields},
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
        requeued = requeue(
            store, record, message, expect=requeue_from, reason=failure.reason, **fields
        )
        if requeued is not None:
            return requeued
    return fail(store, record.id, failure, expect=expect, finished_at=finished_at)


def settle_from_outcome(
    store: Store,
    record: JobRecord,
    header: Mapping[str, Any],
    note: str,
    *,
    exit_code: int | None = None,
) -> JobRecord | None:
    """Record the end a worker wrote but could not record: its outcome is the truth.

    The worker writes the outcome blob before the terminal state (and only on
    its last attempt: a retried failure writes none), so a job still RUNNING
    whose verified outcome (``header``) exists finished: SUCCEEDED, or
    FAILED/ERROR with the function's error.  Never LOST, never retried.
    ``note`` says who found it and why the worker did not record it.
    """
    if header.get("ok"):
        return store.transition(
            record.id,
            JobState.SUCCEEDED,
            expect=(JobState.RUNNING,),
            finished_at=time.time(),
            exit_code=0 if exit_code is None else exit_code,
            message=note,
        )
    error = f"{header.get('error_type') or 'error'}: {header.get('error') or ''}".strip()
    failure = Failure(FailureReason.ERROR, f"{error} ({note})"[:1000], exit_code)
    return fail(store, record.id, failure, expect=(JobState.RUNNING,))


def vanished(detail: str, *, exit_code: int | None = None, native: str | None = None) -> Failure:
    """A worker that ended without recording anything: LOST, in the words of
    whoever noticed (a reaped process, a scheduler's "completed", a gone pod)."""
    return Failure(FailureReason.LOST, detail, exit_code, native)


# -- hand-over of a dead submitter's PENDING jobs -----------------------------------

HANDOVER_GRACE = 120.0
"""Seconds after which a PENDING job without a backend id counts as abandoned
when its submitter cannot be checked (it ran on another host, or the record
predates ``extra["submitter"]``).  Longer than any sbatch of a large array or
a slow Kubernetes API needs; on the submitter's own host no wait is needed,
as a dead or reused pid is proof."""


def submitter_dead(record: JobRecord, *, now: float | None = None, host: str | None = None) -> bool:
    """Whether the process that submitted ``record`` is gone (whatever the job's state).

    On the submitter's host (``host``: this machine, default
    ``socket.gethostname()``) a dead or reused pid is proof; elsewhere, or for
    a record without ``extra["submitter"]``, an age past HANDOVER_GRACE is.
    """
    now = time.time() if now is None else now
    who = record.extra.get("submitter")
    if isinstance(who, dict) and who.get("host") == (host or socket.gethostname()):
        return not submitter_alive(who)
    return now - record.created_at > HANDOVER_GRACE


def submitter_gone(record: JobRecord, *, now: float | None = None, host: str | None = None) -> bool:
    """Whether ``record`` is PENDING with no backend id and nobody left to submit it
    (a job held in the store for its dependencies is jobkit's, never abandoned;
    once claimed by a releaser, QUEUED without a backend id, it is that process's)."""
    held = record.extra.get("held") == "store"
    if record.backend_id or (record.state is JobState.PENDING and held):
        return False
    if record.state is not JobState.PENDING and not (record.state is JobState.QUEUED and held):
        return False
    return submitter_dead(record, now=now, host=host)


def observable(
    records: Sequence[JobRecord], *, now: float | None = None, host: str | None = None
) -> list[JobRecord]:
    """``records`` less the PENDING ones still in their submitter's hands: a
    backend asked about those would find nothing and call them stuck.

    Jobs held in the store for their dependencies (``extra["held"] ==
    "store"``, PENDING) are in jobkit's hands, never abandoned; once a
    releaser claimed one (QUEUED, no backend id yet) it counts as that
    process's submission (``extra["submitter"]`` names the releaser).

    A map's items share one submitter: it is checked once per call (a look
    at ``/proc``), not once per item."""
    now = time.time() if now is None else now
    host = host or socket.gethostname()
    verdicts: dict[tuple[object, object], bool] = {}

    def in_hands(record: JobRecord) -> bool:
        if record.backend_id:
            return False
        if record.state is JobState.PENDING and record.extra.get("held") == "store":
            return True  # jobkit holds it until its dependencies succeed: not abandoned
        claimed = record.state is JobState.QUEUED and record.extra.get("held") == "store"
        if record.state is not JobState.PENDING and not claimed:
            return False
        who = record.extra.get("submitter")
        if not (isinstance(who, dict) and who.get("host") == host):
            return not submitter_dead(record, now=now, host=host)
        key = (who.get("pid"), who.get("started"))
        if key not in verdicts:
            verdicts[key] = submitter_dead(record, now=now, host=host)
        return not verdicts[key]

    return [r for r in records if not in_hands(r)]


def abandoned_message(record: JobRecord, backend: str) -> str:
    """Why a dead submitter's job failed, in words that name who stopped."""
    who = record.extra.get("submitter")
    where = f" (pid {who.get('pid')} on {who.get('host')})" if isinstance(who, dict) else ""
    return f"the submitting process{where} stopped before handing it to {backend}"


# -- what backends accepted and saw ---------------------------------------------------


def accept(
    store: Store,
    records: Sequence[JobRecord],
    accepted: Sequence[Accepted],
    *,
    submitted_at: float,
) -> dict[str, JobRecord]:
    """Record what a backend took of ``records`` (as stored): QUEUED with its
    backend id and extra, all in one :meth:`~jobkit.stores.base.Store.transition_many`
    (one transaction on SQLite, concurrent requests on S3).  Returns the
    records as written, by id, so handles start from them.

    A job may already be RUNNING by the time ``submit`` returns (its worker
    started fast): then the compare-and-set on PENDING is refused and only
    the backend id and extra are added, so neither write undoes the other.
    """
    current = {r.id: r for r in records}
    changes: list[Change] = []
    for item in accepted:
        record = current.get(item.job_id)
        extra = {**record.extra, **item.extra} if record is not None else dict(item.extra)
        fields: dict[str, Any] = {"backend_id": item.backend_id} if item.backend_id else {}
        if item.extra:
            fields["extra"] = extra
        fields["submitted_at"] = submitted_at
        changes.append(Change(item.job_id, JobState.QUEUED, (JobState.PENDING,), fields))
    written: dict[str, JobRecord] = {}
    for change, moved in zip(changes, store.transition_many(changes), strict=True):
        late = {k: v for k, v in change.fields.items() if k != "submitted_at"}
        if moved is None and late:
            moved = store.update(change.job_id, **late)
        if moved is not None:
            written[change.job_id] = moved
    return written


REASONS: Mapping[Phase, FailureReason] = {
    Phase.ENDED: FailureReason.LOST,
    Phase.STUCK: FailureReason.SUBMIT_ERROR,
}
"""The failure class of an attempt that ended (or stalled) without its worker
recording anything, when the backend gave no hint of its own."""


def apply(
    store: Store,
    records: Sequence[JobRecord],
    observations: Mapping[str, Observation],
    *,
    reruns: bool = False,
    now: float | None = None,
) -> list[JobRecord]:
    """Turn a backend's observations of ``records`` into transitions.

    Each write is a compare-and-set against the record as read before the
    backend looked, so a worker that recorded its own end meanwhile wins.
    ``reruns``: the backend starts the next attempt itself once a job is back
    in QUEUED (Kubernetes' ``backoffLimit``).  Otherwise a retryable observed
    failure goes back to QUEUED too, and is returned: the caller (the process
    that wrote the requeue, and only it) resubmits it through the backend
    (:func:`resubmitted`).  Returns those records, as written.
    """
    now = time.time() if now is None else now
    resubmit: list[JobRecord] = []
    for record in records:
        seen = observations.get(record.id)
        if seen is None or record.state not in ACTIVE_STATES:
            continue
        if seen.phase in REASONS:
            # A backend that reruns attempts may leave some jobs to jobkit (a
            # Kubernetes job whose memory grows on OOM): ``extra["reruns"] = False``.
            itself = reruns and record.extra.get("reruns") is not False
            again = _failed(store, record, seen, reruns=itself, now=now)
            if again is not None:
                resubmit.append(again)
        elif seen.phase is Phase.CANCELLED:
            store.transition(
                record.id,
                JobState.CANCELLED,
                expect=ACTIVE_STATES,
                native_state=seen.native_state,
                finished_at=seen.finished_at or now,
            )
        elif (
            seen.phase is Phase.WAITING
            and record.state is not JobState.QUEUED
            and JobState.QUEUED in LEGAL_TRANSITIONS[record.state]
        ):
            # Only toward QUEUED (accepted, or requeued by the scheduler): RUNNING
            # is the worker's to record, and a stale snapshot must not undo a requeue.
            if record.state is JobState.RUNNING and record.backend_id is None:
                # Found by its mark or name after its submitter died, its worker
                # already running: the backend waits for nothing, keep the id.
                if seen.backend_id:
                    store.update(record.id, backend_id=seen.backend_id, submitted_at=now)
                continue
            if record.state is JobState.RUNNING:
                # The scheduler took a running attempt away and runs the job again
                # itself (Slurm's requeue, preemption in REQUEUE mode): that attempt
                # ended, PREEMPTED, and the history keeps it.
                requeue(
                    store,
                    record,
                    f"{record.backend} requeued it ({seen.native_state}) and runs it again",
                    reason=FailureReason.PREEMPTED,
                    native_state=seen.native_state,
                )
                continue
            found: dict[str, Any] = {}
            if record.state is JobState.PENDING and seen.backend_id and not record.backend_id:
                # Handed over by a submitter that died before recording the id.
                found = {"backend_id": seen.backend_id, "submitted_at": now}
                found["message"] = seen.message or "found in the backend after its submitter died"
            store.transition(
                record.id,
                JobState.QUEUED,
                expect=(record.state,),
                native_state=seen.native_state,
                **found,
            )
        elif seen.backend_id and not record.backend_id:
            # Found by its mark, already past waiting: keep the id (the worker
            # records RUNNING and its end), so later observations can find it.
            store.update(record.id, backend_id=seen.backend_id, submitted_at=now)
        elif seen.message and seen.message != record.message:
            store.update(record.id, native_state=seen.native_state, message=seen.message)
        elif seen.phase is Phase.UNKNOWN and seen.native_state != record.native_state:
            store.update(record.id, native_state=seen.native_state)
    return resubmit


def would_write(record: JobRecord, seen: Observation) -> bool:
    """Whether :func:`apply` would write anything for ``record`` given ``seen``
    (its branches, without the writes): a caller holding a possibly stale copy
    re-reads only the records for which this holds (the client's monitor)."""
    if record.state not in ACTIVE_STATES:
        return False
    if seen.phase in REASONS or seen.phase is Phase.CANCELLED:
        return True
    if (
        seen.phase is Phase.WAITING
        and record.state is not JobState.QUEUED
        and JobState.QUEUED in LEGAL_TRANSITIONS[record.state]
    ):
        return True
    if seen.backend_id and not record.backend_id:
        return True
    if seen.message and seen.message != record.message:
        return True
    return seen.phase is Phase.UNKNOWN and seen.native_state != record.native_state


def _failed(
    store: Store, record: JobRecord, seen: Observation, *, reruns: bool, now: float
) -> JobRecord | None:
    """An attempt ended without its worker recording it: retry or fail.
    Returns the record when the caller must resubmit it (see :func:`apply`)."""
    if not reruns and awaiting_resubmission(record):
        # The previous attempt's backend job, seen again before its resubmission:
        # not a new failure.  Its resubmitter died meanwhile: resubmit it here.
        return record if resubmitter_gone(record) else None
    reason = seen.hint or REASONS[seen.phase]
    if reason is FailureReason.ERROR:
        # ERROR is the function raising, which only the worker sees and records
        # (with the outcome).  A backend that saw the process exit non-zero while
        # the worker recorded nothing (Slurm's FAILED) saw it die: LOST.
        reason = FailureReason.LOST
    if seen.message:
        message = seen.message
    elif seen.phase is Phase.STUCK and record.state is JobState.PENDING:
        message = abandoned_message(record, record.backend)
    else:
        message = f"{seen.native_state}: the worker recorded no outcome"
    failure = Failure(reason, message, seen.exit_code, seen.native_state)
    finished = seen.finished_at or now
    host = seen.host if record.host is None else None
    ran = record if host is None else dataclasses.replace(record, host=host)
    if reruns:
        settle(
            store,
            ran,
            failure,
            expect=(record.state,),
            requeue_from=(record.state,),
            retry_message=f"retrying after {message}",
            finished_at=finished,
        )
        return None
    if record.state is not JobState.PENDING and retry_allowed(record, reason):
        extra = {**record.extra, "resubmit": {"of": record.backend_id, **current_submitter()}}
        fields: dict[str, Any] = {"exit_code": seen.exit_code, "extra": extra}
        if seen.native_state is not None:
            fields["native_state"] = seen.native_state
        again = requeue(
            store,
            ran,
            f"retrying after {reason.value}: {message}",
            expect=(record.state,),
            reason=reason,
            **fields,
        )
        if again is not None:
            return again
    fail(store, record.id, failure, expect=(record.state,), finished_at=finished, host=host)
    return None


# -- resubmitting an observed failure's next attempt ------------------------------------


def awaiting_resubmission(record: JobRecord) -> bool:
    """Whether ``record`` is a requeued next attempt whose backend job is still
    the one of the attempt that ended: nobody has resubmitted it yet.

    Requeued by :func:`apply` (``extra["resubmit"]["of"]``: that process
    resubmits it), or by its worker (an ``ERROR`` retry: the last attempt's
    backend id is still the record's) on a backend that reruns nothing."""
    if record.state is not JobState.QUEUED or record.backend_id is None:
        return False
    mark = record.extra.get("resubmit")
    if isinstance(mark, dict):
        return mark.get("of") == record.backend_id
    last = record.attempts[-1] if record.attempts else None
    return last is not None and last.get("backend_id") == record.backend_id


def resubmitter_gone(record: JobRecord, *, host: str | None = None) -> bool:
    """Whether nobody else will resubmit ``record`` (see
    :func:`awaiting_resubmission`): its worker requeued it, or the process
    that requeued it is gone (on its host: its pid is dead or reused;
    elsewhere: HANDOVER_GRACE passed since the requeue)."""
    mark = record.extra.get("resubmit")
    if not isinstance(mark, dict):
        return True
    if mark.get("host") == (host or socket.gethostname()):
        return not submitter_alive(mark)
    ended = record.attempts[-1].get("ended_at") if record.attempts else None
    return not isinstance(ended, int | float) or time.time() - ended > HANDOVER_GRACE


def resubmitted(
    store: Store, record: JobRecord, accepted: Sequence[Accepted], *, now: float | None = None
) -> JobRecord | None:
    """Record the backend's acceptance of a resubmitted attempt: its new
    backend id and extra, the job staying QUEUED (or RUNNING, if its worker
    was faster).  None when the backend took nothing or the job moved on."""
    taken = next((a for a in accepted if a.job_id == record.id), None)
    if taken is None:
        return None
    current = store.get(record.id)
    if current.state not in ACTIVE_STATES or current.attempt != record.attempt:
        return None
    extra = {k: v for k, v in current.extra.items() if k != "resubmit"}
    extra.update(taken.extra)
    fields: dict[str, Any] = {"extra": extra, "submitted_at": time.time() if now is None else now}
    if taken.backend_id:
        fields["backend_id"] = taken.backend_id
    return store.update(record.id, **fields)
