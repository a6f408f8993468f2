"""The store contract: job records plus blobs, shared by every process.

The store is the source of truth for what users see.  Clients, the local
agent, workers on cluster nodes and the CLI all read and write the same
store, so every mutation of a job's state is a compare-and-set
(:meth:`Store.transition`) that refuses moves outside
:data:`jobkit.states.LEGAL_TRANSITIONS`; a late writer loses instead of
rewriting history.

Blobs hold payloads (``payloads/<id>``), outcomes (``outcomes/<id>``) and
cache pointers (``cache/<key>``, see :mod:`jobkit.caching`).
``put_blob`` takes a sequence of buffers so a 100 MB array pickled
out-of-band reaches the disk without being joined into one copy first.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from jobkit.states import JobRecord, JobRow, JobState

Buffer = bytes | bytearray | memoryview


def payload_key(job_id: str) -> str:
    return f"payloads/{job_id}"


def outcome_key(job_id: str) -> str:
    return f"outcomes/{job_id}"


def job_blob_keys(job_id: str) -> tuple[str, ...]:
    """Every blob that belongs to one job and goes when its record goes: its
    payload, its outcome and its usage series (:func:`jobkit.usage.usage_key`,
    spelled out here so stores never import the usage module)."""
    return (payload_key(job_id), outcome_key(job_id), f"usage/{job_id}")


@dataclasses.dataclass(frozen=True)
class Change:
    """One compare-and-set of :meth:`Store.transition_many`.

    ``blobs`` are written with it (an outcome with its terminal state): a
    reader that sees the new state finds them.  They are written whether or
    not the move is allowed, as a worker writes its outcome before it asks
    to record the end.
    """

    job_id: str
    state: JobState
    expect: Collection[JobState] | None = None
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    blobs: Mapping[str, Buffer | Sequence[Buffer]] = dataclasses.field(default_factory=dict)


class Store(abc.ABC):
    """Job records and blobs.  Implementations must be safe across processes."""

    scheme: ClassVar[str]
    url: str

    local_dir: Path | None = None
    """A private directory next to the store on this machine (logs, agent
    sockets), or ``None`` for stores with no local presence (S3)."""

    sweep_interval: ClassVar[float] = 1.0
    """How often a client may afford to re-read watched records (seconds):
    a local SQLite read is cheap, an S3 listing is not."""

    shared_across_processes: ClassVar[bool] = True
    """False for ``memory://``: workers in other processes cannot reach it."""

    @property
    def identity(self) -> str:
        """What tells this store from another with the same URL.

        Processes that share a local agent must mean the same store, yet a
        URL alone may not say which: ``s3://bucket/jobs`` names a different
        bucket under another ``AWS_ENDPOINT_URL``, and a plugin may resolve
        a name through the environment.  Stores add what they resolved.
        """
        return self.url

    @classmethod
    def from_url(cls, url: str) -> Store:
        """Open the store a URL names (the registry calls this)."""
        raise NotImplementedError(f"{cls.__name__} does not open URLs")

    # -- records -----------------------------------------------------------
    @abc.abstractmethod
    def create(self, records: Sequence[JobRecord]) -> None:
        """Insert new records atomically; an existing id raises StoreError."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord:
        """One record; JobNotFoundError if absent, StoreError if corrupted."""

    @abc.abstractmethod
    def get_many(self, job_ids: Collection[str]) -> dict[str, JobRecord]:
        """Records by id in one round trip; unknown ids are left out."""

    read_budget: ClassVar[float | None] = None
    """Record reads per second a client may spend re-reading the jobs it
    watches (reconciling them with their backend); None: reads are cheap.
    A store billed per request (S3) sets it, and a client watching many jobs
    reconciles them less often rather than reading them all every second."""

    def finished_among(
        self, job_ids: Collection[str], *, since: float | None = None
    ) -> dict[str, JobRecord]:
        """Records of those ``job_ids`` that reached a terminal state.

        What a client's monitor asks many times a second; stores override it
        to skip reading records that are still running.  ``since`` is a hint:
        none of the jobs was created before it, so a store that indexes jobs
        by creation time need not look further back.
        """
        return {i: r for i, r in self.get_many(job_ids).items() if r.is_terminal}

    @abc.abstractmethod
    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        expect: Collection[JobState] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        """Compare-and-set the state of one job, with other fields alongside.

        Moves the job to ``state`` only if its current state is in ``expect``
        (by default: every state from which ``state`` is a legal move).
        Returns the updated record, or ``None`` when the current state did not
        allow the move (the record is unchanged).  JobNotFoundError if absent.
        """

    def transition_many(self, changes: Sequence[Change]) -> list[JobRecord | None]:
        """Apply many compare-and-sets, each as :meth:`transition` would, in order.

        The batched form of the agent's claims and its workers' ends: a store
        that can (SQLite) applies them in one transaction, so starting or
        finishing a hundred jobs costs one commit, not a hundred.  Each change
        stands alone: one refused move (``None`` in its place) does not undo
        the others.  A job that no longer exists also answers ``None``.
        """
        from jobkit.errors import JobNotFoundError

        from ._common import expected_sources

        for change in changes:  # an illegal move raises before anything is written
            expected_sources(change.state, change.expect)
        results: list[JobRecord | None] = []
        for change in changes:
            if change.blobs:
                self.put_blobs(change.blobs)
            try:
                moved = self.transition(
                    change.job_id, change.state, expect=change.expect, **dict(change.fields)
                )
            except JobNotFoundError:
                moved = None
            results.append(moved)
        return results

    @abc.abstractmethod
    def update(self, job_id: str, **fields: Any) -> JobRecord:
        """Set non-state fields (backend_id, extra, ...); ``state`` is refused."""

    @abc.abstractmethod
    def query(
        self,
        *,
        states: Collection[JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        array_id: str | None = None,
        created_before: float | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
    ) -> list[JobRecord]:
        """Records matching every given filter, newest first by default.

        ``name`` is a shell glob (``train*``).  Must use an index: the CLI
        asks for the first page of 50 among tens of thousands of jobs.
        """

    def rows(
        self,
        *,
        states: Collection[JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        """What ``jobkit list`` shows of the jobs ``query`` would return, in its order.

        Stores whose index holds these fields (S3) answer without reading
        records; the others read them.
        """
        records = self.query(states=states, backend=backend, name=name, limit=limit)
        return [JobRow.of(r) for r in records]

    @abc.abstractmethod
    def delete(self, job_ids: Collection[str]) -> int:
        """Remove records and their blobs; returns how many records existed."""

    # -- blobs -------------------------------------------------------------
    @abc.abstractmethod
    def put_blob(self, key: str, data: Buffer | Sequence[Buffer]) -> None:
        """Write a blob atomically: readers see the old blob or all of the new."""

    @abc.abstractmethod
    def get_blob(self, key: str) -> bytearray:
        """The blob's bytes (writable, so arrays unpickled from it are too);
        BlobNotFoundError if absent."""

    def put_blobs(self, blobs: Mapping[str, Buffer | Sequence[Buffer]]) -> None:
        """Write many blobs; each atomically, all of them before returning.
        Stores that can batch (SQLite: one transaction for small blobs) do."""
        for key, data in blobs.items():
            self.put_blob(key, data)

    def get_blobs(self, keys: Collection[str]) -> dict[str, bytearray]:
        """Many blobs by key in as few round trips as the store allows;
        absent keys are left out."""
        from jobkit.errors import BlobNotFoundError

        found: dict[str, bytearray] = {}
        for key in keys:
            try:
                found[key] = self.get_blob(key)
            except BlobNotFoundError:
                continue
        return found

    def blob_keys(self, prefix: str) -> list[str]:
        """Every blob key that starts with ``prefix``, sorted (``cache/`` lists the
        cache pointers for ``jobkit cache list``).  ``prefix`` is a plain string
        compared character by character, not a folder: ``"cache/ab"`` matches
        ``cache/abc``.  A write in progress is not listed until it is complete."""
        from jobkit.errors import StoreError

        raise StoreError(
            f"the store {self.url} ({type(self).__name__}) cannot list its blobs: "
            "its class must implement Store.blob_keys"
        )

    def blobs_present(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` exist, without reading them where the store can
        (a cache hit must find its source's outcome, which may be large)."""
        return set(self.get_blobs(keys))

    def blob_location(self, key: str) -> str:
        """Where blob ``key`` lives, for error messages (a file, an S3 URL)."""
        return f"blob {key!r} of {self.url}"

    @abc.abstractmethod
    def delete_blobs(self, keys: Iterable[str]) -> None:
        """Remove blobs; missing keys are ignored."""

    def find_corrupted(self) -> dict[str, str]:
        """Ids of records that cannot be read, with why (for ``jobkit prune``)."""
        return {}

    def payload_blobs(self) -> dict[str, float]:
        """Job id -> when its payload blob was written (epoch seconds), for every
        payload in the store, with or without a record: ``jobkit prune`` finds
        those of submitters that died before recording their jobs.  A store
        that cannot list its blobs returns {} (it has nothing to prune)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store may not be used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def as_buffers(data: Buffer | Sequence[Buffer]) -> Sequence[Buffer]:
    """Normalise ``put_blob``'s argument to a sequence of buffers."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (data,)
    return data
