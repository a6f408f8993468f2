"""The backend contract: small, batched, and blind to the Client.

Modeled on Parsl's provider interface (submit many, query many, cancel
many) and drawn here as httpx draws its transports.  A backend never owns
the truth about a job (the store does) and never writes a job's state: it
says what it *accepted* and what it *saw*, and :mod:`jobkit.reconcile`
decides::

    Backend.settings_from(config) ──► its own typed settings ([NAME] or [backends.NAME])
    Backend(settings, services)       services: store (read payload refs, records),
                                                key() (sign), poke(ids), report(records, seen)

    client ─ check_resources(res) ─ prepare(records) ─► store.create(PENDING)
           ─ submit(records, res) ──► [Accepted(id, backend_id, extra)]  ─► reconcile.accept
    monitor, CLI ─ observe(records) ─► {id: Observation}                 ─► reconcile.apply
    a watch or event thread ────────► services.report(records, {id: Observation})
    cancel(records)  (already CANCELLED in the store)   read_logs(record, stream)
    can_hold(records, deps) / release(records)         dependencies the backend keeps itself
    plan(res) / plan_warnings(res)  (``jobkit plan``)   available(settings)

Only ``submit``, ``observe``, ``cancel`` and ``read_logs`` are required; a
backend that forgets one fails at class creation with the method's name.
The worker that runs each job records what only it knows (RUNNING,
SUCCEEDED, ERROR with the outcome) on every backend.

No module under ``jobkit/backends`` imports ``jobkit.client``, not even for
typing: the layers point one way (client -> backends -> store).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from jobkit.observation import Accepted, Observation
from jobkit.states import JobRecord

if TYPE_CHECKING:
    from jobkit.config import Config
    from jobkit.resources import Resources
    from jobkit.stores.base import Store

__all__ = ["Accepted", "Backend", "BackendServices", "Observation"]


@dataclasses.dataclass(frozen=True)
class BackendServices:
    """The few things a backend may use of whoever opens it (the Client today).

    ``key`` is a function because loading the key may create the key file: a
    backend asks only when it signs.  ``poke`` says which jobs just ended, so
    waiters need not wait for the next sweep (the local agent's "done"
    events); ``report`` hands observations made outside ``observe`` (a watch
    thread) to the reconciler.
    """

    store: Store
    key: Callable[[], bytes]
    poke: Callable[[Iterable[str] | None], None]
    report: Callable[[Sequence[JobRecord], Mapping[str, Observation]], None]


class Backend(abc.ABC):
    """Runs jobs somewhere; see the module docstring for the contract."""

    name: ClassVar[str]
    pushes_completions: ClassVar[bool] = False
    """True if the backend tells the monitor when jobs end (the local agent
    does); otherwise the monitor sweeps the store as often as it affords."""
    reruns_failed_attempts: ClassVar[bool] = False
    """True if the backend itself starts the next attempt of a job the
    reconciler put back in QUEUED (Kubernetes' ``backoffLimit``); otherwise an
    observed failure is final."""
    sparse_arrays: ClassVar[bool] = False
    """True if ``submit`` runs any subset of an array's items (ids ``A.i`` with
    gaps, not starting at 0): a map partly answered from the cache.  Without
    it a backend is only given an array's first items (``A.0`` to ``A.n-1``),
    and a map whose cached items are not its last ones runs whole."""

    def __init__(self, settings: Any, services: BackendServices) -> None:
        self.settings = settings
        self.services = services
        self.store = services.store

    @classmethod
    def settings_from(cls, config: Config) -> Any:
        """This backend's settings, validated from ``config`` (ConfigError, one line)."""
        return None

    @classmethod
    def available(cls, settings: Any) -> tuple[bool, str]:
        """Whether this backend is usable here with ``settings``, and why (not)."""
        return True, "available"

    def check_resources(self, resources: Resources) -> None:  # noqa: B027 - optional
        """Raise ConfigError for requests this backend can never satisfy."""

    def prepare(self, records: Sequence[JobRecord], resources: Resources) -> None:  # noqa: B027
        """Adjust records (``extra``) before they are stored."""

    @abc.abstractmethod
    def submit(self, records: Sequence[JobRecord], resources: Resources) -> Sequence[Accepted]:
        """Hand stored PENDING jobs to the backend (one call for a whole map).

        Returns what it took, for the reconciler to record QUEUED; an empty
        list when the backend's own scheduler records that (the local agent).
        Raise (SubmitError) to refuse them all: they end FAILED/SUBMIT_ERROR.
        """

    @abc.abstractmethod
    def observe(self, records: Sequence[JobRecord]) -> Mapping[str, Observation]:
        """What the backend sees of these active jobs, in one batched query;
        jobs it has nothing to say about are left out."""

    @abc.abstractmethod
    def cancel(self, records: Sequence[JobRecord]) -> None:
        """Stop jobs already marked CANCELLED in the store."""

    def can_hold(
        self, records: Sequence[JobRecord], dependencies: Mapping[str, Sequence[JobRecord]]
    ) -> bool:
        """Whether :meth:`submit` may take these jobs although some of their
        dependencies have not succeeded yet, the backend itself keeping each
        from starting until then (Slurm's ``--dependency``, a suspended
        Kubernetes Job, the local agent's wait).  ``dependencies``: each id in
        the records' ``depends_on``, with its records (one job, or an array's
        items).  False (the default): jobkit holds the jobs in the store and
        submits them when the reconciler releases them."""
        return False

    def release(self, records: Sequence[JobRecord]) -> None:  # noqa: B027 - optional hook
        """Let held jobs start: every dependency of ``records`` (jobs this
        backend took through :meth:`can_hold`) has succeeded.  The reconciler
        of any jobkit process calls it, perhaps more than once for a job.  The
        default does nothing, for backends that see it themselves."""

    def plan(
        self,
        resources: Resources,
        *,
        checkpointable: bool = False,
        name: str | None = None,
        after: Sequence[str] = (),
    ) -> str:
        """What a submission with ``resources`` would send (``jobkit plan``); ``name``
        is the job's name as a submit gives it (``resources.name`` or the function's);
        ``after``: ids of jobs or arrays in the store it would depend on."""
        waits = f", after {', '.join(after)}" if after else ""
        return f"backend {self.name!r} submits job {name!r} with: {resources.to_record()}{waits}"

    def plan_warnings(self, resources: Resources) -> list[str]:
        """One line each for what would make such a submission fail (``jobkit plan``)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background threads and connections (a watch); the backend restarts
        them if used again."""

    @abc.abstractmethod
    def read_logs(self, record: JobRecord, stream: str) -> str:
        """All text the job wrote to ``stream`` so far ('' if none yet)."""
