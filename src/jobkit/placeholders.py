"""Placeholders for Jobs passed as arguments, and the worker's side of them.

A Job or JobArray among a job's arguments is pickled as a :class:`JobResult`
or :class:`ArrayResults` (see :mod:`jobkit.dependencies`, which finds them);
the worker puts the dependencies' results in their place before the call::

    payload args ── needed_outcomes ──► get_blobs(outcomes/<dep id>...) ── verify each
        with the key and the dependency's id ──► walk(args, fill) ──► fn(*args)

Kept apart from :mod:`jobkit.dependencies` (which knows the client) so the
worker's imports never reach a backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobkitError

if TYPE_CHECKING:
    from jobkit.stores.base import Store

__all__ = [
    "ATOMIC",
    "KEEP",
    "ArrayResults",
    "DependencyUnavailable",
    "JobResult",
    "needed_outcomes",
    "resolve",
    "walk",
]


@dataclasses.dataclass(frozen=True)
class JobResult:
    """Stands in the payload for a Job passed as an argument: its result."""

    job_id: str


@dataclasses.dataclass(frozen=True)
class ArrayResults:
    """Stands in the payload for a JobArray passed as an argument: its results, in order."""

    array_id: str
    item_ids: tuple[str, ...]


class DependencyUnavailable(JobkitError):
    """A dependency's outcome is missing, unverifiable or not a success."""

    def __init__(self, message: str, dependency_id: str) -> None:
        super().__init__(message)
        self.dependency_id = dependency_id


def _rebuild(value: Any, items: list[Any]) -> Any:
    """A container of ``value``'s type holding ``items`` (namedtuples too)."""
    kind = type(value)
    if kind in (list, tuple, set, frozenset):
        return kind(items)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return kind(*items)
    try:
        return kind(items)
    except TypeError:  # a subclass with another constructor: its base type
        for base in (list, tuple, set, frozenset):
            if isinstance(value, base):
                return base(items)
        raise


KEEP: Any = object()
"""What a ``replace`` function of :func:`walk` returns for a value it leaves alone."""


ATOMIC: frozenset[type] = frozenset({int, float, str, bytes, bool, complex, type(None)})
"""Types never replaced nor walked into: most arguments of a map's items."""


def walk(value: Any, replace: Callable[[Any], Any]) -> Any:
    """``value`` with every object that ``replace`` maps to something other
    than :data:`KEEP` replaced (the replacement is not walked into), through
    lists, tuples, dicts and sets, their types kept.  Containers with nothing
    replaced come back as they were (the same object: a large argument is
    not copied)."""
    if type(value) in ATOMIC:  # the common case, without a call
        return value
    new = replace(value)
    if new is not KEEP:
        return new
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new = walk(item, replace)
            changed = changed or new is not item
            out[key] = new
        if not changed:
            return value
        if type(value) is dict:
            return out
        try:
            rebuilt = type(value)()
            rebuilt.update(out)
            return rebuilt
        except TypeError:
            return out
    if isinstance(value, list | tuple | set | frozenset):
        items = [walk(item, replace) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return _rebuild(value, items)
    return value


def needed_outcomes(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
    """Ids of the outcomes a call needs (empty: nothing to load)."""
    needed: list[str] = []

    def look(value: Any) -> Any:
        if isinstance(value, JobResult):
            needed.append(value.job_id)
        elif isinstance(value, ArrayResults):
            needed.extend(value.item_ids)
        return KEEP

    walk(args, look)
    walk(dict(kwargs), look)
    return list(dict.fromkeys(needed))


def resolve(
    store: Store, key: bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args``/``kwargs`` with each placeholder replaced by its dependency's
    result: outcomes read in one ``get_blobs`` and verified with ``key`` and
    their own job id.  DependencyUnavailable for a missing or failed one."""
    from jobkit.caching import outcome_owner
    from jobkit.serialization import load_outcome
    from jobkit.stores.base import outcome_key

    needed = needed_outcomes(args, kwargs)
    if not needed:
        return args, dict(kwargs)
    # A cached dependency's result is its source's outcome, signed for the source.
    records = store.get_many(needed)
    owners = {i: outcome_owner(records[i]) if i in records else i for i in needed}
    blobs = store.get_blobs([outcome_key(owner) for owner in set(owners.values())])
    values: dict[str, Any] = {}
    used: set[str] = set()
    for job_id in needed:
        owner = owners[job_id]
        data = blobs.get(outcome_key(owner))
        if data is None:
            raise DependencyUnavailable(f"dependency {job_id} has no stored result", job_id)
        if owner in used:  # cached items of one source: each its own copy, never aliased
            data = bytearray(data)
        used.add(owner)
        try:
            outcome = load_outcome(data, key=key, job_id=owner)
        except JobkitError as exc:
            raise DependencyUnavailable(
                f"dependency {job_id}'s result could not be loaded: {exc}", job_id
            ) from exc
        if not outcome.ok:
            raise DependencyUnavailable(f"dependency {job_id} did not succeed", job_id)
        values[job_id] = outcome.value

    def fill(value: Any) -> Any:
        if isinstance(value, JobResult):
            return values[value.job_id]
        if isinstance(value, ArrayResults):
            return [values[i] for i in value.item_ids]
        return KEEP

    return walk(args, fill), walk(dict(kwargs), fill)
