"""Finding what an id names: one job, or the jobs of one array.

A user holds either kind of id (``jk-...`` for a job, the array's own
``jk-...`` for a ``map``), and every command that takes an id must treat
them alike: ``jobkit.get``, ``jobkit status``, ``jobkit cancel``.  So the
lookup is here once, reading only the store: a job id first (one read), then
the array's members (one query) only when no job has that id.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from jobkit.errors import ConfigError, JobkitError, JobNotFoundError

if TYPE_CHECKING:
    from jobkit.states import JobRecord
    from jobkit.stores.base import Store

__all__ = ["ArrayIdError", "Found", "array_members", "check_job_id", "find", "find_job"]


class ArrayIdError(JobkitError):
    """A command that works on one job was given the id of a job array."""

    def __init__(self, array_id: str, example: str) -> None:
        super().__init__(
            f"{array_id!r} is a job array, not a job: give one of its jobs, e.g. {example!r} "
            f"(`jobkit status {array_id}` lists how many are in each state)"
        )
        self.array_id = array_id
        self.example = example


@dataclasses.dataclass(frozen=True)
class Found:
    """What an id names: ``job`` for a job id, else ``members`` of the array."""

    id: str
    job: JobRecord | None
    members: list[JobRecord]

    @property
    def is_array(self) -> bool:
        return self.job is None

    @property
    def records(self) -> list[JobRecord]:
        """The job, or the array's jobs in index order."""
        return [self.job] if self.job is not None else list(self.members)


def check_job_id(job_id: object) -> str:
    """``job_id`` stripped; one clear error for anything that cannot be an id."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ConfigError(f"invalid job id {job_id!r}: expected a string like 'jk-...'")
    return job_id.strip()


def array_members(store: Store, array_id: str) -> list[JobRecord]:
    """The jobs of array ``array_id`` in index order (empty if there is no such array)."""
    members = store.query(array_id=array_id, oldest_first=True)
    members.sort(key=lambda r: (r.array_index is None, r.array_index or 0, r.id))
    return members


def find(store: Store, job_id: str) -> Found:
    """The job ``job_id``, else the array ``job_id``; JobNotFoundError if neither."""
    job_id = check_job_id(job_id)
    try:
        return Found(job_id, store.get(job_id), [])
    except JobNotFoundError:
        members = array_members(store, job_id)
        if not members:
            raise
        return Found(job_id, None, members)


def find_job(store: Store, job_id: str) -> JobRecord:
    """One job's record; an array id raises :class:`ArrayIdError` naming one of its jobs."""
    job_id = check_job_id(job_id)
    try:
        return store.get(job_id)
    except JobNotFoundError:
        members = store.query(array_id=job_id, limit=1, oldest_first=True)
        if not members:
            raise
        raise ArrayIdError(job_id, members[0].id) from None
