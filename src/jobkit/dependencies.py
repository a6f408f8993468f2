"""Jobs as arguments, ``after=``, and the step that releases or fails held jobs.

Data flow::

    client.submit(fn, (prep_job, [a_job, b_array]), after=[other])
        │ walk(args, kwargs): Job -> JobResult(id), JobArray -> ArrayResults(id, items)
        │   (through list/tuple/dict/set, container types kept)
        ▼ record.depends_on = [prep id, a id, b's array id, other id]
    dependencies' states (states_of) ─┬─ all SUCCEEDED ──► backend.submit, as any job
                                      ├─ one FAILED/CANCELLED ──► FAILED/DEPENDENCY at once
                                      └─ else backend.can_hold? ─yes─► submit, extra.held="backend"
                                                                  no──► PENDING, extra.held="store"
    any reconciler (client.reconcile: a waiting handle's monitor, the CLI, ``jobkit watch``)
        └─ step(client, records): for held jobs (and their held ancestors, oldest first)
             deps all SUCCEEDED ─► store-held: claim PENDING -> QUEUED (one CAS), backend.submit
                               └─► backend-held: extra.released_at, backend.release
             a dep FAILED/CANCELLED ─► FAILED/DEPENDENCY naming the root, backend.cancel
    worker.run_job ── placeholders.resolve: placeholders -> the outcomes (one get_blobs)

The claim of a store-held job is the store's compare-and-set PENDING ->
QUEUED (``extra["submitter"]`` becomes the releasing process), so two
processes never both submit it.  A releaser that dies after the claim and
before its backend answered leaves it QUEUED without a backend id: the
reconcilers hand it over exactly as a dead submitter's PENDING job
(:func:`jobkit.reconcile.observable`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.errors import ConfigError, JobkitError
from jobkit.observation import Failure
from jobkit.placeholders import (
    ATOMIC,
    KEEP,
    ArrayResults,
    DependencyUnavailable,
    JobResult,
    needed_outcomes,
    resolve,
    walk,
)
from jobkit.states import ACTIVE_STATES, FailureReason, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.stores.base import Store

__all__ = [
    "KEEP",
    "ArrayResults",
    "DependencyUnavailable",
    "JobResult",
    "Verdict",
    "after_ids",
    "failure_of",
    "needed_outcomes",
    "resolve",
    "states_of",
    "step",
    "verdict",
    "walk",
]

HELD = "held"
"""``extra`` key: ``"store"`` (jobkit submits it when released) or ``"backend"``."""
RELEASED = "released_at"
FAILED_DEPENDENCY = "failed_dependency"
MAX_DEPTH = 1000
"""Ancestors looked at per step, so a cycle in a hand-edited store cannot loop."""


# -- the argument walk -------------------------------------------------------------


def placeholders(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], store_identity: str
) -> tuple[tuple[Any, ...], dict[str, Any], list[str]]:
    """``args``/``kwargs`` with Jobs and JobArrays as placeholders, and the
    ids they depend on (in order of appearance, each once).  A job of another
    store is a ConfigError: its outcome could never be read."""
    return Finder(store_identity).call(args, kwargs)


class Finder:
    """:func:`placeholders` for many calls (a map's items): set up once."""

    def __init__(self, store_identity: str) -> None:
        from jobkit.job import Job, JobArray

        self.identity = store_identity
        self.job, self.array = Job, JobArray
        self.found: list[str] = []

    def replace(self, value: Any) -> Any:
        if isinstance(value, self.job):
            _same_store(value, self.identity)
            self.found.append(value.id)
            return JobResult(value.id)
        if isinstance(value, self.array):
            for job in value:
                _same_store(job, self.identity)
            self.found.append(value.id)
            return ArrayResults(value.id, tuple(job.id for job in value))
        return KEEP

    def call(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], list[str]]:
        atomic = ATOMIC
        if all(type(a) in atomic for a in args) and all(type(v) in atomic for v in kwargs.values()):
            return tuple(args), dict(kwargs), []
        self.found = []
        new_args = walk(tuple(args), self.replace)
        new_kwargs = walk(dict(kwargs), self.replace)
        return new_args, new_kwargs, list(dict.fromkeys(self.found))


