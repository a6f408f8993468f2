"""The monitor: one thread per client that finishes watched jobs.

Every non-terminal :class:`~jobkit.job.Job` this process holds is watched.
One cycle is one batched ``finished_among`` on the store for the watched ids
(never a query per job), plus the backends' ``reconcile`` at its own,
budget-stretched cadence.  Backends that push completions (the local agent,
over its socket) call :meth:`Monitor.poke` with the ids that ended, so a
finished job is noticed within a millisecond instead of at the next sweep.

Data flow (who reads and who writes)::

    worker / backend ──writes state──▶ store ◀──get_many / finished_among── Monitor
          │                                                                    │
          └──poke(ids) (push backends) ─────────────────────────────▶ wake ───┤
                                                                               ▼
                      client.reconcile(active) ◀── every reconcile_interval ───┤
                      (backends re-read their native state)                    │
                                                                               ▼
                                    Job._finish(record) for every live handle ─┘
                                    (settles the future: waiters, callbacks)

The monitor never writes to the store: it only reads, asks backends to
reconcile, and settles handles.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobkitError

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
                try:
                    ceiling = self._ceiling(len(ids))
                    pushed = ceiling >= self._client.config.poll_interval
                except ReferenceError:
                    return  # the client is gone
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
        if all(b.pushes_completions for b in client.open_backends()):
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
