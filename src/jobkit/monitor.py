"""The monitor: one thread per client that finishes watched jobs.

Every non-terminal :class:`~jobkit.job.Job` this process holds is watched.
Its work per cycle follows what changed, not how many jobs are watched:

* **Hints.**  Backends that push completions (the local agent, over its
  socket) call :meth:`Monitor.poke` with the ids that ended; a waiter
  (``result()``) and ``cancel`` hint their own ids.  A cycle with
  hints reads only those ids (``finished_among``); a hinted job not yet final
  is checked again a few times with a backoff, then left to the sweeps.
* **Sweeps** read every watched id in one batched ``finished_among``.  With
  push backends only, they are a rare safety net: at most
  :attr:`Monitor.SAFETY_READS` ids a second (a 10,000-item local map is swept
  every 5 s).  Polling backends (Slurm, Kubernetes) have nothing to push, so
  their sweeps back off from 5 ms to ``poll_interval`` as before.
* **Reconcile** (during sweeps, every :meth:`Monitor.reconcile_interval`)
  hands the backends the records the monitor already *knows* (each handle's
  record, updated whenever the monitor reads one), not a fresh ``get_many``
  of everything: a record is re-read only when its backend's observation
  would change it (``client.reconcile(..., stale=True)``), or when it was
  last read :meth:`Monitor.refresh_age` ago (the safety net for copies gone
  stale in ways no observation shows).

Data flow (who reads and who writes)::

    worker / backend ──writes state──▶ store ◀──finished_among(hinted | all)── Monitor
          │                              ▲                                       │
          └──poke(ids) (push backends) ──┼──────────────────────────▶ wake ─────┤
                                         │ get_many(only what changed or aged)   ▼
                  client.reconcile(known active, stale=True) ◀── reconcile_interval
                  (backends observe; records they would change are re-read)     │
                                                                                 ▼
                                    Job._finish(record) for every live handle ──┘
                                    (settles the future: waiters, callbacks)

The monitor never writes to the store: it only reads, asks backends to
reconcile, and settles handles.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobkitError
from jobkit.states import JobRecord

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.job import Job


class Monitor:
    """Background thread that moves watched jobs to their final state."""

    MIN_INTERVAL = 0.005
    MIN_INTERVAL_BILLED = 0.1
    """The first pause on a store billed per request (``read_budget`` set): a
    pushing backend (the local agent) says when a job ends anyway, and a
    second-long Slurm job does not need to be polled every 5 ms."""
    SAFETY_READS = 2000.0
    """Watched ids a second that safety sweeps may read when every backend
    pushes completions: sweeps of a large map come less often, not costlier."""
    HINT_RETRIES = 8
    """Checks of a hinted job that is not final yet (5 ms, 10 ms, ... apart)."""
    REFRESH_AGE = 30.0
    """Shortest time before the monitor re-reads a record nothing said changed."""

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
        self._known: dict[str, JobRecord] = {}  # the latest record read, by id
        self._read_at: dict[str, float] = {}  # when it was read (monotonic)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hinted: set[str] = set()
        self._unconfirmed: dict[str, tuple[int, float]] = {}  # id -> (checks, next check)
        self._once: set[str] = set()  # hinted ids to check once, not again
        self._sweep_now = False
        self._restart_backoff = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last_reconcile = 0.0

    def watch(self, job: Job[Any], *, keep: bool = False) -> None:
        """Finish ``job`` when the store says it ended; ``keep``: hold it
        strongly until then (it has callbacks that must run)."""
        with self._lock:
            if job.id not in self._jobs:
                self._known[job.id] = job._record
                self._read_at[job.id] = time.monotonic()
            self._jobs.setdefault(job.id, weakref.WeakSet()).add(job)
            if keep:
                kept = self._kept.setdefault(job.id, [])
                if not any(k is job for k in kept):
                    kept.append(job)
            self._created.setdefault(job.id, job._record.created_at)
            self._restart_backoff = True  # polling backends: sweep soon (no read of it now)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="jobkit-monitor", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def poke(self, job_ids: Iterable[str] | None = None, *, ended: bool = True) -> None:
        """Check the store now: only ``job_ids`` if named, else every watched job.

        ``ended``: the caller knows these jobs ended (a backend's push), so one
        the store does not show final yet is looked at again a few times; a
        waiter that only hopes so (``result()``) passes False: one look."""
        with self._lock:
            if job_ids is None:
                self._sweep_now = True
            else:
                ids = set(job_ids)
                self._hinted.update(ids)
                if not ended:
                    self._once.update(ids)
        self._wake.set()

    def _run(self) -> None:
        """Check hinted jobs as hints come; sweep every watched job on the
        backoff of :meth:`_ceiling` (see the module docstring)."""
        try:
            shortest = (
                self.MIN_INTERVAL
                if self._client.store.read_budget is None
                else self.MIN_INTERVAL_BILLED
            )
        except ReferenceError:
            return  # the client is gone
        interval = shortest
        next_sweep = 0.0
        while True:
            with self._lock:
                retry_at = min((t for _, t in self._unconfirmed.values()), default=next_sweep)
            self._wake.wait(max(0.0, min(next_sweep, retry_at) - time.monotonic()))
            self._wake.clear()
            try:
                pushed = all(b.pushes_completions for b in self._client.open_backends())
            except ReferenceError:
                return
            now = time.monotonic()
            with self._lock:
                if not self._jobs:
                    self._hinted.clear()
                    self._unconfirmed.clear()
                    self._once.clear()
                    wait_forever = True
                else:
                    wait_forever = False
                    hinted = {i for i in self._hinted if i in self._jobs}
                    hinted.update(
                        i for i, (_, t) in self._unconfirmed.items() if t <= now and i in self._jobs
                    )
                    self._hinted.clear()
                    once, self._once = self._once, set()
                    if self._restart_backoff and not pushed:
                        interval = shortest  # a new job: sweep soon, then back off
                        next_sweep = min(next_sweep, now + shortest)
                    self._restart_backoff = False
                    sweep = self._sweep_now or now >= next_sweep
                    if self._sweep_now:
                        interval = shortest
                    self._sweep_now = False
                    if sweep:
                        self._forget_dropped()
                        self._unconfirmed.clear()
                    ids = list(self._jobs) if sweep else sorted(hinted)
                    since = min((self._created[i] for i in ids if i in self._created), default=None)
            if wait_forever:
                self._wake.wait()
                continue
            try:
                finished = self._check(ids, since=since, reconcile=sweep) if ids else set()
            except ReferenceError:
                return  # the client is gone
            except JobkitError:
                finished = set()  # store briefly unreachable: try again next sweep
            if not sweep:
                self._recheck_later(
                    [i for i in ids if i not in finished and i not in once], shortest
                )
                continue
            try:
                ceiling = self._ceiling(len(ids), pushed=pushed)
            except ReferenceError:
                return  # the client is gone
            interval = ceiling if pushed else min(interval * 2, ceiling)
            next_sweep = time.monotonic() + interval

    def _recheck_later(self, ids: Iterable[str], shortest: float) -> None:
        """Hinted jobs not final yet (a waiter's own, a push that beat the write):
        look again with a backoff, ``HINT_RETRIES`` times at most."""
        now = time.monotonic()
        with self._lock:
            for job_id in ids:
                if job_id not in self._jobs:
                    continue
                tries = self._unconfirmed.get(job_id, (0, 0.0))[0]
                if tries >= self.HINT_RETRIES:
                    self._unconfirmed.pop(job_id, None)
                else:
                    self._unconfirmed[job_id] = (tries + 1, now + shortest * 2**tries)

    def reconcile_interval(self, watched: int) -> float:
        """``poll_interval``, stretched so that re-reading ``watched`` records
        stays within the store's :attr:`~jobkit.stores.base.Store.read_budget`
        (on S3, 200 watched jobs are reconciled every 4 s, not every second)."""
        client = self._client
        budget = client.store.read_budget
        interval = float(client.config.poll_interval)
        return interval if budget is None else max(interval, watched / budget)

    def refresh_age(self, watched: int) -> float:
        """How old a known record may get before a reconcile re-reads it anyway:
        ``REFRESH_AGE``, longer where re-reading ``watched`` records would spend
        more than a tenth of the store's read budget (or ``SAFETY_READS``)."""
        budget = self._client.store.read_budget
        rate = self.SAFETY_READS if budget is None else budget / 10
        return max(self.REFRESH_AGE, watched / rate)

    def _ceiling(self, watched: int, *, pushed: bool) -> float:
        """Longest pause between sweeps.  Every backend in use pushes: a safety
        sweep, ``poll_interval`` or longer so that at most ``SAFETY_READS`` ids
        are read a second.  Else as often as the store affords, widened with the
        number of watched jobs (about 0.2 ms of reading per job)."""
        client = self._client
        slowest = float(client.config.poll_interval)
        if pushed:
            return max(slowest, watched / self.SAFETY_READS)
        return min(slowest, max(float(client.store.sweep_interval), 0.0002 * watched))

    def check(self, ids: Sequence[str], *, since: float | None = None) -> int:
        """Finish the watched ``ids`` that ended, reconciling first when due;
        how many were finished."""
        return len(self._check(ids, since=since, reconcile=True))

    def _check(self, ids: Sequence[str], *, since: float | None, reconcile: bool) -> set[str]:
        """Finish the watched jobs that ended; reconcile the others every
        :meth:`reconcile_interval` (one batched backend query).  ``since``:
        no watched job is older (lets the store skip older index entries)."""
        client = self._client
        now = time.monotonic()
        if reconcile and now - self._last_reconcile >= self.reconcile_interval(len(ids)):
            self._last_reconcile = now
            self._reconcile(ids)
        records = client.store.finished_among(ids, since=since)
        finished: set[str] = set()
        for job_id, record in records.items():
            if record.is_terminal:
                with self._lock:
                    handles = self._pop(job_id)
                for job in handles:
                    job._finish(record)
                finished.add(job_id)
        return finished

    def _reconcile(self, ids: Sequence[str]) -> None:
        """Hand the backends the records already known; re-read only those past
        :meth:`refresh_age` and those the backends would change.

        A copy still PENDING in this live submitter's hands is not shown to
        backends (:func:`jobkit.reconcile.observable`) until its refresh: its
        submitter, alive, records what the backend accepted."""
        client = self._client
        now = time.monotonic()
        age = self.refresh_age(len(ids))
        with self._lock:
            known = {i: self._known[i] for i in ids if i in self._known}
            stale = [i for i in ids if i not in known or now - self._read_at.get(i, 0.0) >= age]
        if stale:
            fresh = client.store.get_many(stale)
            self._remember(fresh, now)
            known.update(fresh)
        active = [r for r in known.values() if not r.is_terminal]
        if active:
            self._remember(client.reconcile(active, stale=True), time.monotonic())

    def _remember(self, records: Mapping[str, JobRecord], read_at: float) -> None:
        with self._lock:
            for job_id, record in records.items():
                if job_id in self._jobs:
                    self._known[job_id] = record
                    self._read_at[job_id] = read_at

    def _pop(self, job_id: str) -> list[Job[Any]]:
        """Stop watching ``job_id``; its live handles (caller holds the lock)."""
        weak = self._jobs.pop(job_id, None)
        kept = self._kept.pop(job_id, [])
        self._forget(job_id)
        handles = list(weak) if weak is not None else []
        handles.extend(k for k in kept if not any(k is h for h in handles))
        return handles

    def _forget(self, job_id: str) -> None:
        self._created.pop(job_id, None)
        self._known.pop(job_id, None)
        self._read_at.pop(job_id, None)
        self._unconfirmed.pop(job_id, None)

    def _forget_dropped(self) -> None:
        """Stop watching jobs whose every handle was dropped (caller holds the lock)."""
        for job_id in [i for i, weak in self._jobs.items() if not weak]:
            del self._jobs[job_id]
            self._forget(job_id)
