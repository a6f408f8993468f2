"""The client's job API over the local backend (real agents and worker
processes): closures and lambdas, the decorator and options, exceptions and
results that cannot be pickled, done callbacks, FIRST_EXCEPTION, the Executor,
listing, pickled handles, stderr logs.  What every backend does (result,
exception, map, logs, futures, ...) is in tests/conformance/."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import helpers
import pytest

import jobkit

T = 30  # generous per-job timeout on a loaded 2-core CI machine


def test_lambdas_and_closures_go_by_value(local: Any) -> None:
    offset = 10

    def add(x: int) -> int:
        return x + offset

    assert jobkit.submit(add, 5).result(timeout=T) == 15
    assert jobkit.submit(lambda: "lambda").result(timeout=T) == "lambda"


def test_decorator_bare_and_with_arguments(local: Any) -> None:
    @jobkit.remote
    def bare(x: int) -> int:
        return x + 1

    @jobkit.remote(cpus=1, mem="64MB", time="1m", name="named-job", labels={"team": "ml"})
    def configured(x: int) -> int:
        return x * 3

    assert bare(1) == 2  # a plain call runs here, unchanged
    assert bare.submit(1).result(timeout=T) == 2
    job = configured.submit(2)
    assert job.result(timeout=T) == 6
    assert job.info.name == "named-job"
    assert job.info.labels == {"team": "ml"}
    assert job.info.resources["mem"] == 64_000_000


def test_exception_defined_in_a_closure_is_rebuilt(local: Any) -> None:
    class LocalError(RuntimeError):
        pass

    def boom() -> None:
        raise LocalError("from a closure")

    with pytest.raises(RuntimeError, match="from a closure") as caught:
        jobkit.submit(boom).result(timeout=T)
    assert type(caught.value).__name__ == "LocalError"


def test_unpicklable_exception_becomes_job_failed_error(local: Any) -> None:
    def boom() -> None:
        import threading

        error = ValueError("holds a lock")
        error.lock = threading.Lock()  # type: ignore[attr-defined]
        raise error

    with pytest.raises(jobkit.JobFailedError) as caught:
        jobkit.submit(boom).result(timeout=T)
    assert "ValueError" in str(caught.value) and "holds a lock" in str(caught.value)
    assert "boom" in caught.value.remote_traceback


def test_unpicklable_result_is_reported(local: Any) -> None:
    def make_lock() -> Any:
        import threading

        return threading.Lock()

    with pytest.raises(jobkit.SerializationError, match=r"result of job .* cannot be pickled"):
        jobkit.submit(make_lock).result(timeout=T)


def test_map_with_several_iterables_and_keywords(local: Any) -> None:
    @jobkit.remote
    def combine(a: int, b: str, *, sep: str) -> str:
        return f"{a}{sep}{b}"

    assert combine.map([1, 2], ["x", "y"], sep="-").results(timeout=T, progress=False) == [
        "1-x",
        "2-y",
    ]


def test_options_returns_a_new_function(local: Any) -> None:
    @jobkit.remote(cpus=1)
    def f() -> int:
        return 1

    g = f.options(cpus=2, name="other")
    assert f.resources.cpus == 1 and g.resources.cpus == 2
    assert g.submit().info.name == "other"


def test_wait_first_exception(local: Any) -> None:
    slow = jobkit.submit(helpers.sleep_then, 5, "slow")
    bad = jobkit.submit(helpers.fail_with, 1)
    done, not_done = concurrent.futures.wait(
        [slow, bad], timeout=T, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert bad in done and slow in not_done
    slow.cancel()


def test_done_callback_and_asyncio(local: Any) -> None:
    seen: list[Any] = []
    job = jobkit.submit(helpers.square, 3)
    job.add_done_callback(lambda j: seen.append(j.result()))

    async def main() -> list[int]:
        a = jobkit.submit(helpers.square, 4)
        b = asyncio.wrap_future(jobkit.submit(helpers.square, 5))
        return [await a, await b]

    assert asyncio.run(main()) == [16, 25]
    job.result(timeout=T)
    deadline = __import__("time").monotonic() + 5
    while not seen and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.01)
    assert seen == [9]


def test_result_timeout_raises_futures_timeout(local: Any) -> None:
    job = jobkit.submit(helpers.sleep_then, 3)
    with pytest.raises(concurrent.futures.TimeoutError):
        job.result(timeout=0.1)
    job.cancel()


def test_logs_while_running_and_follow(local: Any) -> None:
    def chatty() -> None:
        import sys
        import time

        for i in range(3):
            print(f"line {i}", flush=True)
            time.sleep(0.3)
        print("to stderr", file=sys.stderr)

    job = jobkit.submit(chatty)
    deadline = __import__("time").monotonic() + T
    while "line 0" not in job.logs() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    assert "line 0" in job.logs()
    assert not job.done()
    followed = list(job.logs(follow=True))
    assert followed == ["line 0\n", "line 1\n", "line 2\n"]
    assert job.logs(stream="stderr") == "to stderr\n"
    with pytest.raises(jobkit.ConfigError, match="invalid log stream"):
        job.logs(stream="stdin")


def test_executor_is_a_futures_executor(local: Any) -> None:
    with jobkit.Executor(cpus=1) as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        assert pool.submit(helpers.square, 6).result(timeout=T) == 36
        assert list(pool.map(helpers.square, [1, 2, 3], timeout=T)) == [1, 4, 9]
        results = pool.map(helpers.sleep_then, [2.0], timeout=0.2)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)

        async def run_in_executor() -> int:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, helpers.square, 9)  # type: ignore[no-any-return]

        assert asyncio.run(run_in_executor()) == 81
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(helpers.square, 1)


def test_executor_map_reraises_in_order(local: Any) -> None:
    with jobkit.Executor() as pool:
        results = pool.map(helpers.fail_with, [7])
        with pytest.raises(helpers.CustomError):
            next(results)


def test_jobs_lists_newest_first_with_filters(local: Any) -> None:
    @jobkit.remote(name="listing-probe")
    def probe() -> None:
        return None

    ids = [probe.submit().id for _ in range(3)]
    for job_id in ids:
        jobkit.get(job_id).result(timeout=T)  # type: ignore[union-attr]
    found = jobkit.jobs(name="listing-*", state="succeeded", backend="local", limit=10)
    assert [j.id for j in found] == list(reversed(ids))
    assert len(jobkit.jobs(name="listing-*", limit=2)) == 2
    with pytest.raises(jobkit.ConfigError, match="invalid state"):
        jobkit.jobs(state="DONE")


def test_handles_pickle_as_references(local: Any) -> None:
    import pickle

    job = jobkit.submit(helpers.square, 11)
    again = pickle.loads(pickle.dumps(job))
    assert isinstance(again, jobkit.Job) and again.id == job.id
    assert again.result(timeout=T) == 121
    array = jobkit.map(helpers.square, [1, 2])
    copied = pickle.loads(pickle.dumps(array))
    assert isinstance(copied, jobkit.JobArray) and copied.results(timeout=T, progress=False) == [
        1,
        4,
    ]
