"""One exception tree for everything jobkit raises on purpose.

Library errors from boto3, kubernetes, subprocess (sbatch) or sqlite3 are
translated at the boundary (``raise ... from exc``) so that callers catch one
family::

    JobkitError
    ├── ConfigError            bad decorator argument, resource, config file or store URL
    ├── SerializationError     an argument, result or exception cannot be pickled
    │   └── VersionMismatchError   payload made by another Python/jobkit than the worker's
    ├── SignatureError         payload/outcome unsigned or altered: never unpickled
    ├── StoreError             store refused a request, corrupted record or blob
    │   ├── StoreUnavailableError  unreachable or overloaded: a retry may succeed
    │   ├── JobNotFoundError   no job with that id in the store
    │   └── BlobNotFoundError  a payload/outcome/log blob is missing
    ├── BackendError           backend unusable or a backend command failed
    │   └── SubmitError        the backend refused the submission
    ├── IllegalTransitionError a state change that would rewrite history
    └── JobFailedError         the job failed and its original exception cannot be rebuilt
        └── DependencyError    it never ran: a job it depends on failed or was cancelled

``result()`` re-raises the job's *original* exception whenever it unpickles;
``JobFailedError`` is only the fallback (timeouts, OOM, lost workers, or an
exception class the client cannot import).  Timeouts of ``result(timeout=)``
and cancellations use ``concurrent.futures.TimeoutError``/``CancelledError``
so code written for futures keeps working.
"""

from __future__ import annotations

from typing import Any


class JobkitError(Exception):
    """Base class of every error jobkit raises on purpose."""


class ConfigError(JobkitError, ValueError):
    """Invalid configuration: names the field or file, the bad value and the fix."""


class SerializationError(JobkitError):
    """A function, argument, result or exception could not be (un)pickled."""


class VersionMismatchError(SerializationError):
    """The payload was written by a Python or jobkit the worker cannot read."""


class SignatureError(JobkitError):
    """A payload or outcome is unsigned or was altered; it was not unpickled."""


class StoreError(JobkitError):
    """The store is unreachable, or holds a record or blob that cannot be read."""


class StoreUnavailableError(StoreError):
    """The store could not be reached, timed out or was overloaded (HTTP 5xx, 429,
    a locked SQLite file): the request may succeed if retried later, which is
    what workers do before giving up (see :mod:`jobkit.stores.patient`)."""


class JobNotFoundError(StoreError, KeyError):
    """No job with this id exists in the store."""

    def __init__(self, job_id: str, store: str = "") -> None:
        where = f" in store {store}" if store else ""
        super().__init__(f"no job {job_id!r}{where}; list known jobs with `jobkit list`")
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BlobNotFoundError(StoreError, KeyError):
    """A blob (payload, outcome) is missing from the store."""

    def __str__(self) -> str:
        return str(self.args[0])


class BackendError(JobkitError):
    """A backend is unusable here, or one of its commands failed."""


class SubmitError(BackendError):
    """The backend refused the submission (its own message is kept)."""


class IllegalTransitionError(JobkitError):
    """A state change that would rewrite history (e.g. SUCCEEDED -> RUNNING)."""


class JobFailedError(JobkitError):
    """The job failed and its original exception cannot be re-raised.

    Carries the job id, the failure reason and the remote traceback text so
    that nothing the worker knew is lost.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        reason: Any = None,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> Any:
        return (
            _rebuild_job_failed,
            (self.args[0], self.job_id, self.reason, self.remote_traceback),
        )

    def __str__(self) -> str:
        text = str(self.args[0])
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


def _rebuild_job_failed(
    message: str, job_id: str, reason: Any, remote_traceback: str
) -> JobFailedError:
    return JobFailedError(message, job_id=job_id, reason=reason, remote_traceback=remote_traceback)


class DependencyError(JobFailedError):
    """The job never ran: a job it depends on failed or was cancelled.

    ``dependency_id`` is the job whose failure started it (found transitively:
    in a chain a -> b -> c where ``a`` failed, c's error names ``a``);
    ``job_id`` is the job whose result was asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        dependency_id: str = "",
        reason: Any = None,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message, job_id=job_id, reason=reason, remote_traceback=remote_traceback)
        self.dependency_id = dependency_id

    def __reduce__(self) -> Any:
        return (
            _rebuild_dependency_error,
            (self.args[0], self.job_id, self.dependency_id, self.reason, self.remote_traceback),
        )


def _rebuild_dependency_error(
    message: str, job_id: str, dependency_id: str, reason: Any, remote_traceback: str
) -> DependencyError:
    return DependencyError(
        message,
        job_id=job_id,
        dependency_id=dependency_id,
        reason=reason,
        remote_traceback=remote_traceback,
    )