def after_ids(after: Iterable[Any], store_identity: str) -> list[str]:
    """The ids ``after=`` names; ConfigError for anything but Jobs and JobArrays."""
    from jobkit.job import Job, JobArray

    ids: list[str] = []
    for item in after:
        if isinstance(item, Job):
            _same_store(item, store_identity)
        elif isinstance(item, JobArray):
            for job in item:
                _same_store(job, store_identity)
        else:
            raise ConfigError(
                f"invalid after= item {item!r}: expected a Job or JobArray returned by "
                "submit() or map(), e.g. f.options(after=[prep_job]).submit()"
            )
        ids.append(item.id)
    return list(dict.fromkeys(ids))


def check_after(after: Any) -> tuple[Any, ...]:
    """``after=`` as given to ``options``: a Job, a JobArray, or a list/tuple of them."""
    from jobkit.job import Job, JobArray

    items = (after,) if isinstance(after, Job | JobArray) else after
    if not isinstance(items, list | tuple):
        raise ConfigError(
            f"invalid after={after!r}: expected a list of Jobs or JobArrays, "
            "e.g. after=[prep_job, sweep]"
        )
    for item in items:
        if not isinstance(item, Job | JobArray):
            raise ConfigError(
                f"invalid after= item {item!r}: expected a Job or JobArray returned by "
                "submit() or map(), e.g. f.options(after=[prep_job]).submit()"
            )
    return tuple(items)


def _same_store(job: Any, identity: str) -> None:
    theirs = job._client.store.identity
    if theirs != identity:
        raise ConfigError(
            f"job {job.id} belongs to the store {job._client.store.url!r}, not to this "
            f"client's: a dependency must live in the same store; submit it with "
            f"jobkit.use(store={job._client.store.url!r})"
        )


# -- dependencies' states -----------------------------------------------------------


def states_of(store: Store, ids: Iterable[str]) -> dict[str, list[JobRecord]]:
    """Each id's records: the job, or an array's items (one query per array).
    An id the store does not know is left out."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    jobs = store.get_many(wanted)
    found: dict[str, list[JobRecord]] = {i: [r] for i, r in jobs.items()}
    for missing in (i for i in wanted if i not in jobs):
        members = store.query(array_id=missing)
        if members:
            found[missing] = sorted(members, key=lambda r: r.array_index or 0)
    return found


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a job's dependencies allow: ``ready``, ``failed`` (with the failure
    to record and the root job), or neither (still waiting)."""

    ready: bool
    failure: Failure | None = None
    root: str | None = None


WAITING = Verdict(False)


def failure_of(dependency: JobRecord) -> tuple[Failure, str]:
    """The DEPENDENCY failure a dependent of this failed/cancelled job records,
    and the root job it names (found transitively: a dependent of a job that
    failed with DEPENDENCY names that job's root)."""
    if dependency.failure_reason is FailureReason.DEPENDENCY:
        root = str(dependency.extra.get(FAILED_DEPENDENCY) or dependency.id)
        message = dependency.message or f"dependency {root} failed"
        return Failure(FailureReason.DEPENDENCY, message), root
    reason = (
        dependency.state.value
        if dependency.state is JobState.CANCELLED
        else (dependency.failure_reason or FailureReason.LOST).value
    )
    detail = f"{reason}: {dependency.message}" if dependency.message else reason
    return Failure(
        FailureReason.DEPENDENCY, f"dependency {dependency.id} failed ({detail})"[:1000]
    ), dependency.id


