"""The backend contract: small and batched.

Modeled on Parsl's provider interface: submit many, reconcile many, cancel
many.  A backend never owns the truth about a job (the store does); it
accepts records the client has already stored as PENDING, and ``reconcile``
maps native states onto :class:`~jobkit.states.JobState` for *all* given
jobs in one query, writing transitions with the store's compare-and-set.

Only ``submit``, ``cancel`` and ``read_logs`` are required; a backend that
forgets one fails at class creation with the method's name.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from jobkit.states import JobRecord

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.resources import Resources


class Backend(abc.ABC):
    """Runs jobs somewhere; see the module docstring for the contract."""

    name: ClassVar[str]
    pushes_completions: ClassVar[bool] = False
    """True if the backend tells the monitor when jobs end (the local agent
    does); otherwise the monitor sweeps the store as often as it affords."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.store = client.store

    @classmethod
    def available(cls, config: Any) -> tuple[bool, str]:
        """Whether this backend is usable here, and why (not)."""
        return True, "available"

    def check_resources(self, resources: Resources) -> None:  # noqa: B027 - optional
        """Raise ConfigError for requests this backend can never satisfy."""

    def payload_meta(self, resources: Resources) -> dict[str, Any]:
        """Extra header fields stored with each payload."""
        return {}

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
