"""Job states, failure reasons and the job record every store keeps.

States move forward only::

    PENDING ──► QUEUED ──► RUNNING ──► SUCCEEDED | FAILED | CANCELLED
     ▲ │          ▲  │        │                     │        │
     │ │          └──┼────────┘   (requeue: preemption, checkpointed timeout)
     │ └─────────────┴──────────►  FAILED | CANCELLED (never reached a worker)
     └───────────────────────────────────────────────┴────────┘
                  (rerun: ``jobkit retry``, a new attempt of the same id)

Stores enforce :data:`LEGAL_TRANSITIONS` with a compare-and-set, so a late
writer (a worker finishing after ``cancel``) cannot rewrite a terminal state.
The one way out of an end is a user's rerun (:mod:`jobkit.rerun`): FAILED or
CANCELLED back to PENDING, asked for with an explicit ``expect``; SUCCEEDED
is final.  Writers of ends name the states they come from (a worker: RUNNING),
so a late writer of the old attempt cannot end the new one while it waits.
Backends translate their native states onto these with one table each; the
raw native string is kept in :attr:`JobRecord.native_state`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from jobkit.errors import StoreError


class JobState(str, enum.Enum):
    """Where a job is in its life; the store is the source of truth."""

    PENDING = "PENDING"
    """Recorded in the store, not yet accepted by a backend."""
    QUEUED = "QUEUED"
    """Accepted by a backend, waiting for resources."""
    RUNNING = "RUNNING"
    """A worker is executing the function."""
    SUCCEEDED = "SUCCEEDED"
    """The function returned; its result is in the store."""
    FAILED = "FAILED"
    """The job ended without a result; see :class:`FailureReason`."""
    CANCELLED = "CANCELLED"
    """Cancelled by a user before it finished."""

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


class FailureReason(str, enum.Enum):
    """Why a FAILED job failed."""

    ERROR = "ERROR"
    """The function raised; ``result()`` re-raises it."""
    TIMEOUT = "TIMEOUT"
    """The job ran past its ``time`` limit."""
    OOM = "OOM"
    """The job used more memory than it asked for or the machine had."""
    PREEMPTED = "PREEMPTED"
    """A higher-priority job took its resources and it was not requeued."""
    LOST = "LOST"
    """The worker or its node vanished (killed by a signal, node failure)."""
    SUBMIT_ERROR = "SUBMIT_ERROR"
    """The backend refused the job, or the worker could not load it."""
    DEPENDENCY = "DEPENDENCY"
    """A job it depends on failed or was cancelled, so it never ran; the
    message names that job (``result()`` raises :class:`jobkit.DependencyError`)."""

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.PENDING, JobState.QUEUED, JobState.RUNNING})

LEGAL_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.QUEUED, JobState.RUNNING, *TERMINAL_STATES}),
    JobState.QUEUED: frozenset({JobState.QUEUED, JobState.RUNNING, *TERMINAL_STATES}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.RUNNING, *TERMINAL_STATES}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.CANCELLED: frozenset({JobState.PENDING}),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """States from which ``target`` may legally be reached."""
    return frozenset(s for s, targets in LEGAL_TRANSITIONS.items() if target in targets)


@dataclasses.dataclass
class JobRecord:
    """Everything the store knows about one job (not its payload or outcome).

    A plain dataclass rather than a pydantic model: the CLI lists thousands of
    these and must not pay pydantic's import and validation cost.
    """

    id: str
    name: str
    backend: str
    state: JobState = JobState.PENDING
    created_at: float = 0.0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    backend_id: str | None = None
    native_state: str | None = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    exit_code: int | None = None
    host: str | None = None
    pid: int | None = None
    priority: int = 0
    owner: str = ""
    array_id: str | None = None
    array_index: int | None = None
    attempt: int = 0
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Backend-specific facts (log paths, GPU indices, native ids)."""
    depends_on: list[str] = dataclasses.field(default_factory=list)
    """Ids of the jobs (or whole arrays) that must succeed before this one runs:
    those passed as arguments and those named in ``after=``."""
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The earlier attempts, oldest first, one dict each (see
    :func:`jobkit.reconcile.attempt_entry`); the current attempt is the record itself."""
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the job used, sampled by its worker (see :mod:`jobkit.usage`): CPU,
    memory and, where a GPU is visible, per device; updated while it runs, final
    at its end.  Empty until the first sample."""

    @property
    def cached_from(self) -> str | None:
        """The job whose result this one reuses (a cache hit: it never ran), or None."""
        source = self.extra.get("cached_from")
        return source if isinstance(source, str) and source else None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data.  Built by hand: ``dataclasses.asdict`` deep-copies
        recursively and was most of the cost of every store write."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["state"] = self.state.value
        data["failure_reason"] = self.failure_reason.value if self.failure_reason else None
        for name in ("resources", "labels", "extra"):
            data[name] = dict(data[name])
        data["depends_on"] = list(self.depends_on)
        data["attempts"] = [dict(a) for a in self.attempts]
        data["usage"] = dict(self.usage)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """Rebuild a record, refusing anything a store could not have written."""
        try:
            values = {k: v for k, v in data.items() if k in _FIELD_SET}
            values["state"] = _enum_field(JobState, "state", values["state"])
            reason = values.get("failure_reason")
            values["failure_reason"] = (
                _enum_field(FailureReason, "failure_reason", reason) if reason else None
            )
            record = cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            ident = data.get("id", "?") if isinstance(data, Mapping) else "?"
            raise StoreError(
                f"corrupted job record {ident!r}: {exc}; "
                "remove it with `jobkit prune --corrupted` or restore the store from a backup"
            ) from exc
        if not isinstance(record.id, str) or not record.id:
            raise StoreError("corrupted job record: missing id")
        problem = field_problem(record)
        if problem is not None:
            raise StoreError(
                f"corrupted job record {record.id!r}: {problem}; "
                "remove it with `jobkit prune --corrupted` or restore the store from a backup"
            ) from ValueError(problem)
        return record

    @classmethod
    def from_json(cls, text: str | bytes) -> JobRecord:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"corrupted job record (not JSON): {exc}") from exc
        if not isinstance(data, dict):
            raise StoreError("corrupted job record: not a JSON object")
        return cls.from_dict(data)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(JobRecord))
