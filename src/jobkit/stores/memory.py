"""``memory://``: a store that lives and dies with one process.

For tests, notebooks and the ``Executor`` with in-process workers.  Each
``MemoryStore()`` is independent (no class-global dictionary, unlike
fsspec's memory filesystem), so two clients never see each other's jobs by
accident.  Records are copied in and out through their JSON form, which
makes this store refuse and return exactly what the SQLite store does.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, ClassVar

from jobkit.errors import BlobNotFoundError, ConfigError, JobNotFoundError, StoreError
from jobkit.states import FailureReason, JobRecord, JobState, field_problem

from ._common import (
    apply_fields,
    byte_views,
    check_blob_key,
    check_limit,
    expected_sources,
    glob_matches,
    id_order,
    normalised,
)
from .base import Buffer, Store, job_blob_keys

logger = logging.getLogger("jobkit.stores")


class MemoryStore(Store):
    """Records and blobs in dictionaries guarded by one lock."""

    sweep_interval: ClassVar[float] = 0.01
    scheme: ClassVar[str] = "memory"
    shared_across_processes: ClassVar[bool] = False

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = threading.Lock()
        self._records: dict[str, JobRecord] = {}
        self._blobs: dict[str, bytes] = {}
        self._blob_times: dict[str, float] = {}
        self._closed = False
        self._warned: set[str] = set()  # corrupted ids already reported

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """A new, empty store: every ``memory://`` is private to its opener."""
        if url != "memory://":
            raise ConfigError(
                f"store URL {url!r}: a memory store takes no name or path; write "
                "'memory://' (each one opened is a new, private store)"
            )
        return cls()

    # -- records -----------------------------------------------------------
    def create(self, records: Sequence[JobRecord]) -> None:
        fresh = [normalised(r)[0] for r in records]
        with self._lock:
            self._check_open()
            seen: set[str] = set()
            clashes = []
            for record in fresh:
                if record.id in self._records or record.id in seen:
                    clashes.append(record.id)
                seen.add(record.id)
            if clashes:
                raise StoreError(
                    f"job id(s) already exist in {self.url}: {', '.join(sorted(set(clashes)))}"
                )
            for record in fresh:
                self._records[record.id] = record

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            self._check_open()
            record = self._records.get(job_id)
            if record is None:
                raise JobNotFoundError(job_id, self.url)
            problem = _problem(record)
            if problem is not None:
                raise StoreError(self._corrupted(job_id, problem))
            return _copy(record)

    def get_many(self, job_ids: Collection[str]) -> dict[str, JobRecord]:
        with self._lock:
            self._check_open()
            found = [self._records[i] for i in job_ids if i in self._records]
            return {r.id: _copy(r) for r in self._readable(found)}

    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        expect: Collection[JobState] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        sources = expected_sources(state, expect)
        with self._lock:
            self._check_open()
            record = self._records.get(job_id)
            if record is None:
                raise JobNotFoundError(job_id, self.url)
            if record.state not in sources:
                return None
            updated, _ = apply_fields(record, fields, state=state)
            self._records[job_id] = updated
            return _copy(updated)

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        with self._lock:
            self._check_open()
            record = self._records.get(job_id)
            if record is None:
                raise JobNotFoundError(job_id, self.url)
            updated, _ = apply_fields(record, fields)
            self._records[job_id] = updated
            return _copy(updated)

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
        check_limit(limit)
        wanted = None if states is None else frozenset(JobState(s) for s in states)
        with self._lock:
            self._check_open()
            matches = [
                r
                for r in self._readable(self._records.values())
                if (wanted is None or r.state in wanted)
                and (backend is None or r.backend == backend)
                and (name is None or glob_matches(r.name, name))
                and (array_id is None or r.array_id == array_id)
                and (created_before is None or r.created_at < created_before)
            ]
            matches.sort(key=lambda r: (r.created_at, id_order(r.id)), reverse=not oldest_first)
            return [_copy(r) for r in matches[:limit]]

    def find_corrupted(self) -> dict[str, str]:
        """Records that fail validation (set behind the store's back), with why."""
        with self._lock:
            self._check_open()
            problems = {i: _problem(r) for i, r in self._records.items()}
        return {i: self._corrupted(i, p) for i, p in problems.items() if p is not None}

    def _readable(self, records: Iterable[JobRecord]) -> list[JobRecord]:
        """``records`` less the corrupted ones, each reported once, as other stores do."""
        good = []
        for record in records:
            problem = _problem(record)
            if problem is None:
                good.append(record)
            elif record.id not in self._warned:
                self._warned.add(record.id)
                logger.warning("skipped a job record: %s", self._corrupted(record.id, problem))
        return good

    def _corrupted(self, job_id: str, problem: str) -> str:
        return (
            f"corrupted job record {job_id!r} in {self.url}: {problem}; remove it with "
            f"store.delete([{job_id!r}]) (`jobkit prune --corrupted`)"
        )

    def delete(self, job_ids: Collection[str]) -> int:
        with self._lock:
            self._check_open()
            existed = 0
            for job_id in set(job_ids):
                if self._records.pop(job_id, None) is not None:
                    existed += 1
                for key in job_blob_keys(job_id):
                    self._blobs.pop(key, None)
            return existed

    # -- blobs -------------------------------------------------------------
    def put_blob(self, key: str, data: Buffer | Sequence[Buffer]) -> None:
        check_blob_key(key)
        joined = b"".join(byte_views(data))  # a copy: callers may mutate arrays later
        with self._lock:
            self._check_open()
            self._blobs[key] = joined
            self._blob_times[key] = time.time()

    def get_blob(self, key: str) -> bytearray:
        check_blob_key(key)
        with self._lock:
            self._check_open()
            blob = self._blobs.get(key)
        if blob is None:
            raise BlobNotFoundError(f"no blob {key!r} in {self.url}")
        return bytearray(blob)

    def payload_blobs(self) -> dict[str, float]:
        with self._lock:
            self._check_open()
            return {
                key.partition("/")[2]: self._blob_times.get(key, 0.0)
                for key in self._blobs
                if key.startswith("payloads/") and key.count("/") == 1
            }

    def blob_keys(self, prefix: str) -> list[str]:
        with self._lock:
            self._check_open()
            return sorted(k for k in self._blobs if k.startswith(prefix))

    def blobs_present(self, keys: Collection[str]) -> set[str]:
        with self._lock:
            self._check_open()
            return {k for k in keys if k in self._blobs}

    def delete_blobs(self, keys: Iterable[str]) -> None:
        checked = [check_blob_key(k) for k in keys]
        with self._lock:
            self._check_open()
            for key in checked:
                self._blobs.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._records.clear()
            self._blobs.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.url} is closed; open a new one")


def _copy(record: JobRecord) -> JobRecord:
    """A copy the caller may mutate freely; much cheaper than a JSON round trip."""
    return dataclasses.replace(
        record,
        resources=copy.deepcopy(record.resources),
        labels=dict(record.labels),
        extra=copy.deepcopy(record.extra),
    )


def _problem(record: JobRecord) -> str | None:
    """What is wrong with a record kept here; only code that reaches into the
    dictionary (a test, a debugger) can make one wrong, but reads still check."""
    if not isinstance(record.state, JobState):
        return f"state {record.state!r} is not one of {', '.join(s.value for s in JobState)}"
    reason = record.failure_reason
    if reason is not None and not isinstance(reason, FailureReason):
        choices = ", ".join(r.value for r in FailureReason)
        return f"failure_reason {reason!r} is not one of {choices}"
    return field_problem(record)
