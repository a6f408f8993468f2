"""jobkit.Executor against the behaviour CPython's executor tests expect.

Adapted from Lib/test/test_concurrent_futures (ExecutorTest, shutdown tests):
same calls, same expectations, on real local jobs.
"""

from __future__ import annotations

import concurrent.futures
import gc
import time
import weakref
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env, wait_for

T = 30


def mul(x: int, y: int) -> int:
    return x * y


def test_submit(local: Any) -> None:
    with jobkit.Executor() as executor:
        future = executor.submit(pow, 2, 8)
        assert future.result(timeout=T) == 256


def test_submit_keyword(local: Any) -> None:
    with jobkit.Executor() as executor:
        assert executor.submit(mul, 2, y=8).result(timeout=T) == 16
        with pytest.raises(TypeError):
            executor.submit(fn=mul, x=1, y=2)  # type: ignore[call-arg]


def test_map(local: Any) -> None:
    with jobkit.Executor() as executor:
        assert list(executor.map(pow, range(10), range(10), timeout=T)) == list(
            map(pow, range(10), range(10))
        )
        assert list(executor.map(pow, range(3), range(10))) == [0**0, 1**1, 2**2]  # shortest wins


def test_map_exception(local: Any) -> None:
    with jobkit.Executor() as executor:
        results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
        assert next(results) == (0, 1)
        assert next(results) == (0, 1)
        with pytest.raises(ZeroDivisionError):
            next(results)


def test_map_timeout(local: Any) -> None:
    results = []
    with jobkit.Executor() as executor, pytest.raises(concurrent.futures.TimeoutError):
        for value in executor.map(helpers.sleep_then, [0, 0, 6], [1, 2, 3], timeout=3):
            results.append(value)
    assert results == [1, 2]


def test_run_after_shutdown(local: Any) -> None:
    executor = jobkit.Executor()
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError):
        executor.map(pow, [2], [5])


def test_shutdown_wait_waits_for_every_job(local: Any) -> None:
    executor = jobkit.Executor()
    futures = [executor.submit(helpers.sleep_then, 0.2, i) for i in range(3)]
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 2]


def test_cancel_futures_cancels_only_waiting_jobs(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=1, max_jobs=1):
        executor = jobkit.Executor()
        running = executor.submit(helpers.sleep_then, 1.0, "ran")
        deadline = time.monotonic() + T
        while not running.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting = [executor.submit(helpers.square, i) for i in range(5)]
        executor.shutdown(wait=True, cancel_futures=True)
        assert running.result() == "ran"  # a running job is not killed by shutdown
        assert all(f.cancelled() for f in waiting)


def test_as_completed_and_wait_all(local: Any) -> None:
    with jobkit.Executor() as executor:
        futures = [executor.submit(mul, i, i) for i in range(5)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=T)) == [
            0,
            1,
            4,
            9,
            16,
        ]
        done, not_done = concurrent.futures.wait(
            futures, return_when=concurrent.futures.ALL_COMPLETED
        )
        assert len(done) == 5 and not not_done


def test_unknown_backend_fails_at_construction(local: Any) -> None:
    with pytest.raises(jobkit.ConfigError, match="unknown backend"):
        jobkit.Executor(backend="moon")


def test_agent_exits_when_idle_and_restarts_on_demand(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=2, idle_timeout=0.5) as client:
        assert jobkit.submit(mul, 3, 3).result(timeout=T) == 9
        backend = client.backend("local")
        deadline = time.monotonic() + 15
        while backend.paths.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not backend.paths.socket.exists(), "the agent should exit when idle"
        assert jobkit.submit(mul, 4, 4).result(timeout=T) == 16  # started again on demand


def test_free_reference(local: Any) -> None:
    """CPython's test_free_reference: map's iterator keeps no yielded result."""
    with jobkit.Executor() as executor:
        for obj in executor.map(helpers.make_blob, range(10)):
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            wait_for(lambda ref=ref: ref() is None, timeout=T)


def test_long_map_of_large_results_holds_only_a_few(local: Any) -> None:
    """200 results of 1 MB: the executor keeps none it has handed out."""
    size, count = 2**20, 200
    refs: list[weakref.ref[helpers.Blob]] = []
    most_alive = 0
    with jobkit.Executor() as executor:
        for index, obj in enumerate(executor.map(helpers.make_blob, range(count), [size] * count)):
            assert obj.index == index and len(obj.data) == size
            refs.append(weakref.ref(obj))
            del obj
            gc.collect()
            most_alive = max(most_alive, sum(r() is not None for r in refs))
        wait_for(lambda: not executor._unfinished, timeout=T)
    gc.collect()
    wait_for(lambda: all(r() is None for r in refs), timeout=T)
    assert most_alive <= 8, f"{most_alive} handed-out results were still referenced at once"


def test_executor_forgets_finished_submits(local: Any) -> None:
    with jobkit.Executor() as executor:
        future = executor.submit(helpers.make_blob, 1, 2**20)
        assert future.result(timeout=T).index == 1
        wait_for(lambda: not executor._unfinished, timeout=T)
        ref = weakref.ref(future)
        del future
        gc.collect()
        assert ref() is None, "a finished job must not be kept by the executor"


def test_map_submits_without_iteration(local: Any) -> None:
    """CPython: map() submits every call at once, even if never iterated."""
    with jobkit.Executor() as executor:
        before = len(local.store.query(limit=None))
        executor.map(helpers.square, range(5))
        assert len(local.store.query(limit=None)) == before + 5


def test_submit_exception_propagates(local: Any) -> None:
    with jobkit.Executor() as executor:
        future = executor.submit(helpers.fail_with, 3)
        error = future.exception(timeout=T)
        assert isinstance(error, helpers.CustomError) and error.code == 3
        with pytest.raises(helpers.CustomError):
            future.result(timeout=T)