def verdict(record: JobRecord, states: Mapping[str, Sequence[JobRecord]]) -> Verdict:
    """Whether ``record``'s dependencies all succeeded, one failed, or neither.
    A dependency the store no longer has counts as failed (it cannot succeed)."""
    waiting = False
    for dep_id in record.depends_on:
        members = states.get(dep_id)
        if not members:
            return Verdict(
                False,
                Failure(FailureReason.DEPENDENCY, f"dependency {dep_id} is not in the store"),
                dep_id,
            )
        for member in members:
            if member.state in (JobState.FAILED, JobState.CANCELLED):
                failure, root = failure_of(member)
                return Verdict(False, failure, root)
            if member.state is not JobState.SUCCEEDED:
                waiting = True
    return WAITING if waiting else Verdict(True)


def is_held(record: JobRecord) -> bool:
    """Held by jobkit or its backend, and not yet released."""
    return bool(record.extra.get(HELD)) and not record.extra.get(RELEASED)


# -- the release/fail step --------------------------------------------------------


def step(client: Client, records: Sequence[JobRecord]) -> list[JobRecord]:
    """Release or fail the held jobs among ``records`` and their held
    ancestors (so waiting on the last job of a chain drives the whole chain).

    Returns the active ancestors that are not held (running or queued
    dependencies), for the caller to observe with their backends too.
    """
    held = [r for r in records if r.depends_on and r.state in ACTIVE_STATES and is_held(r)]
    if not held:
        return []
    store = client.store
    held_by_id = {r.id: r for r in store.get_many([r.id for r in held]).values()}
    seen: dict[str, list[JobRecord]] = {}
    frontier = [r for r in held_by_id.values() if is_held(r)]
    order: list[JobRecord] = []
    others: dict[str, JobRecord] = {}
    while frontier and len(order) < MAX_DEPTH:
        order.extend(frontier)
        wanted = {d for r in frontier for d in r.depends_on if d not in seen}
        found = states_of(store, wanted)
        seen.update(found)
        for dep_id in wanted:
            seen.setdefault(dep_id, [])
        nxt: list[JobRecord] = []
        for members in found.values():
            for member in members:
                if member.state not in ACTIVE_STATES or member.id in held_by_id:
                    continue
                if member.depends_on and is_held(member):
                    held_by_id[member.id] = member
                    nxt.append(member)
                else:
                    others[member.id] = member
        frontier = nxt
    # Oldest ancestors first: failing one fails its dependents in the same pass.
    # Jobs found ready are released together (one submission per array and
    # backend): none of them can be another's unmet dependency.
    ready: list[JobRecord] = []
    for record in reversed(order):
        current = verdict(record, seen)
        if current.failure is not None:
            ended = fail_dependents(client, [record], current)
            _remember(seen, ended)
        elif current.ready:
            ready.append(record)
    if ready:
        release(client, ready)
    return list(others.values())


def _remember(seen: dict[str, list[JobRecord]], records: Iterable[JobRecord]) -> None:
    for record in records:
        if record.id in seen:
            seen[record.id] = [record]
        if record.array_id and record.array_id in seen:
            seen[record.array_id] = [
                record if m.id == record.id else m for m in seen[record.array_id]
            ]


def fail_dependents(client: Client, records: Sequence[JobRecord], why: Verdict) -> list[JobRecord]:
    """Record ``records`` FAILED/DEPENDENCY; ask their backend to drop the backend-held ones."""
    from jobkit.reconcile import fail

    assert why.failure is not None
    ended: list[JobRecord] = []
    for record in records:
        extra = {**record.extra, FAILED_DEPENDENCY: why.root}
        written = fail(client.store, record.id, why.failure, extra=extra)
        if written is not None:
            ended.append(written)
    backend_held = [r for r in ended if r.extra.get(HELD) == "backend"]
    if backend_held:
        _by_backend(client, backend_held, "cancel")
    if ended:
        client.monitor.poke([r.id for r in ended])
    return ended