_FIELD_SET = frozenset(_FIELD_NAMES)

_E = TypeVar("_E", JobState, FailureReason)


def _enum_field(kind: type[_E], field: str, value: Any) -> _E:
    """``kind(value)``, or a ValueError naming the field, the value and the choices."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        choices = ", ".join(member.value for member in kind)
        raise ValueError(f"field {field!r} is {value!r}, expected one of {choices}") from None


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool, str]] = {
    # field: (accepted types, None allowed, what to call it in the message)
    "name": ((str,), False, "a string"),
    "backend": ((str,), False, "a string"),
    "owner": ((str,), False, "a string"),
    "created_at": (_NUMBER, False, "a timestamp (seconds since the epoch)"),
    "submitted_at": (_NUMBER, True, "a timestamp (seconds since the epoch) or null"),
    "started_at": (_NUMBER, True, "a timestamp (seconds since the epoch) or null"),
    "finished_at": (_NUMBER, True, "a timestamp (seconds since the epoch) or null"),
    "backend_id": ((str,), True, "a string or null"),
    "native_state": ((str,), True, "a string or null"),
    "message": ((str,), True, "a string or null"),
    "host": ((str,), True, "a string or null"),
    "array_id": ((str,), True, "a string or null"),
    "exit_code": ((int,), True, "an integer or null"),
    "pid": ((int,), True, "an integer or null"),
    "array_index": ((int,), True, "an integer or null"),
    "priority": ((int,), False, "an integer"),
    "attempt": ((int,), False, "an integer"),
    "resources": ((dict,), False, "an object"),
    "labels": ((dict,), False, "an object"),
    "extra": ((dict,), False, "an object"),
    "depends_on": ((list,), False, "a list of job ids"),
    "attempts": ((list,), False, "a list of objects"),
}
"""What each field of a stored record must hold.  Checked on every read, so a
record written by hand, by an old version or by a bad copy is reported as
corrupted (and skipped by listings) instead of failing later, far from the
store, with a TypeError in whoever did arithmetic on it."""


_EXACT: tuple[tuple[str, frozenset[type]], ...] = tuple(
    (name, frozenset(types) | ({type(None)} if nullable else set()))
    for name, (types, nullable, _wanted) in _FIELD_TYPES.items()
)
"""The same table as exact types: what JSON decoding gives, checked in one
pass without ``isinstance`` (every record read pays this)."""


def field_problem(record: JobRecord, only: Collection[str] | None = None) -> str | None:
    """What is wrong with ``record``'s field types (None: nothing); ``only``:
    check just these fields (the ones a transition set on a checked record).

    ``bool`` is refused where a number belongs: JSON ``true`` is not a time.
    Non-finite timestamps are refused too (``NaN`` breaks every ordering).
    """
    values: dict[str, Any] = record.__dict__
    checks = _EXACT if only is None else [(n, t) for n, t in _EXACT if n in only]
    for name, exact in checks:
        value = values[name]
        kind = type(value)
        if kind not in exact or (kind is float and not math.isfinite(value)):
            return _slow_problem(record)
    return None


def _slow_problem(record: JobRecord) -> str | None:
    """:func:`field_problem`'s full check, with subclasses and the message."""
    for name, (types, nullable, wanted) in _FIELD_TYPES.items():
        value = getattr(record, name)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} is {value!r} ({type(value).__name__}), expected {wanted}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"field {name!r} is {value!r}, expected a finite number"
    return None


@dataclasses.dataclass(frozen=True)
class JobRow:
    """What ``jobkit list`` shows of a job: the few fields a store index can hold.

    A store billed per request (S3) keeps these in its index keys, so a page
    of the job list is a handful of listings instead of a read per job; see
    :meth:`jobkit.stores.base.Store.rows`.  Not the record: ``jobkit status``
    and ``jobkit list --json`` read that.
    """

    id: str
    name: str
    backend: str
    state: JobState
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    failure_reason: FailureReason | None = None
    host: str | None = None
    """None also for an empty host name: the list shows ``-`` for both."""
    cached_from: str | None = None
    """The job a cache hit reuses the result of (see :mod:`jobkit.caching`)."""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def of(cls, record: JobRecord) -> JobRow:
        return cls(
            id=record.id,
            name=record.name,
            backend=record.backend,
            state=record.state,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            failure_reason=record.failure_reason,
            host=record.host or None,
            cached_from=record.cached_from,
        )
