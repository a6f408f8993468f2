"""Rules every store applies the same way, so one conformance suite holds.

Field validation for ``transition``/``update``, the default ``expect`` set,
blob-key safety and the shell-glob dialect of ``query(name=...)`` live here
rather than in each store: an S3 store written later must refuse exactly what
the SQLite and memory stores refuse.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from jobkit.errors import IllegalTransitionError, StoreError
from jobkit.states import FailureReason, JobRecord, JobState, field_problem, sources_of

from .base import Buffer, as_buffers

_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))
SETTABLE_FIELDS = _RECORD_FIELDS - {"id", "state"}
"""Fields ``update`` and ``transition`` may set: everything but id and state."""


def expected_sources(state: JobState, expect: Collection[JobState] | None) -> frozenset[JobState]:
    """The states a ``transition`` to ``state`` may start from.

    An explicit ``expect`` may narrow the legal sources but never widen them:
    asking for a move that :data:`LEGAL_TRANSITIONS` forbids is a bug in the
    caller, reported at once rather than as a silent ``None``.
    """
    state = JobState(state)
    legal = sources_of(state)
    if expect is None:
        return legal
    wanted = frozenset(JobState(s) for s in expect)
    illegal = wanted - legal
    if illegal:
        names = ", ".join(sorted(s.value for s in illegal))
        raise IllegalTransitionError(
            f"cannot move a job from {names} to {state.value}: that would rewrite "
            f"history; legal sources of {state.value} are "
            f"{', '.join(sorted(s.value for s in legal)) or 'none'}"
        )
    return wanted


def apply_fields(
    record: JobRecord, fields: Mapping[str, Any], *, state: JobState | None = None
) -> tuple[JobRecord, str]:
    """A copy of ``record`` with ``fields`` (and ``state``) set, normalised, and its JSON.

    Raises IllegalTransitionError for ``state`` among ``fields`` (only
    ``transition`` moves it, through the keyword) and StoreError naming any
    field that does not exist or cannot be stored.
    """
    if "state" in fields:
        raise IllegalTransitionError(
            f"job {record.id!r}: update() cannot set 'state'; use transition() "
            "so the move is checked against the current state"
        )
    unknown = sorted(set(fields) - SETTABLE_FIELDS)
    if unknown:
        raise StoreError(
            f"job {record.id!r}: cannot set {', '.join(map(repr, unknown))}: "
            f"not a settable job field (settable: {', '.join(sorted(SETTABLE_FIELDS))})"
        )
    values = dict(fields)
    reason = values.get("failure_reason")
    if reason is not None and not isinstance(reason, FailureReason):
        try:
            values["failure_reason"] = FailureReason(reason)
        except ValueError:
            raise StoreError(
                f"job {record.id!r}: failure_reason {reason!r} is not one of "
                f"{', '.join(r.value for r in FailureReason)}"
            ) from None
    if state is not None:
        values["state"] = JobState(state)
    if all(_plain(v) for v in fields.values()):
        # What JSON gives back already: no need to read the text back.  The
        # record the store read is its own; dicts set here are copied.  A
        # shallow copy with the new values (``dataclasses.replace`` re-runs
        # ``__init__`` over every field: a fifth of a batched transition).
        updated = copy.copy(record)
        updated.__dict__.update(
            {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
        )
        problem = field_problem(updated, values)
        if problem is None:
            try:
                return updated, updated.to_json()
            except (TypeError, ValueError):
                pass  # normalised() names the problem
    return normalised(dataclasses.replace(record, **values))


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> bool:
    """Whether ``value`` reads back from JSON as itself (no tuples, no int keys,
    no NaN); a dict or list is checked all the way down."""
    kind = type(value)
    if kind in _SCALARS:
        return kind is not float or math.isfinite(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return isinstance(value, (JobState, FailureReason))


def normalised(record: JobRecord) -> tuple[JobRecord, str]:
    """An independent copy of ``record`` as a JSON store would return it, and the JSON.

    Every store keeps what :meth:`JobRecord.to_json` can express, so values it
    cannot (sets, objects) are refused on write instead of on a later read.
    """
    if not isinstance(record, JobRecord):
        raise StoreError(f"stores keep JobRecord objects, not {type(record).__name__}")
    if not isinstance(record.id, str) or not record.id:
        raise StoreError(f"a job record needs a non-empty string id, not {record.id!r}")
    try:
        text = record.to_json()
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"job {record.id!r}: every field must be JSON-serialisable: {exc}"
        ) from exc
    return JobRecord.from_json(text), text


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StoreError(f"query limit must be a non-negative integer or None, not {limit!r}")


def check_blob_key(key: str) -> str:
    """Refuse keys that could escape the store or clash with temporary files.

    Keys are ``/``-separated relative names (``payloads/jk-1``); segments may
    not be empty, ``.``/``..`` or start with ``.`` (reserved for temp files).
    """
    if not isinstance(key, str) or not key:
        raise StoreError(f"blob key must be a non-empty string, not {key!r}")
    if key.startswith("/") or "\\" in key or "\0" in key:
        raise StoreError(
            f"blob key {key!r} must be a relative '/'-separated name like 'payloads/<id>'"
        )
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise StoreError(
                f"blob key {key!r} has an empty, '.' or '..' segment or one starting "
                "with '.'; use names like 'payloads/<id>'"
            )
    return key


def byte_views(data: Buffer | Sequence[Buffer]) -> list[memoryview]:
    """``put_blob``'s buffers as flat byte views (no copy), sizes in bytes."""
    views = []
    for buf in as_buffers(data):
        view = memoryview(buf)
        if not view.c_contiguous:
            raise StoreError("put_blob needs contiguous buffers (got a strided memoryview)")
        views.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
    return views


