"""How ``jobkit result`` gets a job's outcome: waiting, loading, and saying why it failed.

Apart from the command so its one job -- turning a record into a value to
print or into one error line that names the job and the original exception
(``job X failed: ValueError: bad input``) -- reads in one sitting.  Every way
it can fail ends in :func:`~jobkit.cli.errors.fail` (exit 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from jobkit.cli import render
from jobkit.cli.errors import fail

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.states import JobRecord


def wait_for(client: Client, record: JobRecord, timeout: float | None) -> JobRecord:
    """The record once the job has ended, or exit 1 after ``timeout`` seconds."""
    import concurrent.futures

    from jobkit.job import Job

    job: Job[Any] = Job(client, record)
    typer.echo(f"waiting for job {record.id} ({record.state.value})...", err=True)
    done, _ = concurrent.futures.wait([job], timeout=timeout)
    if not done:
        fail(
            f"job {record.id} did not finish within {timeout:g} s (it is {job.state.value}); "
            "try again later or raise --timeout"
        )
    return client.store.get(record.id)


def load_outcome(client: Client, record: JobRecord) -> Any:
    """The ended job's outcome; exit 1 if the store lost it (pruned, or a partial copy)."""
    from jobkit.errors import BlobNotFoundError

    try:
        return client.load_outcome(record)
    except BlobNotFoundError as exc:
        fail(
            f"job {record.id} is {record.state.value} but its outcome is missing "
            f"from the store ({exc})"
        )


def failure_line(job_id: str, error: BaseException | None) -> str:
    """``job X failed: ValueError: bad input``: the original exception in one line."""
    from jobkit.errors import JobFailedError

    if error is None:
        return f"job {job_id} failed"
    message = render.first_line(_safe_str(error))
    if isinstance(error, JobFailedError) and message.startswith(f"job {job_id} "):
        return message  # already says which job and what it raised
    cls = type(error)
    module = cls.__module__
    kind = (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
    return f"job {job_id} failed: {kind}: {message}" if message else f"job {job_id} failed: {kind}"


def _safe_str(error: BaseException) -> str:
    """A remote exception may fail in ``__str__``; the error line must still print."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} with unprintable message>"
