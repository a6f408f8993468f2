"""``jobkit.Executor``: a real ``concurrent.futures.Executor`` over any backend.

Code written for ``ProcessPoolExecutor`` (``loop.run_in_executor``, libraries
that take an executor) runs on Slurm or Kubernetes by swapping the executor.
Futures are :class:`~jobkit.job.Job` objects; ``map`` is one array
submission rather than one job per call.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from jobkit.client import Client, current_client
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
        self._jobs: list[Job[Any]] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Job[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            job: Job[T] = self._client.submit(
                fn, args, kwargs, resources=self._resources, backend=self._backend
            )
            self._jobs.append(job)
            return job

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
            array = self._client.map(fn, items, resources=self._resources, backend=self._backend)
            self._jobs.extend(array)

        def results() -> Iterator[T]:
            pending = list(array)
            pending.reverse()
            try:
                while pending:
                    job = pending.pop()
                    if deadline is None:
                        yield job.result()
                    else:
                        yield job.result(deadline - time.monotonic())
            finally:
                live = [j.id for j in pending if not j.done()]
                if live:
                    self._client.cancel(live)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            jobs = list(self._jobs)
        if cancel_futures:
            waiting = [j.id for j in jobs if j.state in (JobState.PENDING, JobState.QUEUED)]
            if waiting:
                self._client.cancel(waiting)
        if wait:
            concurrent.futures.wait(jobs)
