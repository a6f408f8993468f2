"""Several handles on one job: every one completes when the job ends.

The notebook pattern (submit in one cell, ``jobs()`` or ``get()`` in the
next, then wait on the first handle) on the real local backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import weakref
from typing import Any

import helpers

import jobkit
from conftest import wait_for

T = 30


def test_held_handle_completes_after_jobs_lists_it(local: Any) -> None:
    first = jobkit.submit(helpers.sleep_then, 0.3, "done")
    listed = [j for j in jobkit.jobs() if j.id == first.id]
    assert listed and listed[0] is not first
    assert first.result(timeout=T) == "done"
    assert listed[0].result(timeout=T) == "done"


def test_held_handle_completes_after_get(local: Any) -> None:
    first = jobkit.submit(helpers.sleep_then, 0.3, "got")
    second = jobkit.get(first.id)
    third = jobkit.get(first.id)
    assert third.result(timeout=T) == "got"  # type: ignore[union-attr]
    assert first.result(timeout=T) == "got"
    assert second.result(timeout=T) == "got"  # type: ignore[union-attr]


def test_every_handle_runs_its_callbacks_in_any_order(local: Any) -> None:
    first = jobkit.submit(helpers.sleep_then, 0.3, 7)
    handles = [jobkit.get(first.id), first, *[j for j in jobkit.jobs() if j.id == first.id]]
    called: list[int] = []
    all_called = threading.Event()
    lock = threading.Lock()

    def callback(job: concurrent.futures.Future[Any]) -> None:
        with lock:
            called.append(id(job))
            if len(called) == len(handles):
                all_called.set()

    for handle in handles:
        handle.add_done_callback(callback)
    assert all_called.wait(T), f"{len(called)} of {len(handles)} callbacks ran"
    assert sorted(called) == sorted(id(h) for h in handles)


def test_wait_and_as_completed_see_every_handle(local: Any) -> None:
    jobs = [jobkit.submit(helpers.sleep_then, 0.2, i) for i in range(3)]
    again = [jobkit.get(j.id) for j in jobs]
    listed = jobkit.jobs(limit=None)
    _done, not_done = concurrent.futures.wait([*jobs, *again], timeout=T)  # type: ignore[list-item]
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(jobs, timeout=T)) == [0, 1, 2]
    assert listed  # the listing lived through the wait


def test_await_after_submit_jobs_get(local: Any) -> None:
    """The notebook cells: submit; jobkit.jobs(); jobkit.get(); await the first."""
    first = jobkit.submit(helpers.sleep_then, 0.3, "awaited")
    jobkit.jobs()
    jobkit.get(first.id)

    async def cell() -> Any:
        return await asyncio.wait_for(first, T)  # type: ignore[arg-type]

    assert asyncio.run(cell()) == "awaited"


def test_callback_runs_though_its_handle_was_dropped(local: Any) -> None:
    ran = threading.Event()
    jobkit.submit(helpers.sleep_then, 0.2, 1).add_done_callback(lambda _job: ran.set())
    gc.collect()
    assert ran.wait(T)


def test_dropped_handles_are_not_watched(local: Any) -> None:
    job = jobkit.submit(helpers.sleep_then, 5, None)
    ref = weakref.ref(job)
    job_id = job.id
    monitor = local.monitor
    del job
    gc.collect()
    assert ref() is None, "the monitor must not keep a handle nobody holds"
    wait_for(lambda: job_id not in monitor._jobs, timeout=T)
    local.cancel([job_id])
