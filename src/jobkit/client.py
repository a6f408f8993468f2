"""Client: one resolved config wired to one store and its backends.

``jobkit.configure(...)`` sets configuration for the whole process (every
thread, every later notebook cell); ``jobkit.use(...)`` scopes more on top of
it to a block (a :class:`contextvars.ContextVar`, so one thread's or task's
block never leaks into another).  Clients are shared process-wide, one per
resolved configuration.

The monitor
-----------
Every non-terminal :class:`~jobkit.job.Job` this process holds is watched by
the client's monitor thread.  One cycle is one batched ``get_many`` on the
store for all watched ids (never a query per job), plus each backend's
``reconcile`` at its own cadence.  Backends that can push completions (the
local agent does, over its socket) call :meth:`Monitor.poke` so a finished
job is noticed within a millisecond instead of at the next poll.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import getpass
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.errors import (
    BackendError,
    BlobNotFoundError,
    ConfigError,
    JobkitError,
    SignatureError,
)
from jobkit.states import ACTIVE_STATES, FailureReason, JobRecord, JobState
from jobkit.stores.base import Store, outcome_key, payload_key

if TYPE_CHECKING:
    from jobkit.backends.base import Backend
    from jobkit.config import Config
    from jobkit.job import Job, JobArray
    from jobkit.resources import Resources
    from jobkit.serialization import Outcome

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_job_id() -> str:
    """``jk-`` + 9 chars of millisecond time + 5 random: sortable, short, unique."""
    value = int(time.time() * 1000)
    chars = []
    for _ in range(9):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    rand = secrets.randbits(25)
    for _ in range(5):
        rand, digit = divmod(rand, 32)
        chars.insert(9, _CROCKFORD[digit])
    return "jk-" + "".join(reversed(chars[:9])) + "".join(chars[9:])


class Monitor:
    """Background thread that moves watched jobs to their final state."""

    MIN_INTERVAL = 0.005
    MIN_INTERVAL_BILLED = 0.1
    """The first pause on a store billed per request (``read_budget`` set): a
    pushing backend (the local agent) says when a job ends anyway, and a
    second-long Slurm job does not need to be polled every 5 ms."""

    def __init__(self, client: Client) -> None:
        self._client = weakref.proxy(client)
        # Every handle to a job must finish when the job ends, however many the
        # user made (submit, jobs(), get()): so an id maps to *all* its handles.
        # Weakly: a handle the user dropped must not keep a job polled, and one
        # the user holds is alive by definition.  Handles with done callbacks
        # (``await``, executors) are kept strongly until the end, because their
        # callbacks must run even when nobody holds the handle itself.
        self._jobs: dict[str, weakref.WeakSet[Job[Any]]] = {}
        self._kept: dict[str, list[Job[Any]]] = {}
        self._created: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hinted: set[str] = set()
        self._sweep_now = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last_reconcile = 0.0

    def watch(self, job: Job[Any], *, keep: bool = False) -> None:
        """Finish ``job`` when the store says it ended; ``keep``: hold it
        strongly until then (it has callbacks that must run)."""
        with self._lock:
            self._jobs.setdefault(job.id, weakref.WeakSet()).add(job)
            if keep:
                kept = self._kept.setdefault(job.id, [])
                if not any(k is job for k in kept):
                    kept.append(job)
            self._created.setdefault(job.id, job._record.created_at)
            self._sweep_now = True
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="jobkit-monitor", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def poke(self, job_ids: Iterable[str] | None = None) -> None:
        """Check the store now: only ``job_ids`` if a backend named them
        (the local agent does), else every watched job."""
        with self._lock:
            if job_ids is None:
                self._sweep_now = True
            else:
                self._hinted.update(job_ids)
        self._wake.set()

    def _run(self) -> None:
        """Sweep every watched job with a backoff from 5 ms to ``poll_interval``;
        between sweeps check only the jobs a backend said have finished, so
        a thousand-job map costs one read per finished job, not per event."""
        shortest = (
            self.MIN_INTERVAL
            if self._client.store.read_budget is None
            else self.MIN_INTERVAL_BILLED
        )
        interval = shortest
        next_sweep = 0.0
        while True:
            self._wake.wait(max(0.0, next_sweep - time.monotonic()))
            self._wake.clear()
            with self._lock:
                if not self._jobs:
                    self._hinted.clear()
                    wait_forever = True
                else:
                    wait_forever = False
                    hinted = [i for i in self._hinted if i in self._jobs]
                    self._hinted.clear()
                    sweep = self._sweep_now or time.monotonic() >= next_sweep
                    if self._sweep_now:
                        interval = shortest
                    self._sweep_now = False
                    if sweep:
                        self._forget_dropped()
                    ids = list(self._jobs) if sweep else hinted
                    since = min((self._created[i] for i in ids), default=None)
            if wait_forever:
                self._wake.wait()
                continue
            try:
                finished = self.check(ids, since=since) if ids else 0
            except ReferenceError:
                return  # the client is gone
            except JobkitError:
                finished = 0  # store briefly unreachable: try again next sweep
            if sweep:
                # After a finish, sweep again soon only where finishes come in
                # bursts we were told about (push); else keep a steady pace.
                ceiling = self._ceiling(len(ids))
                pushed = ceiling >= self._client.config.poll_interval
                interval = shortest if finished and pushed else min(interval * 2, ceiling)
                next_sweep = time.monotonic() + interval

    def reconcile_interval(self, watched: int) -> float:
        """``poll_interval``, stretched so that re-reading ``watched`` records
        stays within the store's :attr:`~jobkit.stores.base.Store.read_budget`
        (on S3, 200 watched jobs are reconciled every 4 s, not every second)."""
        client = self._client
        budget = client.store.read_budget
        interval = float(client.config.poll_interval)
        return interval if budget is None else max(interval, watched / budget)

    def _ceiling(self, watched: int) -> float:
        """Longest pause between sweeps: ``poll_interval`` when every backend in
        use pushes completions, else as often as the store affords, widened
        with the number of watched jobs (about 0.2 ms of reading per job)."""
        client = self._client
        slowest = float(client.config.poll_interval)
        if all(b.pushes_completions for b in list(client._backends.values())):
            return slowest
        return min(slowest, max(float(client.store.sweep_interval), 0.0002 * watched))

    def check(self, ids: Sequence[str], *, since: float | None = None) -> int:
        """Finish the watched jobs that ended; reconcile the others every
        :meth:`reconcile_interval` (one batched backend query).  ``since``:
        no watched job is older (lets the store skip older index entries)."""
        client = self._client
        now = time.monotonic()
        if now - self._last_reconcile >= self.reconcile_interval(len(ids)):
            self._last_reconcile = now
            active = [r for r in client.store.get_many(ids).values() if not r.is_terminal]
            if active:
                client.reconcile(active)
        records = client.store.finished_among(ids, since=since)
        finished = 0
        for job_id, record in records.items():
            if record.is_terminal:
                with self._lock:
                    handles = self._pop(job_id)
                for job in handles:
                    job._finish(record)
                if handles:
                    finished += 1
        return finished

    def _pop(self, job_id: str) -> list[Job[Any]]:
        """Stop watching ``job_id``; its live handles (caller holds the lock)."""
        weak = self._jobs.pop(job_id, None)
        kept = self._kept.pop(job_id, [])
        self._created.pop(job_id, None)
        handles = list(weak) if weak is not None else []
        handles.extend(k for k in kept if not any(k is h for h in handles))
        return handles

    def _forget_dropped(self) -> None:
        """Stop watching jobs whose every handle was dropped (caller holds the lock)."""
        for job_id in [i for i, weak in self._jobs.items() if not weak]:
            del self._jobs[job_id]
            self._created.pop(job_id, None)


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
                backend = open_backend(name, self)
                self._backends[name] = backend
        return backend

    # -- submitting ----------------------------------------------------------
    def resolve_resources(self, resources: Resources | None) -> Resources:
        from jobkit.resources import parse_resources

        defaults = parse_resources(**self.config.resources)
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
    ) -> Job[Any]:
        return self._submit(fn, [(tuple(args), dict(kwargs))], resources, backend, array=False)[0]

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
        *,
        resources: Resources | None = None,
        backend: str | None = None,
    ) -> JobArray[Any]:
        from jobkit.job import JobArray

        calls = [(tuple(a), dict(k)) for a, k in items]
        jobs = self._submit(fn, calls, resources, backend, array=True)
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
    ) -> list[Job[Any]]:
        from jobkit.calls import check_calls
        from jobkit.job import Job
        from jobkit.serialization import Call, dump_payload, pickle_function

        check_calls(fn, calls, array=array)  # before anything is written
        res = self.resolve_resources(resources)
        backend = self.backend(backend_name)
        backend.check_resources(res)
        name = res.name or getattr(fn, "__qualname__", None) or type(fn).__name__
        now = time.time()
        array_id = new_job_id() if array else None
        base_id = new_job_id()
        owner = res.labels.get("owner") or res.labels.get("project") or _user()
        fn_pickle = pickle_function(fn) if array else None
        # Backends that warn before a time limit (Slurm) do so only for jobs that can resume.
        checkpointable = callable(getattr(fn, "checkpoint", None))
        records: list[JobRecord] = []
        meta = backend.payload_meta(res)
        for index, (args, kwargs) in enumerate(calls):
            job_id = f"{array_id}.{index}" if array_id else base_id
            call = Call(fn=None if array else fn, args=args, kwargs=kwargs, fn_pickle=fn_pickle)
            self.store.put_blob(
                payload_key(job_id), dump_payload(call, key=self.key, job_id=job_id, meta=meta)
            )
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
                    resources=res.to_record(),
                    labels=dict(res.labels),
                    extra={"checkpointable": True} if checkpointable else {},
                )
            )
        if not records:
            return []
        backend.prepare(records, res)
        self.store.create(records)
        try:
            backend.submit(records, res)
        except Exception as exc:  # recorded whatever it is: no job stays PENDING forever
            self._record_submit_error(records, exc)
            raise
        return [Job(self, r) for r in records]

    def _record_submit_error(self, records: Sequence[JobRecord], exc: Exception) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for record in records:
            self.store.transition(
                record.id,
                JobState.FAILED,
                failure_reason=FailureReason.SUBMIT_ERROR,
                message=message,
                finished_at=time.time(),
            )

    # -- finding and controlling ---------------------------------------------
    def get(self, job_id: str) -> Job[Any] | JobArray[Any]:
        from jobkit.job import Job, JobArray

        if not isinstance(job_id, str) or not job_id.strip():
            raise ConfigError(f"invalid job id {job_id!r}: expected a string like 'jk-...'")
        job_id = job_id.strip()
        try:
            return Job(self, self.store.get(job_id))
        except KeyError:
            members = self.store.query(array_id=job_id, oldest_first=True)
            if not members:
                raise
            members.sort(key=lambda r: r.array_index or 0)
            return JobArray(job_id, [Job(self, r) for r in members])

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
        self.monitor.poke()
        if failures:
            raise BackendError(
                "jobs were marked CANCELLED but these backends could not be told to stop them: "
                + "; ".join(failures)
            )
        return [r.id for r in cancelled]

    def reconcile(self, records: Sequence[JobRecord]) -> None:
        by_backend: dict[str, list[JobRecord]] = {}
        for record in records:
            by_backend.setdefault(record.backend, []).append(record)
        for name, group in by_backend.items():
            with contextlib.suppress(JobkitError):
                self.backend(name).reconcile(group)

    # -- outcomes and logs -----------------------------------------------------
    def load_outcome(self, record: JobRecord) -> Outcome:
        from jobkit.job import failure_error
        from jobkit.serialization import Outcome, load_outcome

        try:
            data = self.store.get_blob(outcome_key(record.id))
        except BlobNotFoundError:
            if record.state is JobState.SUCCEEDED:
                raise
            return Outcome(ok=False, error=failure_error(record))
        try:
            return load_outcome(data, key=self.key, job_id=record.id)
        except SignatureError as exc:  # say which object, so it can be found and replaced
            where = self.store.blob_location(outcome_key(record.id))
            raise SignatureError(f"{exc} (stored at {where})") from exc

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


# -- the default client: configure() process-wide, use() per context -----------
#
# configure() must reach every thread and every later notebook cell: threads
# start with an empty context, and ipykernel runs a cell with an ``await`` in a
# task with a *copy* of the context, so a ContextVar set there is lost.  So
# configure() writes one process-wide layer under a lock; use() stays a
# ContextVar, layered on top, so a ``with`` block in one thread or task never
# changes what another sees.  Clients are shared process-wide per resolved
# configuration: one store connection and one monitor thread, not one per
# thread.  Every store is safe to share: SQLite's one connection is opened
# with check_same_thread=False and serialised by the store's lock; the memory
# store guards its dictionaries with a lock; the S3 store's boto3 client is
# thread-safe (the store already drives it from a thread pool).

_config_lock = threading.Lock()
_configured: tuple[Mapping[str, Any], ...] = ()
_scoped: contextvars.ContextVar[tuple[Mapping[str, Any], ...]] = contextvars.ContextVar(
    "jobkit_scoped", default=()
)
_clients: dict[tuple[Any, ...], Client] = {}


def _after_fork_in_child() -> None:
    """A fork taken while another thread held the lock must not deadlock the child."""
    global _config_lock
    _config_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return repr(value)


def _overrides() -> tuple[Mapping[str, Any], ...]:
    """The caller's override stack: process-wide configure(), then this context's use()."""
    with _config_lock:
        configured = _configured
    return (*configured, *_scoped.get())


def current_client() -> Client:
    """The client for the configuration in force here (shared by every thread)."""
    from jobkit.config import load_config

    overrides = _overrides()
    key = (_freeze(overrides), os.getcwd(), _freeze(_env_key()))
    with _config_lock:
        client = _clients.get(key)
    if client is not None:
        return client
    fresh = Client(load_config(overrides))  # outside the lock: opening a store may be slow
    with _config_lock:
        client = _clients.setdefault(key, fresh)
    if client is not fresh:
        fresh.store.close()
    return client


def _env_key() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("JOBKIT_", "AWS_", "KUBECONFIG", "SLURM_CONF"))
    }


def configure(**settings: Any) -> None:
    """Set configuration for the whole process from now on.

    Seen by every thread and every later notebook cell; ``with jobkit.use()``
    blocks layer on top of it, and call arguments on top of both.  Settings
    accumulate: a later ``configure()`` overrides only the keys it names.
    """
    from jobkit.config import load_config

    global _configured
    with _config_lock:
        new = (*_configured, settings)
    load_config((*new, *_scoped.get()))  # validate now: a bad value fails here, not at submit
    with _config_lock:
        _configured = (*_configured, settings)


@contextlib.contextmanager
def use(**settings: Any) -> Iterator[Client]:
    """Scope configuration to a ``with`` block; yields the client it selects.

    Context-scoped: it applies in this thread or task (and the tasks it
    starts) only, layered on top of :func:`configure`'s process-wide settings.
    """
    from jobkit.config import load_config

    new = (*_scoped.get(), settings)
    load_config((*_overrides(), settings))
    token = _scoped.set(new)
    try:
        yield current_client()
    finally:
        _scoped.reset(token)
