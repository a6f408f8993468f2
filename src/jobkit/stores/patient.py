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

import functools
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from jobkit.errors import ConfigError, StoreUnavailableError

from .base import Store

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


class PatientStore:
    """Every method of ``store``, retried on StoreUnavailableError for up to ``patience`` s.

    A proxy rather than a subclass: it wraps whichever store the URL opened.
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
        self._store = store
        self._patience = patience
        self._first_pause = first_pause
        self._longest_pause = longest_pause
        self._log = log
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        @functools.wraps(attribute)
        def patiently(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, attribute, args, kwargs)

        return patiently

    def _call(self, name: str, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
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
                    f"jobkit worker: store call {name} failed (attempt {attempt}): {exc}; "
                    f"retrying in {wait:.1f} s, for up to {left:.0f} s more"
                )
                self._sleep(wait)
                pause = min(pause * 2, self._longest_pause)
                attempt += 1

    def _say(self, line: str) -> None:
        stream = self._log if self._log is not None else sys.stderr
        print(line, file=stream, flush=True)


def patient(store: Store, patience: float | None = None) -> Store:
    """``store`` with its calls retried (typed as a Store for the code that uses it)."""
    chosen = patience_from_env() if patience is None else patience
    wrapped: Any = PatientStore(store, patience=chosen)
    result: Store = wrapped
    return result


def open_patient_store(url: str) -> Store:
    """The store a worker uses: opened from its URL, every call patient."""
    from . import open_store

    return patient(open_store(url))