def release(client: Client, records: Sequence[JobRecord]) -> list[JobRecord]:
    """Let jobs whose dependencies all succeeded run: store-held ones are
    claimed (one compare-and-set each) and submitted; backend-held ones are
    marked released and their backend told."""
    from jobkit.reconcile import accept
    from jobkit.resources import Resources
    from jobkit.stores.base import Change
    from jobkit.submitter import current as current_submitter

    store = client.store
    now = time.time()
    out: list[JobRecord] = []
    claims: list[Change] = []
    for record in records:
        if record.extra.get(HELD) == "backend":
            marked = _mark_released(store, record, now)
            if marked is not None:
                _by_backend(client, [marked], "release")
                out.append(marked)
            continue
        extra = {**record.extra, RELEASED: now, "submitter": dict(current_submitter())}
        fields = {"extra": extra, "submitted_at": now}
        claims.append(Change(record.id, JobState.QUEUED, (JobState.PENDING,), fields))
    # One compare-and-set each (one transaction on SQLite): a job another
    # process released, or that was cancelled, is refused and left alone.
    claimed = [r for r in store.transition_many(claims) if r is not None] if claims else []
    batches: dict[tuple[str, str], list[JobRecord]] = {}
    for record in claimed:
        batches.setdefault((record.backend, record.array_id or record.id), []).append(record)
    for (name, _), batch in batches.items():
        batch.sort(key=lambda r: r.array_index or 0)  # an array's items in index order
        try:
            backend = client.backend(name)
            accepted = backend.submit(batch, Resources.from_record(batch[0].resources))
        except Exception as exc:  # recorded whatever it is: never QUEUED forever
            client._record_submit_error(batch, exc)
            continue
        written = accept(store, batch, accepted, submitted_at=time.time())
        out.extend(written.get(r.id, r) for r in batch)
    return out


def _mark_released(store: Store, record: JobRecord, now: float) -> JobRecord | None:
    """Add ``released_at`` to a backend-held job's ``extra``.  A QUEUED one
    through a compare-and-set on QUEUED, so that the extra a scheduler wrote
    when it started the job meanwhile (the agent's log paths) is never
    overwritten; None when the job moved on."""
    extra = {**record.extra, RELEASED: now}
    if record.state is JobState.QUEUED:
        return store.transition(record.id, JobState.QUEUED, expect=(JobState.QUEUED,), extra=extra)
    if record.state is JobState.PENDING:
        return store.update(record.id, extra=extra)
    return None


def _by_backend(client: Client, records: Sequence[JobRecord], method: str) -> None:
    groups: dict[str, list[JobRecord]] = {}
    for record in records:
        groups.setdefault(record.backend, []).append(record)
    for name, group in groups.items():
        try:
            getattr(client.backend(name), method)(group)
        except JobkitError:
            continue  # told again on the next step (release) or by observe (cancel)


def active_held(store: Store) -> list[JobRecord]:
    """Every active job in the store that waits on dependencies (``jobkit watch``)."""
    active = store.query(states=sorted(ACTIVE_STATES))
    return [r for r in active if r.depends_on and is_held(r)]


def waiting_on(store: Store, record: JobRecord) -> dict[str, str]:
    """What ``record`` depends on, each id with its state in words (an
    array's as counts, e.g. ``"array: 3 SUCCEEDED, 7 RUNNING"``): what
    ``jobkit status`` shows of a held job."""
    states = states_of(store, record.depends_on)
    shown: dict[str, str] = {}
    for dep_id in record.depends_on:
        members = states.get(dep_id)
        if not members:
            shown[dep_id] = "not in the store"
        elif len(members) == 1 and members[0].id == dep_id:
            shown[dep_id] = members[0].state.value
        else:
            counts: dict[str, int] = {}
            for member in members:
                counts[member.state.value] = counts.get(member.state.value, 0) + 1
            shown[dep_id] = "array: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    return shown
