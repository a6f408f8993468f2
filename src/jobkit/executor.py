"""``jobkit.Executor``: a real ``concurrent.futures.Executor`` over any backend.

Code written for ``ProcessPoolExecutor`` (``loop.run_in_executor``, libraries
that take an executor) runs on Slurm or Kubernetes by swapping the executor.
Futures are :class:`~jobkit.job.Job` objects; ``map`` is one array
submission rather than one job per call.

Memory stays bounded however long the executor lives: it tracks only the
jobs that have not ended (each removes itself when done, for ``shutdown``),
and ``map``'s iterator holds only the jobs not yet yielded, so a result is
collectable as soon as the caller drops it (CPython's ``test_free_reference``).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from jobkit.client import Client
from jobkit.context import current_client
from jobkit.job import Job
from jobkit.resources import Resources, parse_resources
from jobkit.states import JobState

T = TypeVar("T")


class Executor(concurrent.futures.Executor):
    """Submit callables as jobs with fixed resources on one backend."""

    def __init__(self, backend: str | None = None, **resources: Any) -> None:
        self._resources: Resources = parse_resources(**resources)
        self._backend = backend
        self._client: Client = current_client()
        self._client.backend(backend)  # an unknown backend fails here, not on first submit
        self._unfinished: dict[int, Job[Any]] = {}
        # Reentrant: a job that ended already runs its done callback (which
        # takes this lock) inside add_done_callback, under submit's lock.
        self._lock = threading.RLock()
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Job[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            job: Job[T] = self._client.submit(
                fn, args, kwargs, resources=self._resources, backend=self._backend
            )
            self._track([job])
            return job

    def _track(self, jobs: list[Job[Any]]) -> None:
        """Hold ``jobs`` until each ends (for ``shutdown``), never after."""
        for job in jobs:
            self._unfinished[id(job)] = job
        for job in jobs:
            job.add_done_callback(self._forget)

    def _forget(self, job: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._unfinished.pop(id(job), None)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Results in order; ``timeout`` counts from this call, as in the stdlib."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            items: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                (args, {}) for args in zip(*iterables, strict=False)
            ]
            jobs = list(
                self._client.map(fn, items, resources=self._resources, backend=self._backend)
            )
            self._track(jobs)
        jobs.reverse()
        return self._results(jobs, deadline)

    def _results(self, pending: list[Job[T]], deadline: float | None) -> Iterator[T]:
        """Yield results in order, holding no job (nor result) already yielded:
        each is popped straight into ``result()``, no local name keeps it."""
        try:
            while pending:
                if deadline is None:
                    yield pending.pop().result()
                else:
                    yield pending.pop().result(deadline - time.monotonic())
        finally:
            live = [j.id for j in pending if not j.done()]
            if live:
                self._client.cancel(live)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            jobs = list(self._unfinished.values())
        if cancel_futures:
            waiting = [j.id for j in jobs if j.state in (JobState.PENDING, JobState.QUEUED)]
            if waiting:
                self._client.cancel(waiting)
        if wait:
            concurrent.futures.wait(jobs)
