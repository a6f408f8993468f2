"""A store that waits out outages: what a worker on a cluster node talks to.

A worker cannot ask anyone what to do when the store is briefly unreachable
(a bucket endpoint restarting, a network blip, S3 throttling, a SQLite file
locked for longer than its busy timeout).  Failing at once would throw away
a result that took hours to compute; so every store call of a worker is
retried on :class:`~jobkit.errors.StoreUnavailableError`, with exponential
backoff and jitter (as botocore's and Google SRE's retry advice have it),
until ``patience`` seconds have passed for that call.  Then the error is
raised, and the worker reports it on stderr (the job's log) and exits with
:data:`EXIT_STORE_UNREACHABLE`, so the backend sees the job fail and
reconciliation records it: an outcome is never dropped silently.

Only errors a retry can fix are retried: a missing job, a corrupted record,
bad credentials or an illegal transition fail at once.  Retrying is safe
because every write is idempotent or a compare-and-set: a transition whose
answer was lost and that is sent again finds the move already made and
changes nothing.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from jobkit.errors import ConfigError, StoreUnavailableError
from jobkit.states import JobRecord, JobRow, JobState

from .base import Buffer, Change, Store

R = TypeVar("R")

PATIENCE_ENV = "JOBKIT_STORE_PATIENCE"
DEFAULT_PATIENCE = 600.0
"""Seconds a worker keeps retrying one store call (10 minutes: longer than a
typical endpoint restart, shorter than a job's result is worth waiting on)."""
EXIT_STORE_UNREACHABLE = 75
"""``EX_TEMPFAIL`` from sysexits.h: the job ran, its state could not be recorded."""


def patience_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """``$JOBKIT_STORE_PATIENCE`` in seconds (default 600); ConfigError if it is not one."""
    text = environ.get(PATIENCE_ENV)
    if text is None or not text.strip():
        return DEFAULT_PATIENCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(
            f"{PATIENCE_ENV}={text!r} is not a number of seconds; set it to how long a worker "
            f"should retry an unreachable store, e.g. {PATIENCE_ENV}=600"
        )
    return value


class PatientStore(Store):
    """Every call of ``store``, retried on StoreUnavailableError for up to ``patience`` s.

    A real :class:`Store` that delegates the whole contract, so the code
    that holds one is type-checked against the contract and the store
    conformance suite runs against it (a ``__getattr__`` proxy would let a
    missing method pass silently).  It wraps whichever store the URL opened:
    its ``url``, ``identity`` and the class-level hints (``sweep_interval``,
    ``read_budget``, ...) are those of the wrapped store.  ``close`` is not
    retried: it releases what is left and must not wait out an outage.
    """

    def __init__(
        self,
        store: Store,
        *,
        patience: float = DEFAULT_PATIENCE,
        first_pause: float = 0.25,
        longest_pause: float = 30.0,
        log: TextIO | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not patience >= 0:
            raise ConfigError(
                f"patience={patience!r} is not a number of seconds >= 0; pass how long each "
                "store call may be retried, e.g. patience=600"
            )
        self._store = store
        self._patience = patience
        self._first_pause = first_pause
        self._longest_pause = longest_pause
        self._log = log
        self._sleep = sleep
        self.url = store.url
        self.local_dir = store.local_dir
        # The wrapped store's hints, per instance (they are class-level on stores).
        vars(self).update(
            scheme=store.scheme,
            sweep_interval=store.sweep_interval,
            shared_across_processes=store.shared_across_processes,
            read_budget=store.read_budget,
        )

    @classmethod
    def from_url(cls, url: str) -> PatientStore:
        """The store ``url`` names, patient for ``$JOBKIT_STORE_PATIENCE`` seconds."""
        from . import open_store

        return cls(open_store(url), patience=patience_from_env())

    @property
    def wrapped(self) -> Store:
        """The store whose calls are retried."""
        return self._store

    @property
    def identity(self) -> str:
        return self._store.identity

    # -- records -----------------------------------------------------------
    def create(self, records: Sequence[JobRecord]) -> None:
        self._call("create", self._store.create, records)

    def get(self, job_id: str) -> JobRecord:
        return self._call("get", self._store.get, job_id)

    def get_many(self, job_ids: Collection[str]) -> dict[str, JobRecord]:
        return self._call("get_many", self._store.get_many, job_ids)

    def finished_among(
        self, job_ids: Collection[str], *, since: float | None = None
    ) -> dict[str, JobRecord]:
        return self._call("finished_among", self._store.finished_among, job_ids, since=since)

    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        expect: Collection[JobState] | None = None,
        **fields: Any,
    ) -> JobRecord | None:
        return self._call(
            "transition", self._store.transition, job_id, state, expect=expect, **fields
        )

    def transition_many(self, changes: Sequence[Change]) -> list[JobRecord | None]:
        return self._call("transition_many", self._store.transition_many, changes)

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        return self._call("update", self._store.update, job_id, **fields)

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
        return self._call(
            "query",
            self._store.query,
            states=states,
            backend=backend,
            name=name,
            array_id=array_id,
            created_before=created_before,
            limit=limit,
            oldest_first=oldest_first,
        )

    def rows(
        self,
        *,
        states: Collection[JobState] | None = None,
        backend: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        return self._call(
            "rows", self._store.rows, states=states, backend=backend, name=name, limit=limit
        )

    def delete(self, job_ids: Collection[str]) -> int:
        return self._call("delete", self._store.delete, job_ids)

    def find_corrupted(self) -> dict[str, str]:
        return self._call("find_corrupted", self._store.find_corrupted)

    def payload_blobs(self) -> dict[str, float]:
        return self._call("payload_blobs", self._store.payload_blobs)

    # -- blobs -------------------------------------------------------------
    def put_blob(self, key: str, data: Buffer | Sequence[Buffer]) -> None:
        self._call("put_blob", self._store.put_blob, key, data)

    def get_blob(self, key: str) -> bytearray:
        return self._call("get_blob", self._store.get_blob, key)

    def put_blobs(self, blobs: Mapping[str, Buffer | Sequence[Buffer]]) -> None:
        self._call("put_blobs", self._store.put_blobs, blobs)

    def get_blobs(self, keys: Collection[str]) -> dict[str, bytearray]:
        return self._call("get_blobs", self._store.get_blobs, keys)

    def blob_keys(self, prefix: str) -> list[str]:
        return self._call("blob_keys", self._store.blob_keys, prefix)

    def blobs_present(self, keys: Collection[str]) -> set[str]:
        return self._call("blobs_present", self._store.blobs_present, list(keys))

    def blob_location(self, key: str) -> str:
        return self._store.blob_location(key)

    def delete_blobs(self, keys: Iterable[str]) -> None:
        # A generator would be spent by a failed attempt: retry with a list.
        self._call("delete_blobs", self._store.delete_blobs, list(keys))

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"PatientStore({self._store!r}, patience={self._patience:g})"

    # -- patience ----------------------------------------------------------
    def _call(self, what: str, method: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        # Positional-only: a store call's own keywords (``name=``) pass through untouched.
        deadline = time.monotonic() + self._patience
        pause = self._first_pause
        attempt = 1
        while True:
            try:
                return method(*args, **kwargs)
            except StoreUnavailableError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailableError(
                        f"{exc} (gave up after {attempt} attempt(s) over {self._patience:g} s; "
                        f"{PATIENCE_ENV} sets how long workers retry)"
                    ) from exc
                wait = min(random.uniform(pause / 2, pause), left)
                self._say(
                    f"jobkit worker: store call {what} failed (attempt {attempt}): {exc}; "
                    f"retrying in {wait:.1f} s, for up to {left:.0f} s more"
                )
                self._sleep(wait)
                pause = min(pause * 2, self._longest_pause)
                attempt += 1

    def _say(self, line: str) -> None:
        stream = self._log if self._log is not None else sys.stderr
        print(line, file=stream, flush=True)


def patient(store: Store, patience: float | None = None) -> PatientStore:
    """``store`` with its calls retried for ``patience`` s ($JOBKIT_STORE_PATIENCE if None)."""
    chosen = patience_from_env() if patience is None else patience
    return PatientStore(store, patience=chosen)


def open_patient_store(url: str) -> Store:
    """The store a worker uses: opened from its URL, every call patient."""
    from . import open_store

    return patient(open_store(url))
