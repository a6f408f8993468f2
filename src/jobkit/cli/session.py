"""What one CLI command needs from the library, built on first use.

``jobkit list`` must answer in a fraction of a second, so nothing is loaded
before a command asks for it: the configuration (pydantic) when the store URL
is needed and a config file or setting could change it (see
:mod:`jobkit.cli.store_url`), the store when records are read, and a full
:class:`~jobkit.client.Client` (signing key, backends) only for the commands
that load outcomes, read logs or cancel jobs.  The global ``--store`` and
``--profile`` options become the highest configuration layer, so they win
over environment variables and files exactly as ``jobkit.use()`` would.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import typer

from jobkit.errors import JobkitError
from jobkit.states import ACTIVE_STATES, JobRow, JobState

if TYPE_CHECKING:
    from jobkit.client import Client
    from jobkit.config import Config
    from jobkit.states import JobRecord
    from jobkit.stores.base import Store


class Session:
    """Configuration, store and client of one command invocation."""

    OPTIONS_SOURCE = "command-line option (--store/--profile)"

    def __init__(self, *, store: str | None = None, profile: str | None = None) -> None:
        self.store_url = store
        self.profile = profile
        self._config: Config | None = None
        self._store: Store | None = None
        self._client: Client | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from jobkit.config_loading import Overrides, load_config

            given = {"store": self.store_url, "profile": self.profile}
            overrides = Overrides(self.OPTIONS_SOURCE, {k: v for k, v in given.items() if v})
            self._config = load_config([overrides] if overrides else [])
        return self._config

    @property
    def store(self) -> Store:
        """The store; the client's own once a client exists (one connection)."""
        if self._client is not None:
            return self._client.store
        if self._store is None:
            from jobkit.cli.store_url import store_url_without_config
            from jobkit.stores import open_store

            url = store_url_without_config(self.store_url, self.profile)
            self._store = open_store(url if url is not None else self.config.store)
        return self._store

    @property
    def client(self) -> Client:
        if self._client is None:
            from jobkit.client import Client

            self._client = Client(self.config)
            if self._store is not None:  # opened earlier: keep one connection
                with contextlib.suppress(JobkitError):
                    self._store.close()
                self._store = None
        return self._client

    def close(self) -> None:
        for store in (self._store, self._client.store if self._client else None):
            if store is not None:
                with contextlib.suppress(JobkitError):
                    store.close()

    # -- finding records ---------------------------------------------------------
    def record(self, job_id: str) -> JobRecord:
        """One job's record; an array id gets a hint naming one of its jobs."""
        from jobkit.lookup import find_job

        return find_job(self.store, job_id)

    def fresh(self, records: list[JobRecord]) -> list[JobRecord]:
        """``records`` after asking their backends about the active ones.

        A Slurm job whose worker was killed is only repaired by a reconcile,
        and a dead submitter's PENDING jobs only by a hand-over; a CLI in a
        fresh shell must not show them RUNNING or PENDING forever.  Local jobs
        waiting to run (PENDING, QUEUED) are included: their backend makes sure
        an agent runs while jobs of this machine wait (one socket connect when
        it does); a running local job is its agent's to watch.  Finished
        records cost nothing here, so ``jobkit list`` stays fast.
        """
        stale = [r for r in records if _worth_reconciling(r.state, r.backend)]
        if not stale:
            return records
        client = self.client
        with contextlib.suppress(JobkitError):  # an unreachable scheduler: show what we have
            client.reconcile(stale + self._abandoned_siblings(stale))
        # Local jobs come back as they were: their backend only wakes an agent
        # (which moves them later), so reading them again would be requests for
        # nothing on a store billed per request.
        moved = [r.id for r in stale if r.backend != "local"]
        updated = client.store.get_many(moved) if moved else {}
        return [updated.get(r.id, r) for r in records]

    def _abandoned_siblings(self, records: list[JobRecord]) -> list[JobRecord]:
        """The other active items without a backend id of maps whose submitter
        died: a hand-over is of the whole map, not only of the page of it this
        command shows."""
        from jobkit.reconcile import submitter_dead

        shown = {r.id for r in records}
        arrays = {
            r.array_id for r in records if r.array_id and not r.backend_id and submitter_dead(r)
        }
        siblings: list[JobRecord] = []
        for array_id in sorted(arrays):
            found = self.store.query(array_id=array_id, states=sorted(ACTIVE_STATES))
            siblings += [r for r in found if r.id not in shown and not r.backend_id]
        return siblings

    def fresh_rows(self, rows: list[JobRow]) -> list[JobRow]:
        """:meth:`fresh` for list rows: only the active jobs' records are read."""
        stale = [r.id for r in rows if _worth_reconciling(r.state, r.backend)]
        if not stale:
            return rows
        records = self.fresh(list(self.store.get_many(stale).values()))
        updated = {r.id: JobRow.of(r) for r in records}
        return [updated.get(r.id, r) for r in rows]


def _worth_reconciling(state: JobState, backend: str) -> bool:
    """Active, and for local jobs waiting to run (what only an agent starts)."""
    if backend == "local":
        return state in (JobState.PENDING, JobState.QUEUED)
    return state in ACTIVE_STATES


def session_of(ctx: typer.Context) -> Session:
    """The session the ``jobkit`` callback made (``--store``, ``--config``), or a
    default one when a command runs on its own (tests, ``CliRunner``)."""
    session = ctx.find_object(Session)
    return session if session is not None else Session()
