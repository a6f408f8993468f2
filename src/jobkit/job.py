"""Job and JobArray: futures whose truth lives in the store.

A :class:`Job` *is* a :class:`concurrent.futures.Future`, so
``concurrent.futures.wait``/``as_completed``, ``asyncio.wrap_future`` and
``await job`` work unchanged.  Unlike an executor's future nobody inside this
process sets its result: the client's monitor sees the terminal state in the
store and calls :meth:`Job._finish`, which flips the future's state and wakes
waiters *without* loading the outcome.  ``result()`` loads and verifies the
outcome lazily, once, so listing ten thousand finished jobs reads no blobs.

One job may have many handles (``submit``, then ``jobs()`` or ``get()`` in a
later notebook cell): the monitor finishes every one of them.  It holds a
handle weakly (a dropped handle costs no polling) unless the handle has done
callbacks, which must run even when nobody holds it (``await``, executors).

Settling without private names
------------------------------
``concurrent.futures.wait``/``as_completed`` read a future's private
``_condition``, ``_state`` and ``_waiters`` (CPython's ``_AcquireFutures`` and
``_create_and_install_waiters``); no public protocol replaces them, so a Job
must be a real ``Future`` whose base state is kept right.  It is, but only
through the base class's *public* settling methods, in one place
(:func:`_settle`): ``Future.set_result``/``set_exception`` for a finished job
and ``Future.cancel`` + ``Future.set_running_or_notify_cancel`` for a
cancelled one.  Those notify waiters, wake ``result()`` callers and run done
callbacks exactly as an executor's future would.  The settled base value is a
marker only: ``result()``/``exception()`` are overridden to load the job's
real outcome from the store.

``cancel()`` differs from ``Future.cancel`` on purpose: a running job is
killed too (that is what a user cancelling a job means), and the call returns
True whenever the job was not yet terminal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from jobkit.errors import DependencyError, JobFailedError
from jobkit.states import FailureReason, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.serialization import Outcome

T = TypeVar("T")

_Future = concurrent.futures.Future


def _settle(future: concurrent.futures.Future[Any], record: JobRecord) -> bool:
    """Settle the base ``Future`` of a job that ended; False if already settled.

    The one place a Job's future state changes, and only through the base
    class's public methods (a Job overrides them to refuse callers): that keeps
    ``wait``/``as_completed``/``asyncio.wrap_future``, which read the base
    class's private state, correct without this module touching it.  A failed
    job settles with :func:`failure_error` (cheap, no blob read) so that
    ``wait(return_when=FIRST_EXCEPTION)`` sees it; callers of ``exception()``
    get the real outcome, loaded by the Job itself.
    """
    try:
        if record.state is JobState.CANCELLED:
            _Future.cancel(future)
            _Future.set_running_or_notify_cancel(future)  # tells wait()'s waiters
        elif record.state is JobState.FAILED:
            _Future.set_exception(future, failure_error(record))
        else:
            _Future.set_result(future, None)
    except concurrent.futures.InvalidStateError:
        return False  # another thread settled it first
    return True


class Job(concurrent.futures.Future, Generic[T]):  # type: ignore[type-arg]
    """A handle on one job, found again anywhere by its id."""

    def __init__(self, client: Client, record: JobRecord) -> None:
        super().__init__()
        self._settling = threading.Lock()  # the monitor and a reader may both finish it
        self._client = client
        self._record = record
        self._outcome: Outcome | None = None
        self.id: str = record.id
        if record.is_terminal:
            self._finish(record)
        else:
            client.monitor.watch(self)

    # -- what the store knows ------------------------------------------------
    def _refresh(self) -> JobRecord:
        if _Future.done(self):
            return self._record
        record = self._client.store.get(self.id)
        self._record = record
        if record.is_terminal:
            self._finish(record)
        return record

    @property
    def state(self) -> JobState:
        """The job's state now (read from the store unless already final)."""
        return self._refresh().state

    @property
    def info(self) -> JobRecord:
        """The full record: backend id, resources, timestamps, host, exit code, reason."""
        return self._refresh()

    @property
    def name(self) -> str:
        return self._record.name

    # -- Future interface ----------------------------------------------------
    def done(self) -> bool:
        return self._refresh().is_terminal

    def running(self) -> bool:
        return self._refresh().state is JobState.RUNNING

    def cancelled(self) -> bool:
        return self._refresh().state is JobState.CANCELLED

    def cancel(self) -> bool:
        """Cancel the job, killing it if it runs; True unless it had already ended."""
        if self.done():
            return False
        self._client.cancel([self.id])
        return self.cancelled()

    def retry(self) -> Job[T]:
        """Rerun this FAILED or CANCELLED job as its next attempt (same id, same
        call); returns a new handle that follows it (this one keeps the ended
        attempt).  Any other state: ConfigError, nothing rerun."""
        rerun = self._client.retry([self.id])
        # Empty: another process reopened it first; follow that attempt.
        return rerun[0] if rerun else Job(self._client, self._client.store.get(self.id))

    def result(self, timeout: float | None = None) -> T:
        """The return value; re-raises the job's original exception.

        The remote traceback is chained as ``__cause__``.  Raises
        ``concurrent.futures.TimeoutError`` after ``timeout`` seconds and
        ``CancelledError`` for a cancelled job.
        """
        outcome = self._wait_outcome(timeout)
        value: T = outcome.unwrap()
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        outcome = self._wait_outcome(timeout)
        return None if outcome.ok else outcome.error

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[Any]], object]) -> None:
        """Run ``fn(job)`` when the job ends, even if nobody else holds this
        handle (``await job`` and executors rely on that)."""
        if not _Future.done(self):
            self._client.monitor.watch(self, keep=True)
        super().add_done_callback(fn)

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a Job's state is driven by its store, not set by callers")

    def set_result(self, result: object) -> None:
        raise RuntimeError("a Job's result is written by its worker, not set by callers")

    def set_exception(self, exception: BaseException | None) -> None:
        raise RuntimeError("a Job's outcome is written by its worker, not set by callers")

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self).__await__()

    # -- logs ----------------------------------------------------------------
    @overload
    def logs(self, stream: str = ..., *, follow: Literal[False] = False) -> str: ...
    @overload
    def logs(self, stream: str = ..., *, follow: Literal[True]) -> Iterator[str]: ...
    def logs(self, stream: str = "stdout", *, follow: bool = False) -> str | Iterator[str]:
        """Text written so far to ``stream``; ``follow=True`` yields lines until the end."""
        if stream not in ("stdout", "stderr"):
            from jobkit.errors import ConfigError

            raise ConfigError(f"invalid log stream {stream!r}: expected 'stdout' or 'stderr'")
        if follow:
            return self._client.follow_logs(self, stream)
        return self._client.read_logs(self._refresh(), stream)

    # -- internals -----------------------------------------------------------
    def _wait_outcome(self, timeout: float | None) -> Outcome:
        if not _Future.done(self):
            self._client.monitor.poke([self.id], ended=False)  # this job, not every job
        try:
            # The base class waits on its own condition until _settle() runs.
            _Future.exception(self, timeout)
        except concurrent.futures.TimeoutError:
            raise concurrent.futures.TimeoutError(
                f"job {self.id} did not finish within {timeout} s"
            ) from None
        except concurrent.futures.CancelledError:
            raise concurrent.futures.CancelledError(f"job {self.id} was cancelled") from None
        if self._outcome is None:
            self._outcome = self._client.load_outcome(self._record)
        return self._outcome

    def _finish(self, record: JobRecord) -> None:
        """Record the final state and settle the future; for the client's monitor only."""
        with self._settling:
            if _Future.done(self):
                return
            self._record = record
            _settle(self, record)

    def __repr__(self) -> str:
        from jobkit.display import current_record, job_text

        return job_text(current_record(self))

    def _repr_html_(self) -> str:
        """Jupyter's view: id, name, current state, backend, times, failure."""
        from jobkit.display import current_record, job_html

        return job_html(current_record(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # A handle pickles as a reference (store + id), never as its state:
        # the process that unpickles it reattaches like jobkit.get() does.
        return (_reattach, (self._client.config.store, self.id))


def _reattach(store: str, job_id: str) -> Job[Any] | JobArray[Any]:
    from jobkit.context import use

    with use(store=store) as client:
        return client.get(job_id)


def failure_error(record: JobRecord) -> JobFailedError:
    """The error for a job that failed without an outcome (timeout, OOM, lost;
    :class:`~jobkit.errors.DependencyError` naming the root job for a
    DEPENDENCY failure)."""
    reason = record.failure_reason or FailureReason.LOST
    detail = f": {record.message}" if record.message else ""
    if reason is FailureReason.DEPENDENCY:
        return DependencyError(
            f"job {record.id} ({record.name}) never ran{detail}",
            job_id=record.id,
            dependency_id=str(record.extra.get("failed_dependency") or ""),
            reason=reason,
        )
    return JobFailedError(
        f"job {record.id} ({record.name}) failed with {reason.value}{detail}",
        job_id=record.id,
        reason=reason,
    )


class JobArray(Sequence[Job[T]]):
    """The jobs of one ``map``: a sequence with bulk helpers."""

    def __init__(self, array_id: str, jobs: Sequence[Job[T]]) -> None:
        self.id = array_id
        self._jobs = list(jobs)

    @overload
    def __getitem__(self, index: int) -> Job[T]: ...
    @overload
    def __getitem__(self, index: slice) -> list[Job[T]]: ...
    def __getitem__(self, index: int | slice) -> Job[T] | list[Job[T]]:
        return self._jobs[index]

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job[T]]:
        return iter(self._jobs)

    def states(self) -> list[JobState]:
        records = (
            self._jobs[0]._client.store.get_many([j.id for j in self._jobs]) if self._jobs else {}
        )
        return [records[j.id].state if j.id in records else j._record.state for j in self._jobs]

    def wait(self, timeout: float | None = None, *, progress: bool | None = None) -> bool:
        """Block until every job ended; True if all did within ``timeout``."""
        from jobkit import display

        if progress is None:
            progress = display.interactive()
        if not progress:
            _done, not_done = concurrent.futures.wait(self._jobs, timeout=timeout)
            return not not_done
        return display.wait_with_progress(self._jobs, timeout, label=self.id)

    def results(self, timeout: float | None = None, *, progress: bool | None = None) -> list[T]:
        """All results in order; raises the first failed job's exception."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait(timeout, progress=progress)
        self._prefetch_outcomes()
        out = []
        for job in self._jobs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(job.result(remaining))
        return out

    def _prefetch_outcomes(self) -> None:
        """Load the outcomes of the ended jobs in bulk (one read per few
        hundred, not one per job); each job's ``result()`` then finds its own."""
        ended = [j for j in self._jobs if j._outcome is None and _Future.done(j)]
        if not ended:
            return
        loaded = ended[0]._client.load_outcomes([j._record for j in ended])
        for job in ended:
            outcome = loaded.get(job.id)
            if outcome is not None:
                job._outcome = outcome

    def cancel(self) -> int:
        """Cancel every job not yet ended; returns how many were cancelled."""
        live = [j.id for j in self._jobs if not j.done()]
        if live:
            self._jobs[0]._client.cancel(live)
        return sum(1 for j in self._jobs if j.id in live and j.cancelled())

    def retry_failed(self) -> JobArray[T]:
        """Rerun the FAILED and CANCELLED items, in one backend submission, as
        new attempts of the same ids; SUCCEEDED and still active items are left
        as they are.  Returns the array (same id, same items) with new handles
        for the rerun items; with nothing to rerun, the same handles."""
        if not self._jobs:
            return self
        rerun = {job.id: job for job in self._jobs[0]._client.retry([self.id])}
        if not rerun:
            return self
        return JobArray(self.id, [rerun.get(job.id, job) for job in self._jobs])

    def as_completed(self, timeout: float | None = None) -> Iterable[Job[T]]:
        return concurrent.futures.as_completed(self._jobs, timeout=timeout)  # type: ignore[return-value]

    def __repr__(self) -> str:
        from jobkit.display import array_text

        return array_text(self)

    def _repr_html_(self) -> str:
        """Jupyter's view: counts by state and the timeline, from one store read."""
        from jobkit.display import array_html

        return array_html(self)

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._jobs:
            return (JobArray, (self.id, []))
        return (_reattach, (self._jobs[0]._client.config.store, self.id))
