"""``configure()`` is process-wide; ``use()`` is scoped to its context.

Real threads and real local jobs: a job submitted from a worker thread after
``configure(store=X)`` lands in X.  The ipykernel case (a cell with an
``await`` runs in a task with a copied context) is reproduced with asyncio
and ``contextvars.copy_context().run``, the way ipykernel runs a cell.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
import jobkit.context as client_module
from jobkit.context import current_client

T = 30


@pytest.fixture(autouse=True)
def _restore_configuration() -> Iterator[None]:
    """configure() is process-wide by design: undo it so later tests start clean."""
    saved = getattr(client_module, "_configured", ())
    yield
    client_module._configured = saved


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[str]:
    """``configure()`` a local store + agent for the whole process; its URL suffix."""
    jobkit.configure(
        store=f"sqlite:///{tmp_path}/configured.db",
        backend="local",
        local={"idle_timeout": 10, "cpus": 2},
    )
    client = current_client()
    try:
        yield "configured.db"
    finally:
        if "local" in client._backends:
            client.backend("local").stop_agent()


def _store_here() -> str:
    return current_client().config.store


def test_thread_pool_jobs_go_to_the_configured_store(configured: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: _store_here(), range(4)))
        ids = list(pool.map(lambda x: jobkit.submit(helpers.square, x).id, range(4)))
    assert all(s.endswith(configured) for s in stores), stores
    client = current_client()
    recorded = {r.id for r in client.store.query(limit=None)}
    assert set(ids) <= recorded
    assert sorted(jobkit.get(i).result(timeout=T) for i in ids) == [0, 1, 4, 9]  # type: ignore[union-attr]
    listed = {j.id for j in jobkit.jobs(limit=None)}
    assert set(ids) <= listed


def test_plain_thread_sees_configure_and_shares_the_client(configured: str) -> None:
    seen: dict[str, Any] = {}

    def body() -> None:
        seen["store"] = _store_here()
        seen["client"] = current_client()
        seen["result"] = jobkit.submit(helpers.square, 5).result(timeout=T)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(T)
    assert seen["store"].endswith(configured)
    assert seen["client"] is current_client()  # one store connection and monitor per config
    assert seen["result"] == 25


def test_use_in_a_thread_does_not_leak_to_others(configured: str, tmp_path: Path) -> None:
    entered = threading.Event()
    release = threading.Event()
    inside: list[str] = []

    def scoped() -> None:
        with jobkit.use(store=f"sqlite:///{tmp_path}/scoped.db"):
            inside.append(_store_here())
            entered.set()
            release.wait(T)

    thread = threading.Thread(target=scoped)
    thread.start()
    try:
        assert entered.wait(T)
        assert inside[0].endswith("scoped.db")
        assert _store_here().endswith(configured)  # this thread: configure() only
        other: list[str] = []
        peer = threading.Thread(target=lambda: other.append(_store_here()))
        peer.start()
        peer.join(T)
        assert other[0].endswith(configured)
    finally:
        release.set()
        thread.join(T)


def test_use_layers_on_top_of_configure(configured: str, tmp_path: Path) -> None:
    with jobkit.use(store=f"sqlite:///{tmp_path}/scoped.db") as client:
        assert client.config.store.endswith("scoped.db")
        assert client.config.backend == "local"  # from configure(), not overridden
    assert _store_here().endswith(configured)


def test_configure_in_an_await_cell_holds_for_later_cells(tmp_path: Path) -> None:
    """ipykernel runs a cell that awaits as a task in a copied context."""

    async def cell() -> None:
        await asyncio.sleep(0)
        jobkit.configure(store=f"sqlite:///{tmp_path}/from-task.db")

    def run_cell() -> None:
        asyncio.run(cell())  # the task gets a copy of this (already copied) context

    contextvars.copy_context().run(run_cell)
    assert _store_here().endswith("from-task.db")  # the next cell, in the original context
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(_store_here()))
    thread.start()
    thread.join(T)
    assert seen[0].endswith("from-task.db")


def test_configure_accumulates_and_validates(tmp_path: Path) -> None:
    jobkit.configure(store=f"sqlite:///{tmp_path}/a.db")
    jobkit.configure(poll_interval=0.5)
    assert _store_here().endswith("a.db")
    with pytest.raises(jobkit.ConfigError, match="local"):
        jobkit.configure(local={"cpus": "many"})
    assert current_client().config.poll_interval == 0.5  # the bad call changed nothing
