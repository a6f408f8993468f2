"""What a backend saw, and what went wrong: the words backends and the reconciler share.

A backend never writes a job's state.  It says what it *saw* (an
:class:`Observation` per job, from one batched query or a watch event) and
what it *accepted* (an :class:`Accepted` per submitted job);
:mod:`jobkit.reconcile` turns both into transitions.  These are plain values
so that both sides can import them without importing each other.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from jobkit.states import FailureReason


@dataclasses.dataclass(frozen=True)
class Failure:
    """What went wrong with one attempt, as its observer saw it."""

    reason: FailureReason
    message: str
    exit_code: int | None = None
    native_state: str | None = None
    """The scheduler's own word for the end (``OUT_OF_MEMORY``, ``Failed/OOM``)."""


class Phase(str, enum.Enum):
    """Where a backend places a job's current attempt, whatever its native word."""

    WAITING = "waiting"
    """Accepted and not running: queued, or put back in the queue by the scheduler."""
    RUNNING = "running"
    ENDED = "ended"
    """The attempt's process is gone.  Its worker records how it ended; the
    reconciler acts only on jobs whose record is still active, i.e. whose
    worker could not (killed, out of memory, node gone)."""
    STUCK = "stuck"
    """Not running, and it will not start by itself (an image that cannot be
    pulled, unschedulable past the grace period, never handed to the scheduler)."""
    CANCELLED = "cancelled"
    """Stopped by the scheduler on someone's request (an ``scancel`` from outside)."""
    UNKNOWN = "unknown"
    """A native state the backend cannot place: kept as ``native_state`` only."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """One job's current attempt as its backend sees it (the fields it knows)."""

    native_state: str
    """The backend's own word (``PENDING``, ``OUT_OF_MEMORY``, ``Failed/OOM``)."""
    phase: Phase
    hint: FailureReason | None = None
    """The backend's reading of an end or a stall (OOMKilled, Evicted, NODE_FAIL,
    TIMEOUT...); None for an end with no known cause, which is LOST."""
    message: str | None = None
    """What to show the user, in the backend's words (``pod x: OOMKilled...``)."""
    exit_code: int | None = None
    signal: int | None = None
    host: str | None = None
    """Where the attempt ran, when the backend knows it."""
    finished_at: float | None = None
    backend_id: str | None = None
    """The backend's id for a job it found without one in the record: a PENDING
    job whose submitter died after handing it over but before recording the
    id (the reconciler accepts it with this id)."""


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A job a backend took in ``submit``: its id there, and what to keep in
    its record's ``extra`` (where its logs go, for instance)."""

    job_id: str
    backend_id: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
