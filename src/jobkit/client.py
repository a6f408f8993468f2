"""Client: one resolved config wired to one store and its backends.

It submits (payloads, records, one backend submission per call), finds jobs
again by id, cancels, loads outcomes and reads logs.  Which client is in force
is :mod:`jobkit.context`'s business; watching jobs until they end is
:mod:`jobkit.monitor`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import getpass
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit import caching
from jobkit.dependencies import fail_dependents
from jobkit.errors import (
    BackendError,
    BlobNotFoundError,
    ConfigError,
    JobkitError,
    SignatureError,
)
from jobkit.ids import new_job_id
from jobkit.monitor import Monitor
from jobkit.observation import Failure, Observation
from jobkit.reconcile import accept, apply, fail, fail_all, observable
from jobkit.states import ACTIVE_STATES, FailureReason, JobRecord, JobState
from jobkit.stores.base import Store, outcome_key, payload_key
from jobkit.submitter import current as current_submitter

if TYPE_CHECKING:
    from jobkit.backends.base import Backend, BackendServices
    from jobkit.config import Config
    from jobkit.dependencies import Verdict
    from jobkit.job import Job, JobArray
    from jobkit.resources import Resources
    from jobkit.serialization import Outcome

__all__ = ["Client", "new_job_id", "parse_states"]

PAYLOAD_BATCH = 1000
"""Payloads written per ``put_blobs`` while a map is recorded: one SQLite
transaction each, and a 100,000-item map never holds every payload at once."""


class Client:
    """Submits, finds and controls jobs for one configuration."""

    def __init__(self, config: Config) -> None:
        from jobkit.stores import open_store

        self.config = config
        self.store: Store = open_store(config.store)
        self._backends: dict[str, Backend] = {}
        self._backends_lock = threading.Lock()
        self.monitor = Monitor(self)

    @functools.cached_property
    def key(self) -> bytes:
        """The signing key; loaded (or created) only when something is signed or checked."""
        from jobkit.signing import load_key

        explicit = self.config.key.get_secret_value() if self.config.key is not None else None
        return load_key(explicit, key_file=self.config.key_file)

    # -- backends ------------------------------------------------------------
    def backend(self, name: str | None = None) -> Backend:
        from jobkit.backends import open_backend

        name = name or self.config.backend
        with self._backends_lock:
            backend = self._backends.get(name)
            if backend is None:
                backend = open_backend(name, self.config, self._services(name))
                self._backends[name] = backend
        return backend

    def _services(self, name: str) -> BackendServices:
        """What backend ``name`` may use of this client.  Through a weak
        reference: a backend is the client's, and a cycle back to the client
        would leave freeing it to the garbage collector, at any moment and in
        any thread (the monitor's included)."""
        from jobkit.backends.base import BackendServices

        me = weakref.ref(self)

        def client() -> Client:
            alive = me()
            if alive is None:
                raise BackendError("the jobkit client that opened this backend is gone")
            return alive

        return BackendServices(
            store=self.store,
            key=lambda: client().key,
            poke=self.monitor.poke,
            report=lambda records, seen: client()._observed(name, records, seen),
        )

    def open_backends(self) -> list[Backend]:
        """The backends this client has opened so far (the monitor asks how they report)."""
        with self._backends_lock:
            return list(self._backends.values())

    # -- submitting ----------------------------------------------------------
    def resolve_resources(self, resources: Resources | None) -> Resources:
        defaults = self.config.default_resources
        if resources is None:
            return defaults
        return defaults.merged(**resources.model_dump(exclude_unset=True))

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        resources: Resources | None = None,
        backend: str | None = None,
        after: Sequence[Job[Any] | JobArray[Any]] = (),
    ) -> Job[Any]:
        calls = [(tuple(args), dict(kwargs))]
        return self._submit(fn, calls, resources, backend, array=False, after=after)[0]

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
        *,
        resources: Resources | None = None,
        backend: str | None = None,
        after: Sequence[Job[Any] | JobArray[Any]] = (),
    ) -> JobArray[Any]:
        from jobkit.job import JobArray

        calls = [(tuple(a), dict(k)) for a, k in items]
        jobs = self._submit(fn, calls, resources, backend, array=True, after=after)
        array_id = jobs[0]._record.array_id if jobs else new_job_id()
        return JobArray(array_id or "", jobs)

    def _submit(
        self,
        fn: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        resources: Resources | None,
        backend_name: str | None,
        *,
        array: bool,
        after: Sequence[Job[Any] | JobArray[Any]] = (),
    ) -> list[Job[Any]]:
        from jobkit.calls import check_calls
        from jobkit.job import Job
        from jobkit.serialization import Call, dump_payload, pickle_function

        check_calls(fn, calls, array=array)  # before anything is written
        calls, depends = self._dependencies(calls, after)
        states = self._dependency_states(depends)  # an unknown id: refused before any write
        res = self.resolve_resources(resources)
        if res.mem_growth and not res.mem:
            raise ConfigError(
                f"invalid resources mem_growth={res.mem_growth:g} without mem: an OOM retry "
                "multiplies the memory asked for, so give the first attempt's, e.g. mem='2GB'"
            )
        backend = self.backend(backend_name)
        backend.check_resources(res)
        cached = None
        if res.cache:
            keyed = caching.keyed_by_source(calls, states) if states else calls
            cached = caching.plan(self.store, fn, keyed, res.cache)
        if cached is not None and states:
            # A hit stands for a run; with a dependency not succeeded (an
            # ``after=`` still running, or failed) the call waits or fails as
            # uncached calls do.
            ready = {
                i: source
                for i, source in cached.hits.items()
                if all(m.state is JobState.SUCCEEDED for d in depends[i] for m in states[d])
            }
            cached = dataclasses.replace(cached, hits=ready)
        if cached is not None and array:
            cached = caching.fitted(cached, len(calls), sparse=backend.sparse_arrays)
        hits = cached.hits if cached is not None else {}
        name = res.name or getattr(fn, "__qualname__", None) or type(fn).__name__
        now = time.time()
        array_id = new_job_id() if array else None
        base_id = new_job_id()
        owner = res.labels.get("owner") or res.labels.get("project") or _user()
        fn_pickle = pickle_function(fn) if array else None
        # Backends that warn before a time limit (Slurm) do so only for jobs that can resume.
        checkpointable = callable(getattr(fn, "checkpoint", None))
        checkpoint = {"checkpointable": True} if checkpointable else {}
        # Who submits: lets any reconciling process tell, should this process die
        # before the backend is told, that these PENDING jobs are abandoned.
        submitter = current_submitter()
        resource_record = res.to_record()  # once: pydantic's defaults are slow per item
        records: list[JobRecord] = []
        payloads: dict[str, list[Any]] = {}
        for index, (args, kwargs) in enumerate(calls):
            job_id = f"{array_id}.{index}" if array_id else base_id
            if index not in hits:  # a call answered from the cache runs nowhere
                call = Call(fn=None if array else fn, args=args, kwargs=kwargs, fn_pickle=fn_pickle)
                payloads[payload_key(job_id)] = dump_payload(call, key=self.key, job_id=job_id)
            if len(payloads) >= PAYLOAD_BATCH:
                self.store.put_blobs(payloads)  # one transaction on SQLite
                payloads.clear()
            records.append(
                JobRecord(
                    id=job_id,
                    name=name,
                    backend=backend.name,
                    created_at=now,
                    priority=res.priority_value,
                    owner=owner,
                    array_id=array_id,
                    array_index=index if array_id else None,
                    resources=dict(resource_record),
                    labels=dict(res.labels),
                    extra={"submitter": dict(submitter), **checkpoint},
                    depends_on=list(depends[index]),
                )
            )
        if not records:
            return []
        self.store.put_blobs(payloads)
        del payloads
        if cached is not None and hits:
            records = [
                caching.as_cached(r, cached, i) if i in hits else r for i, r in enumerate(records)
            ]
        to_run = [r for i, r in enumerate(records) if i not in hits]
        if to_run:
            backend.prepare(to_run, res)
        to_submit, failed = self._hold(backend, to_run, states)
        self.store.create(records)
        if cached is not None:
            caching.remember(self.store, cached, to_run, fn)
        written: dict[str, JobRecord] = {}
        for record, why in failed:
            ended = fail_dependents(self, [record], why)
            written.update((r.id, r) for r in ended)
        if to_submit:
            try:
                accepted = backend.submit(to_submit, res)
            except Exception as exc:  # recorded whatever it is: no job stays PENDING forever
                self._record_submit_error(to_submit, exc)
                raise
            written.update(accept(self.store, to_submit, accepted, submitted_at=time.time()))
        return [Job(self, written.get(r.id, r)) for r in records]

    def _dependencies(
        self,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        after: Sequence[Job[Any] | JobArray[Any]],
    ) -> tuple[list[tuple[tuple[Any, ...], dict[str, Any]]], list[list[str]]]:
        """The calls with Jobs and JobArrays among their arguments replaced by
        placeholders, and each call's dependencies (those and ``after``'s)."""
        from jobkit.dependencies import Finder, after_ids

        identity = self.store.identity
        waits = after_ids(after, identity) if after else []
        finder = Finder(identity)
        out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        depends: list[list[str]] = []
        for args, kwargs in calls:
            new_args, new_kwargs, ids = finder.call(args, kwargs)
            out.append((new_args, new_kwargs))
            depends.append(list(dict.fromkeys([*ids, *waits])) if waits else ids)
        return out, depends

    def _dependency_states(self, depends: list[list[str]]) -> dict[str, list[JobRecord]]:
        """The records of every dependency (an array's items); ConfigError for an unknown id."""
        from jobkit.dependencies import states_of

        wanted = {d for ids in depends for d in ids}
        if not wanted:
            return {}
        states = states_of(self.store, wanted)
        unknown = sorted(wanted - set(states))
        if unknown:
            raise ConfigError(
                f"invalid dependency {unknown[0]!r}: no job or array with that id in the "
                f"store {self.store.url!r}; pass Jobs or JobArrays of this store"
            )
        return states

    def _hold(
        self,
        backend: Backend,
        records: list[JobRecord],
        states: Mapping[str, Sequence[JobRecord]],
    ) -> tuple[list[JobRecord], list[tuple[JobRecord, Verdict]]]:
        """Which new records go to the backend now, and which fail at once
        because a dependency already failed.  Those still waiting are marked
        held (``extra["held"]``): by the backend if it can hold them (they
        are submitted too), else by the store (released later by a reconciler)."""
        from jobkit.dependencies import verdict

        if not states:
            return records, []
        ready: list[JobRecord] = []
        waiting: list[JobRecord] = []
        failed: list[tuple[JobRecord, Verdict]] = []
        for record in records:
            found = verdict(record, states) if record.depends_on else None
            if found is None or found.ready:
                ready.append(record)
            elif found.failure is not None:
                # Held until failed just below: should this process die in
                # between, a reconciler fails it; no backend ever runs it.
                record.extra["held"] = "store"
                failed.append((record, found))
            else:
                waiting.append(record)
        if not waiting:
            return ready, failed
        deps = {d: states[d] for r in waiting for d in r.depends_on}
        holder = "backend" if backend.can_hold(waiting, deps) else "store"
        for record in waiting:
            record.extra["held"] = holder
        return (ready + waiting if holder == "backend" else ready), failed

    def _record_submit_error(self, records: Sequence[JobRecord], exc: Exception) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        failure = Failure(FailureReason.SUBMIT_ERROR, message)
        fail_all(self.store, [record.id for record in records], failure)

    # -- finding and controlling ---------------------------------------------
    def get(self, job_id: str) -> Job[Any] | JobArray[Any]:
        """The job with this id, else the array with this id (JobNotFoundError if neither)."""
        from jobkit.job import Job, JobArray
        from jobkit.lookup import find

        found = find(self.store, job_id)
        if found.job is not None:
            return Job(self, found.job)
        return JobArray(found.id, [Job(self, r) for r in found.members])

    def jobs(
        self,
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        limit: int | None = 50,
    ) -> list[Job[Any]]:
        from jobkit.job import Job

        states = parse_states(state)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"invalid limit {limit!r}: expected a positive integer or None")
        records = self.store.query(states=states, backend=backend, name=name, limit=limit)
        return [Job(self, r) for r in records]

    def cancel(self, job_ids: Sequence[str]) -> list[str]:
        """Mark jobs CANCELLED (compare-and-set), then ask their backends to kill them."""
        cancelled: list[JobRecord] = []
        now = time.time()
        for job_id in job_ids:
            record = self.store.transition(
                job_id, JobState.CANCELLED, expect=ACTIVE_STATES, finished_at=now
            )
            if record is not None:
                cancelled.append(record)
        by_backend: dict[str, list[JobRecord]] = {}
        for record in cancelled:
            by_backend.setdefault(record.backend, []).append(record)
        failures: list[str] = []
        for name, records in by_backend.items():
            try:  # one unreachable backend must not spare the others' jobs
                self.backend(name).cancel(records)
            except JobkitError as exc:
                failures.append(f"{name} ({', '.join(r.id for r in records)}): {exc}")
        self.monitor.poke([r.id for r in cancelled])
        if failures:
            raise BackendError(
                "jobs were marked CANCELLED but these backends could not be told to stop them: "
                + "; ".join(failures)
            )
        return [r.id for r in cancelled]

    def retry(self, ids: Sequence[str]) -> list[Job[Any]]:
        """Rerun FAILED/CANCELLED jobs as new attempts of the same ids (see
        :mod:`jobkit.rerun`); returns handles that follow the new attempts.

        A job id must name a FAILED or CANCELLED job (any other: one
        ConfigError naming them all, nothing rerun); an array id reruns its
        FAILED/CANCELLED items and leaves the others.  One backend submission
        per backend, array and resources.
        """
        from jobkit.job import Job
        from jobkit.lookup import find
        from jobkit.rerun import RERUNNABLE, groups, refusal, reopen

        chosen: dict[str, JobRecord] = {}
        refused: list[JobRecord] = []
        for job_id in ids:
            found = find(self.store, job_id)
            if found.job is not None:
                if found.job.state in RERUNNABLE:
                    chosen[found.job.id] = found.job
                else:
                    refused.append(found.job)
            else:
                chosen.update((r.id, r) for r in found.members if r.state in RERUNNABLE)
        problem = refusal(refused) or self._unmet_dependencies(list(chosen.values()))
        if problem:
            raise ConfigError(problem)
        jobs: list[Job[Any]] = []
        for group in groups(reopen(self.store, list(chosen.values()))):
            jobs += [Job(self, r) for r in self._resubmit(group)]
        return jobs

    def _unmet_dependencies(self, records: Sequence[JobRecord]) -> str | None:
        """Why some of ``records`` cannot rerun yet: a job they depend on has
        not succeeded (rerun it first), or None."""
        from jobkit.lookup import array_members

        wanted = {d for r in records for d in r.depends_on}
        if not wanted:
            return None
        found = self.store.get_many(wanted)
        unmet: list[str] = []
        for dep in sorted(wanted):
            members = [found[dep]] if dep in found else array_members(self.store, dep)
            if not members or any(m.state is not JobState.SUCCEEDED for m in members):
                unmet.append(dep)
        if not unmet:
            return None
        waiting = sorted(r.id for r in records if set(r.depends_on) & set(unmet))
        return (
            f"cannot retry {', '.join(waiting[:10])}: it depends on {', '.join(unmet[:10])}, "
            "which has not succeeded; retry that first, then these"
        )

    def _resubmit(self, records: Sequence[JobRecord]) -> list[JobRecord]:
        """One backend submission of reopened ``records`` (same backend, array and
        resources), accepted as a first submission is."""
        from jobkit.resources import Resources

        try:
            res = Resources.from_record(records[0].resources)
            accepted = self.backend(records[0].backend).submit(records, res)
        except Exception as exc:  # recorded whatever it is: no job stays PENDING forever
            self._record_submit_error(records, exc)
            raise
        written = accept(self.store, records, accepted, submitted_at=time.time())
        return [written.get(r.id, r) for r in records]

    def reconcile(
        self, records: Sequence[JobRecord], *, stale: bool = False
    ) -> dict[str, JobRecord]:
        """Ask each backend what it sees of these jobs (one batched query each)
        and let the reconciler record what their workers could not.

        PENDING jobs still in their submitter's hands are not asked about
        (:func:`jobkit.reconcile.observable`); those of a dead submitter are,
        so that their backend takes them or the reconciler fails them.

        First, held jobs among ``records`` whose dependencies ended are
        released or failed (:func:`jobkit.dependencies.step`), together with
        their held ancestors; the active ancestors are observed as well, so
        waiting on the last job of a chain drives the whole chain.

        ``stale``: the records are copies that may be out of date (the
        monitor's); only those whose observation would change them are read
        again, observed again and reconciled.  Returns the records read again.
        """
        from jobkit.dependencies import is_held, step
        from jobkit.reconcile import would_write

        reread: dict[str, JobRecord] = {}
        by_backend: dict[str, list[JobRecord]] = {}
        given = {r.id for r in records}
        held = [r.id for r in records if r.depends_on and is_held(r)]
        ancestors = [r for r in step(self, records) if r.id not in given]
        if held:  # the step may have released or failed them: observe what it wrote
            fresh = self.store.get_many(held)
            reread.update(fresh)
            records = [fresh.get(r.id, r) for r in records]
        records = [r for r in (*records, *ancestors) if not r.is_terminal]
        for record in observable(records):
            by_backend.setdefault(record.backend, []).append(record)
        for name, group in by_backend.items():
            with contextlib.suppress(JobkitError):
                backend = self.backend(name)
                observed = backend.observe(group)
                if observed and stale:
                    changed = [
                        r.id for r in group if r.id in observed and would_write(r, observed[r.id])
                    ]
                    fresh = self.store.get_many(changed) if changed else {}
                    reread.update(fresh)
                    group = observable([r for r in fresh.values() if not r.is_terminal])
                    observed = backend.observe(group) if group else {}
                if observed:
                    self._apply(backend, group, observed)
        return reread

    def _observed(
        self, name: str, records: Sequence[JobRecord], observed: Mapping[str, Observation]
    ) -> None:
        """What a backend saw outside ``observe`` (a watch thread), to the reconciler."""
        self._apply(self.backend(name), records, observed)

    def _apply(
        self, backend: Backend, records: Sequence[JobRecord], observed: Mapping[str, Observation]
    ) -> None:
        """Hand observations to the reconciler, then resubmit what it requeued.

        A backend that does not rerun attempts itself (Slurm, plugins) is
        given each retried attempt again here, by the process whose
        compare-and-set requeued it, with the record's resources as they now
        are (an OOM retry's grown ``mem``).  Each job goes alone, as a single
        job of its own id (an array's item too: ``array_id`` is dropped from
        the copy the backend sees), so one refusal fails only that job.
        """
        from jobkit.reconcile import resubmitted
        from jobkit.resources import Resources

        again = apply(self.store, records, observed, reruns=backend.reruns_failed_attempts)
        for record in again:
            try:
                resources = Resources.from_record(record.resources)
                single = dataclasses.replace(record, array_id=None, array_index=None)
                accepted = backend.submit([single], resources)
            except Exception as exc:  # recorded whatever it is: no attempt stays QUEUED forever
                now = self.store.get(record.id)
                if now.backend_id != record.backend_id or now.attempt != record.attempt:
                    continue  # another process resubmitted it (or it moved on)
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failure = Failure(
                    FailureReason.SUBMIT_ERROR,
                    f"resubmitting attempt {record.attempt} failed: {message}",
                )
                fail(self.store, record.id, failure, expect=(JobState.QUEUED,))
                continue
            resubmitted(self.store, record, accepted)

    # -- outcomes and logs -----------------------------------------------------
    def load_outcome(self, record: JobRecord) -> Outcome:
        from jobkit.job import failure_error
        from jobkit.serialization import Outcome, load_outcome

        owner = caching.outcome_owner(record)  # a cached job reads its source's outcome
        try:
            data = self.store.get_blob(outcome_key(owner))
        except BlobNotFoundError as exc:
            if owner != record.id:
                raise BlobNotFoundError(
                    f"job {record.id} reuses the cached result of job {owner}, whose result is "
                    f"gone from {self.store.url} (pruned?); submit the call again to rerun it"
                ) from exc
            if record.state is JobState.SUCCEEDED:
                raise
            return Outcome(ok=False, error=failure_error(record))
        try:
            outcome = load_outcome(data, key=self.key, job_id=owner)
        except SignatureError as exc:  # say which object, so it can be found and replaced
            where = self.store.blob_location(outcome_key(owner))
            raise SignatureError(f"{exc} (stored at {where})") from exc
        if outcome.ok and record.state is not JobState.SUCCEEDED:
            # An earlier attempt's result (a late worker of an attempt that
            # ended, then rerun): never the answer of a job that failed.
            return Outcome(ok=False, error=failure_error(record))
        return outcome

    def load_outcomes(self, records: Sequence[JobRecord]) -> dict[str, Outcome]:
        """Outcomes of many ended jobs, their blobs read in a few round trips
        (``get_blobs``); a job whose outcome is missing or bad is left out, so
        that :meth:`load_outcome` reports it the usual way."""
        from jobkit.errors import JobkitError
        from jobkit.serialization import load_outcome

        wanted: dict[str, list[JobRecord]] = {}
        for record in records:  # cached jobs share their source's outcome
            wanted.setdefault(outcome_key(caching.outcome_owner(record)), []).append(record)
        found: dict[str, Outcome] = {}
        for key, data in self.store.get_blobs(list(wanted)).items():
            for copy, record in enumerate(wanted[key]):
                blob = data if copy == 0 else bytearray(data)  # results never share memory
                with contextlib.suppress(JobkitError):
                    owner = caching.outcome_owner(record)
                    outcome = load_outcome(blob, key=self.key, job_id=owner)
                    if outcome.ok and record.state is not JobState.SUCCEEDED:
                        continue  # a stale success: load_outcome says what happened
                    found[record.id] = outcome
        return found

    def read_logs(self, record: JobRecord, stream: str) -> str:
        return self.backend(record.backend).read_logs(record, stream)

    def follow_logs(self, job: Job[Any], stream: str, poll: float = 0.1) -> Iterator[str]:
        """Yield complete lines as they are written, until the job has ended."""
        offset = 0
        pending = ""
        while True:
            finished = job.done()
            text = self.read_logs(job._record, stream)
            chunk, offset = text[offset:], len(text)
            pending += chunk
            *lines, pending = pending.split("\n")
            yield from (line + "\n" for line in lines)
            if finished:
                if pending:
                    yield pending
                return
            time.sleep(poll)


def parse_states(
    state: str | JobState | Iterable[str | JobState] | None,
) -> list[JobState] | None:
    """Accept one state or several, by enum or name (any case)."""
    if state is None:
        return None
    items = [state] if isinstance(state, (str, JobState)) else list(state)
    out = []
    for item in items:
        try:
            out.append(JobState(str(item).upper()))
        except ValueError:
            valid = ", ".join(s.value for s in JobState)
            raise ConfigError(f"invalid state {item!r}: expected one of {valid}") from None
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
