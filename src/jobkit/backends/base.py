"""The backend contract: small and batched.

Modeled on Parsl's provider interface: submit many, reconcile many, cancel
many.  A backend never owns the truth about a job (the store does); it
accepts records the client has already stored as PENDING, and ``reconcile``
maps native states onto :class:`~jobkit.states.JobState` for *all* given
jobs in one query, writing transitions with the store's compare-and-set.

Only ``submit``, ``cancel`` and ``read_logs`` are required; a backend that
forgets one fails at class creation with the method's name.

A backend is built from a :class:`BackendHost`, not the Client: the layers
point one way (client -> backends -> store), so no module under
``jobkit/backends`` imports ``jobkit.client``, not even for typing.  The
host names exactly what backends use today; the Client satisfies it
structurally, and so can a test harness or a future reconciler::

    Client ──(is a)──► BackendHost: store, config, key, monitor.poke(ids)
                              │
                              ▼
                          Backend(host) ──► its own settings from host.config
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from jobkit.states import JobRecord

if TYPE_CHECKING:
    from jobkit.config import Config
    from jobkit.resources import Resources
    from jobkit.stores.base import Store


class CompletionSink(Protocol):
    """Where a backend that learns of ended jobs first (the local agent's
    "done" events) says so, so waiters need not wait for the next sweep."""

    def poke(self, job_ids: Iterable[str] | None = None) -> None: ...


class BackendHost(Protocol):
    """What a backend may use of whoever opens it: the Client today.

    Read-only on purpose: a backend reads its settings from ``config``,
    payload references and records from ``store``, signs with ``key``
    (only when it needs to; loading it may create the key file) and reports
    completions to ``monitor``.  Anything more couples it to the client.
    """

    @property
    def store(self) -> Store: ...

    @property
    def config(self) -> Config: ...

    @property
    def key(self) -> bytes: ...

    @property
    def monitor(self) -> CompletionSink: ...


class Backend(abc.ABC):
    """Runs jobs somewhere; see the module docstring for the contract."""

    name: ClassVar[str]
    pushes_completions: ClassVar[bool] = False
    """True if the backend tells the monitor when jobs end (the local agent
    does); otherwise the monitor sweeps the store as often as it affords."""

    def __init__(self, host: BackendHost) -> None:
        self.host = host
        self.store = host.store

    @classmethod
    def available(cls, config: Any) -> tuple[bool, str]:
        """Whether this backend is usable here, and why (not)."""
        return True, "available"

    def check_resources(self, resources: Resources) -> None:  # noqa: B027 - optional
        """Raise ConfigError for requests this backend can never satisfy."""

    def prepare(self, records: Sequence[JobRecord], resources: Resources) -> None:  # noqa: B027
        """Adjust records (``extra``) before they are stored."""

    @abc.abstractmethod
    def submit(self, records: Sequence[JobRecord], resources: Resources) -> None:
        """Hand stored PENDING jobs to the backend (one call for a whole map)."""

    @abc.abstractmethod
    def cancel(self, records: Sequence[JobRecord]) -> None:
        """Stop jobs already marked CANCELLED in the store."""

    def reconcile(self, records: Sequence[JobRecord]) -> None:  # noqa: B027
        """Repair store states from the backend's view, one batched query."""

    def plan(
        self, resources: Resources, *, checkpointable: bool = False, name: str | None = None
    ) -> str:
        """What a submission with ``resources`` would send (``jobkit plan``); ``name``
        is the job's name as a submit gives it (``resources.name`` or the function's)."""
        return f"backend {self.name!r} submits job {name!r} with: {resources.to_record()}"

    def plan_warnings(self, resources: Resources) -> list[str]:
        """One line each for what would make such a submission fail (``jobkit plan``)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background threads and connections (a watch); the backend restarts
        them if used again."""

    @abc.abstractmethod
    def read_logs(self, record: JobRecord, stream: str) -> str:
        """All text the job wrote to ``stream`` so far ('' if none yet)."""