def glob_to_sql(pattern: str) -> str:
    """Translate a shell glob to SQLite ``GLOB`` syntax (both case-sensitive).

    They agree on ``*``, ``?`` and ``[...]``; only negation differs: the shell
    writes ``[!a]`` where GLOB writes ``[^a]``, and a shell ``[^a]`` means a
    literal ``^`` or ``a``.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char != "[":
            out.append(char)
            i += 1
            continue
        end = i + 1
        if end < n and pattern[end] == "!":
            end += 1
        if end < n and pattern[end] == "]":
            end += 1
        while end < n and pattern[end] != "]":
            end += 1
        if end >= n:  # no closing bracket: a literal "["
            out.append("[[]")
            i += 1
            continue
        body = pattern[i + 1 : end]
        if body.startswith("!"):
            body = "^" + body[1:]
        elif body == "^":  # only a caret: GLOB cannot write that as a set
            out.append("^")
            i = end + 1
            continue
        elif body.startswith("^"):
            body = body[1:] + "^"
        out.append(f"[{body}]")
        i = end + 1
    return "".join(out)


def glob_matches(name: str, pattern: str) -> bool:
    """The in-process equivalent of :func:`glob_to_sql` (case-sensitive)."""
    return fnmatch.fnmatchcase(name, pattern)


def id_order(job_id: str) -> tuple[str, int, str]:
    """How jobs created at the same instant are ordered: by id, array items by index.

    A map's items share ``created_at`` and are named ``<array_id>.<n>``; as
    text, ``.10`` sorts before ``.9``.  So a listing is ordered by
    ``(created_at, base, n, id)`` -- all ascending or all descending, one
    total order -- where an id ending in ``.<digits>`` has that base and ``n``
    and any other id is its own base with ``n = -1``.  :data:`SQL_ID_ORDER`
    spells the same key in SQL.
    """
    base, dot, tail = job_id.rpartition(".")
    if dot and tail.isascii() and tail.isdigit():
        return base, int(tail), job_id
    return job_id, -1, job_id


_DIGITS = "'0123456789'"
_STEM = f"rtrim(id, {_DIGITS})"  # the id without its trailing digits
_IS_ITEM = f"(length({_STEM}) < length(id) AND substr({_STEM}, -1) = '.')"
SQL_ID_ORDER = (
    f"CASE WHEN {_IS_ITEM} THEN substr({_STEM}, 1, length({_STEM}) - 1) ELSE id END",
    f"CASE WHEN {_IS_ITEM} THEN CAST(substr(id, length({_STEM}) + 1) AS INTEGER) ELSE -1 END",
    "id",
)
"""The SQL expressions of :func:`id_order`, over a column ``id``."""
