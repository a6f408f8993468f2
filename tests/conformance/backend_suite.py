"""The behaviour every backend must show, written once (fsspec ``tests/abstract`` style).

A backend gets its tests by subclassing :class:`BackendConformance` in a
``test_*.py`` module and providing a ``client`` fixture that yields a client
(inside ``jobkit.use``) whose default backend is the one under test, plus the
hooks below.  Everything goes through the public API (``jobkit.submit``,
``Job``, ``jobkit.get``, ``jobkit.ConfigError``), so the suite survives
refactors of the backend contract.  Where a backend cannot do a case, its
class sets the matching ``*_skip`` attribute to the reason, and the case is
skipped with that reason (never silently).

The functions jobs run live in this module: workers import them by reference
through the submitter's recorded ``sys.path``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, ClassVar

import pytest

import jobkit
from jobkit.serialization import RemoteTraceback
from jobkit.states import FailureReason, JobState
from jobkit.usage import decode_series, usage_key

T = 120


class SuiteError(Exception):
    """An exception type the client can import, to check it comes back as is."""

    def __init__(self, code: int) -> None:
        super().__init__(f"suite failure {code}")
        self.code = code


def square(x: int) -> int:
    return x * x


def fail_with(code: int) -> None:
    raise SuiteError(code)


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def fail_once(marker: str) -> str:
    """Fails the first time (leaving ``marker``), succeeds the next."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first try fails")
    return "second try"


def kill_self_once(marker: str) -> str:
    """SIGKILLs its own process the first time (leaving ``marker``): the worker
    records nothing, so the backend sees the attempt end (LOST)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def raise_once(marker: str, kind: str) -> str:
    """Raises ``ValueError`` (kind "value") or :class:`SuiteError` the first time."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise ValueError("first try fails") if kind == "value" else SuiteError(7)
    return "second try"


def allocate(nbytes: int, hold: float) -> int:
    """Allocates and touches ``nbytes`` and holds them ``hold`` seconds."""
    block = bytearray(b"\x01") * nbytes  # filled, so every page is resident
    time.sleep(hold)
    return len(block)


def burn(seconds: float) -> float:
    """Keeps one core busy for ``seconds`` of wall time."""
    deadline = time.monotonic() + seconds
    spins = 0.0
    while time.monotonic() < deadline:
        spins += 1.0
    return spins


def burn_then_fail(seconds: float) -> None:
    burn(seconds)
    raise SuiteError(3)


def burn_cpu(seconds: float) -> None:
    """Spends ``seconds`` of CPU time (however long a shared machine takes)."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        sum(range(1000))


def burn_once_then_fail(marker: str, seconds: float) -> str:
    """Burns ``seconds`` of CPU and fails the first time (leaving ``marker``); at once after."""
    if not os.path.exists(marker):
        Path(marker).touch()
        burn_cpu(seconds)
        raise SuiteError(3)
    return "second try"


def needs_marker_after_burn(folder: str, index: int, seconds: float) -> int:
    """:func:`needs_marker`, after burning ``seconds`` of CPU while the marker is missing."""
    if not (Path(folder) / str(index)).exists():
        burn_cpu(seconds)
    return needs_marker(folder, index)


def ramp(nbytes: int, steps: int, pause: float) -> int:
    """Allocates and touches ``nbytes`` in ``steps`` blocks, pausing after each."""
    blocks = []
    for _ in range(steps):
        blocks.append(bytearray(b"\x01") * (nbytes // steps))
        time.sleep(pause)
    return sum(len(b) for b in blocks)


def burn_in_child(seconds: float) -> int:
    """A child process burns the CPU; this one only waits for it."""
    code = f"import time\nd = time.monotonic() + {seconds}\nwhile time.monotonic() < d: pass"
    return subprocess.run([sys.executable, "-c", code], check=True, timeout=T).returncode


def tick_until(path: str, limit: float) -> int:
    """Prints a line, then more until ``path`` exists: logs can be read while it runs."""
    print("tick 0", flush=True)
    deadline = time.monotonic() + limit
    count = 1
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"tick {count} done", flush=True)
    return count


def needs_marker(folder: str, index: int) -> int:
    """Fails unless ``folder/<index>`` exists: the items whose marker is missing
    fail until the test creates it and reruns them."""
    if not (Path(folder) / str(index)).exists():
        raise SuiteError(index)
    return index * index


def prep_data(n: int, seconds: float = 0.0) -> list[int]:
    time.sleep(seconds)
    return list(range(n))


def pick(data: list[int], i: int) -> int:
    return data[i] * 10


def total(values: list[int]) -> int:
    return sum(values)


def value_or_wait(value: int, path: str | None) -> int:
    """``value`` at once, or once ``path`` exists (item-wise dependency tests)."""
    deadline = time.monotonic() + T
    while path is not None and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def plus_one(x: int) -> int:
    return x + 1


def write_after(path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("written")
    return path


def read_text(path: str) -> str:
    return Path(path).read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has ended: only its parent has not reaped it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


def wait_for(predicate: Any, timeout: float = T, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def write_cached_module(folder: Path, module: str, body: str) -> None:
    """A module whose cached function a test edits between interpreters."""
    source = f"import jobkit\n\n\n@jobkit.remote(cache=True)\ndef scaled(x):\n    return {body}\n"
    (folder / f"{module}.py").write_text(source)
    for stale in (folder / "__pycache__").glob(f"{module}.*"):
        stale.unlink()  # an edit within the same second as the last import


_SUBMIT_CACHED = """
import json, sys
import jobkit
sys.path.insert(0, sys.argv[1])
module = __import__(sys.argv[2])
with jobkit.use(**json.loads(sys.argv[3])) as client:
    backend = client.backend()
    real, submits = backend.submit, []
    def counting(*args, **kwargs):
        submits.append(1)
        return real(*args, **kwargs)
    backend.submit = counting  # counts this process's submissions; the real one runs
    job = module.scaled.submit(int(sys.argv[4]))
    done, info = job.done(), job.info
    print(json.dumps({
        "submits": len(submits), "done": done, "state": info.state.value, "id": job.id,
        "cached_from": info.extra.get("cached_from"), "backend_id": info.backend_id,
        "result": job.result(timeout=float(sys.argv[5])),
    }))
"""


def submit_cached_elsewhere(client: Any, folder: Path, module: str, x: int) -> Any:
    """Submit ``module.scaled(x)`` from a new interpreter configured as ``client``."""
    settings = client.config.model_dump(mode="json", exclude={"profile", "key"})
    if client.config.key is not None:
        settings["key"] = client.config.key.get_secret_value()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _SUBMIT_CACHED,
            str(folder),
            module,
            json.dumps(settings),
            str(x),
            str(T),
        ],
        capture_output=True,
        text=True,
        timeout=T + 30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


class BackendConformance:
    """Mixed into one class per backend; see the module docstring."""

    backend_name: ClassVar[str]
    time_limit: ClassVar[str] = "2s"
    """A limit the backend enforces; the job sleeps far past it."""
    blockers: ClassVar[int] = 1
    blocker_options: ClassVar[dict[str, Any]] = {}
    """Options of jobs that fill the backend, so one more stays queued."""
    queued_skip: ClassVar[str | None] = None
    time_limit_skip: ClassVar[str | None] = None
    oom_skip: ClassVar[str | None] = None
    """Why this backend cannot make a job that goes over its ``mem`` fail OOM here."""
    impossible: ClassVar[dict[str, Any] | None] = None
    """Valid resources this backend can never satisfy (a ConfigError at submit)."""
    nvml_skip: ClassVar[str | None] = None
    """Why this backend's workers cannot load the NVML stand-in the test sets up
    (they do not inherit the test process's environment)."""
    nvml_gpus_granted: ClassVar[bool] = False
    """Whether a job asking for a GPU is given ``CUDA_VISIBLE_DEVICES`` by the
    scheduler (Slurm's GRES), which replaces the one the submitter had."""
    runs_in_submitter: ClassVar[str | None] = None
    """Why jobs this backend took stop when their submitting process exits
    (the toy plugin starts workers from threads of the submitter); the
    chain-after-exit case then lets the submitter see the first job end before
    it exits, and what follows must still complete without it."""

    def subprocess_options(self, client: Any) -> dict[str, Any]:
        """``jobkit.use`` arguments for a separate submitting process, beyond the
        store and backend (JSON-serializable): the backends' settings in force."""
        config = client.config
        return {
            "slurm": config.slurm,
            "kubernetes": config.kubernetes,
            "backends": config.backends,
            "local": config.local.model_dump(mode="json", exclude_unset=True),
            "poll_interval": config.poll_interval,
        }

    def submissions(self, client: Any) -> int:
        """How many submissions the backend has received so far (its own count)."""
        raise NotImplementedError

    # -- results and errors ----------------------------------------------------------
    def test_submit_then_result(self, client: Any) -> None:
        job = jobkit.submit(square, 12)
        assert job.id.startswith("jk-")
        assert job.result(timeout=T) == 144
        info = job.info
        assert info.backend == self.backend_name and info.backend_id
        assert info.state is JobState.SUCCEEDED and info.exit_code == 0 and info.host
        assert info.started_at is not None and info.finished_at is not None
        assert info.created_at <= info.started_at <= info.finished_at

    def test_the_original_exception_with_the_remote_cause(self, client: Any) -> None:
        job = jobkit.submit(fail_with, 7)
        with pytest.raises(SuiteError) as caught:
            job.result(timeout=T)
        assert caught.value.code == 7
        cause = caught.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "fail_with" in cause.text and "SuiteError" in cause.text
        printed = "".join(traceback.format_exception(caught.value))
        assert "fail_with" in printed  # the remote frames show when the error is printed
        assert job.info.state is JobState.FAILED
        assert job.info.failure_reason is FailureReason.ERROR
        assert "suite failure 7" in (job.info.message or "")
        assert isinstance(job.exception(), SuiteError)

    def test_a_map_is_one_backend_submission(self, client: Any) -> None:
        before = self.submissions(client)
        jobs = jobkit.map(square, range(4))
        assert self.submissions(client) - before == 1
        assert isinstance(jobs, jobkit.JobArray) and len(jobs) == 4
        assert jobs.results(timeout=T, progress=False) == [0, 1, 4, 9]
        assert {job.info.array_id for job in jobs} == {jobs.id}
        assert [job.info.array_index for job in jobs] == [0, 1, 2, 3]
        again = jobkit.get(jobs.id)
        assert isinstance(again, jobkit.JobArray)
        assert [job.id for job in again] == [job.id for job in jobs]
        assert set(again.states()) == {JobState.SUCCEEDED}

    # -- cancel ----------------------------------------------------------------------
    def let_go(self, client: Any, job: Any) -> bool:
        """Whether the backend no longer runs ``job`` natively; polled after a cancel.

        By default: its worker process is gone, which holds because every
        backend under test runs its workers on this machine.  Backends with
        native objects (a Slurm job, a Kubernetes Job and its pods) check those.
        """
        return not _alive(job.info.pid)

    def test_cancel_a_running_job(self, client: Any) -> None:
        job = jobkit.submit(sleep_then, 60)
        wait_for(lambda: job.info.state is JobState.RUNNING and job.info.pid)
        assert job.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            job.result(timeout=T)
        assert job.info.state is JobState.CANCELLED
        wait_for(lambda: self.let_go(client, job))  # a record saying so is not enough
        assert job.cancel() is False  # already ended

    def test_cancel_a_queued_job(self, client: Any) -> None:
        if self.queued_skip:
            pytest.skip(self.queued_skip)
        options = dict(self.blocker_options)
        busy = jobkit.remote(**options)(sleep_then)
        blockers = [busy.submit(60) for _ in range(self.blockers)]
        try:
            for blocker in blockers:
                wait_for(lambda b=blocker: b.info.state is JobState.RUNNING)
            waiting = busy.submit(60)
            time.sleep(0.5)  # give the backend a chance to (wrongly) start it
            assert waiting.info.state in (JobState.PENDING, JobState.QUEUED)
            assert waiting.cancel()
            assert waiting.info.state is JobState.CANCELLED
            with pytest.raises(concurrent.futures.CancelledError):
                waiting.result(timeout=T)
        finally:
            for blocker in blockers:
                blocker.cancel()
        assert waiting.info.started_at is None

    # -- logs, reattach ------------------------------------------------------------
    def test_logs_while_running_and_after(self, client: Any, tmp_path: Path) -> None:
        release = tmp_path / "release"
        job = jobkit.submit(tick_until, str(release), 60)
        wait_for(lambda: "tick 0" in job.logs())
        assert not job.done()
        release.touch()
        followed = [line.strip() for line in job.logs(follow=True) if line.startswith("tick")]
        assert followed == ["tick 0", "tick 1 done"]  # from the start, until the job ends
        assert job.result(timeout=T) == 1
        wait_for(lambda: "tick 1 done" in job.logs())

    def test_reattach_by_id_from_another_process(self, client: Any) -> None:
        job = jobkit.submit(sleep_then, 0.5, "found again")
        script = textwrap.dedent(
            f"""
            import json, jobkit
            with jobkit.use(store={client.config.store!r}):
                print(json.dumps(jobkit.get({job.id!r}).result(timeout={T})))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=T + 30
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == "found again"

    # -- limits and retries ----------------------------------------------------------
    def test_a_time_limit_is_a_timeout(self, client: Any) -> None:
        if self.time_limit_skip:
            pytest.skip(self.time_limit_skip)
        job = jobkit.remote(time=self.time_limit)(sleep_then).submit(600)
        with pytest.raises(jobkit.JobFailedError, match="TIMEOUT") as caught:
            job.result(timeout=T + 60)
        assert caught.value.reason is FailureReason.TIMEOUT
        assert job.info.state is JobState.FAILED
        assert job.info.failure_reason is FailureReason.TIMEOUT

    def test_retries_rerun_a_failed_attempt(self, client: Any, tmp_path: Path) -> None:
        job = jobkit.remote(retries=1, retry_on={"ERROR"})(fail_once).submit(
            str(tmp_path / "tried")
        )
        assert job.result(timeout=T) == "second try"
        assert job.info.state is JobState.SUCCEEDED and job.info.attempt == 1
        (first,) = job.info.attempts
        assert first["attempt"] == 0 and first["reason"] == "ERROR"
        assert "first try fails" in first["message"]
        assert not (job.info.message or "").startswith("retrying")  # the history says it

    # -- retries by failure class ------------------------------------------------------
    def test_a_lost_attempt_is_retried_by_default(self, client: Any, tmp_path: Path) -> None:
        job = jobkit.remote(retries=1)(kill_self_once).submit(str(tmp_path / "killed"))
        assert job.result(timeout=T) == "survived"
        info = job.info
        assert info.state is JobState.SUCCEEDED and info.attempt == 1
        (first,) = info.attempts
        assert first["attempt"] == 0 and first["reason"] == "LOST"
        assert first["ended_at"] is not None and first["message"]

    def test_a_lost_item_of_a_map_is_retried_alone(self, client: Any, tmp_path: Path) -> None:
        (tmp_path / "0").touch()
        (tmp_path / "2").touch()  # only item 1 kills itself, once
        array = jobkit.remote(retries=1)(kill_self_once).map(
            [str(tmp_path / str(i)) for i in range(3)]
        )
        assert array.results(timeout=T, progress=False) == ["survived"] * 3
        infos = [job.info for job in array]
        assert [i.attempt for i in infos] == [0, 1, 0]
        assert [a["reason"] for a in infos[1].attempts] == ["LOST"]
        assert infos[1].array_id == array.id and infos[1].array_index == 1

    def test_an_error_is_not_retried_by_default(self, client: Any, tmp_path: Path) -> None:
        marker = tmp_path / "tried"
        job = jobkit.remote(retries=2)(fail_once).submit(str(marker))
        with pytest.raises(RuntimeError, match="first try fails"):
            job.result(timeout=T)
        info = job.info
        assert info.state is JobState.FAILED and info.failure_reason is FailureReason.ERROR
        assert info.attempt == 0 and info.attempts == []

    def test_retry_on_an_exception_class_retries_that_class_only(
        self, client: Any, tmp_path: Path
    ) -> None:
        robust = jobkit.remote(retries=1, retry_on={SuiteError})(raise_once)
        retried = robust.submit(str(tmp_path / "suite"), "suite")
        other = robust.submit(str(tmp_path / "value"), "value")
        assert retried.result(timeout=T) == "second try"
        assert retried.info.attempt == 1 and retried.info.attempts[0]["reason"] == "ERROR"
        with pytest.raises(ValueError, match="first try fails"):
            other.result(timeout=T)
        assert other.info.attempt == 0 and other.info.failure_reason is FailureReason.ERROR

    def test_an_oom_is_retried_with_doubled_memory(self, client: Any) -> None:
        if self.oom_skip:
            pytest.skip(self.oom_skip)
        mem = 256 * 2**20
        job = jobkit.remote(mem=mem, retries=1, mem_growth=2.0)(allocate).submit(320 * 2**20, 3.0)
        assert job.result(timeout=T) == 320 * 2**20
        info = job.info
        assert info.state is JobState.SUCCEEDED and info.attempt == 1
        (first,) = info.attempts
        assert first["reason"] == "OOM" and first["mem"] == mem
        assert info.resources["mem"] == 2 * mem

    def test_mem_growth_without_mem_is_one_line_at_submit(self, client: Any) -> None:
        before = len(jobkit.jobs(limit=10_000))
        with pytest.raises(jobkit.ConfigError) as caught:
            jobkit.remote(retries=1, mem_growth=2.0)(square).submit(1)
        assert "\n" not in str(caught.value) and "mem_growth" in str(caught.value)
        assert len(jobkit.jobs(limit=10_000)) == before

    # -- rerunning what failed -------------------------------------------------------
    RERUN_FAILING: ClassVar[tuple[int, ...]] = (3, 7, 12)

    def test_retry_failed_reruns_only_the_failed_items_in_one_submission(
        self, client: Any, tmp_path: Path
    ) -> None:
        for i in range(20):
            if i not in self.RERUN_FAILING:
                (tmp_path / str(i)).touch()
        jobs = jobkit.map(needs_marker, [str(tmp_path)] * 20, range(20))
        jobs.wait(timeout=T, progress=False)
        failed = [j.info.array_index for j in jobs if j.info.state is JobState.FAILED]
        assert failed == list(self.RERUN_FAILING)
        before = {j.id: j.info for j in jobs}
        for i in self.RERUN_FAILING:
            (tmp_path / str(i)).touch()
        submissions = self.submissions(client)
        again = jobs.retry_failed()
        assert self.submissions(client) - submissions == 1
        assert again.id == jobs.id and [j.id for j in again] == [j.id for j in jobs]
        assert again.results(timeout=T, progress=False) == [i * i for i in range(20)]
        for job in again:
            info, old = job.info, before[job.id]
            if old.array_index in self.RERUN_FAILING:
                assert info.state is JobState.SUCCEEDED and info.attempt == old.attempt + 1
                assert len(info.attempts) == 1
                entry = info.attempts[0]
                assert entry["reason"] == "ERROR" and entry["attempt"] == old.attempt
                assert entry["ended_at"] == old.finished_at
                assert info.failure_reason is None and info.finished_at != old.finished_at
            else:
                assert info == old  # untouched: same record, same finished_at
        # From another process, by the array id: all 20 found, all succeeded.
        found = jobkit.get(jobs.id)
        assert isinstance(found, jobkit.JobArray)
        assert found.results(timeout=T, progress=False) == [i * i for i in range(20)]
        # Nothing left to rerun: no submission, the same array back.
        submissions = self.submissions(client)
        assert found.retry_failed() is found
        assert self.submissions(client) == submissions

    def test_retry_refuses_a_succeeded_job_and_reruns_a_cancelled_one(
        self, client: Any, tmp_path: Path
    ) -> None:
        done = jobkit.submit(square, 3)
        assert done.result(timeout=T) == 9
        with pytest.raises(jobkit.ConfigError, match=done.id) as caught:
            done.retry()
        assert "\n" not in str(caught.value) and "SUCCEEDED" in str(caught.value)
        assert done.info.attempt == 0 and done.info.state is JobState.SUCCEEDED
        release = tmp_path / "release"
        slow = jobkit.submit(tick_until, str(release), 60)
        assert slow.cancel()
        assert slow.info.state is JobState.CANCELLED
        wait_for(lambda: self.let_go(client, slow) if slow.info.pid else True)
        release.touch()
        rerun = slow.retry()
        assert rerun.id == slow.id and rerun is not slow
        assert rerun.result(timeout=T) == 1
        info = rerun.info
        assert info.attempt == 1 and [a["reason"] for a in info.attempts] == ["CANCELLED"]
        with pytest.raises(concurrent.futures.CancelledError):
            slow.result(timeout=0)  # the old handle keeps the attempt it followed

    # -- dependencies: jobs as arguments, after=, failed dependencies ------------------
    def test_a_three_stage_chain_passes_results(self, client: Any) -> None:
        prep = jobkit.submit(prep_data, 10)
        items = jobkit.map(pick, [prep] * 10, range(10))
        reduce = jobkit.submit(total, items)
        assert reduce.result(timeout=T) == sum(i * 10 for i in range(10))
        assert items.results(timeout=T, progress=False) == [i * 10 for i in range(10)]
        assert reduce.info.depends_on == [items.id]
        assert {tuple(job.info.depends_on) for job in items} == {(prep.id,)}
        assert prep.info.depends_on == []
        ended = [prep.info, *(j.info for j in items), reduce.info]
        assert all(r.state is JobState.SUCCEEDED for r in ended)
        assert max(j.info.finished_at or 0 for j in items) <= (reduce.info.started_at or 0)
        assert (prep.info.finished_at or 0) <= min(j.info.started_at or 0 for j in items)

    def test_an_item_wise_map_waits_for_its_own_item_only(
        self, client: Any, tmp_path: Path
    ) -> None:
        gate = tmp_path / "gate"
        first = jobkit.map(value_or_wait, [1, 2], [None, str(gate)])
        second = jobkit.map(plus_one, first)
        assert [job.info.depends_on for job in second] == [[first[0].id], [first[1].id]]
        assert second[0].result(timeout=T) == 2  # while first[1] still waits on the gate
        assert first[1].info.state in (JobState.PENDING, JobState.QUEUED, JobState.RUNNING)
        assert not second[1].done()
        gate.touch()
        assert second[1].result(timeout=T) == 3
        assert (second[0].info.finished_at or 0) < (first[1].info.finished_at or 0)

    def test_after_orders_without_passing_results(self, client: Any, tmp_path: Path) -> None:
        target = tmp_path / "written"
        first = jobkit.submit(write_after, str(target), 1.0)
        sweep = jobkit.map(square, [2, 3])
        reader = jobkit.remote(read_text).options(after=[first, sweep])
        later = reader.submit(str(target))
        many = reader.map([str(target)] * 2)
        assert later.result(timeout=T) == "written"
        assert many.results(timeout=T, progress=False) == ["written", "written"]
        assert later.info.depends_on == [first.id, sweep.id]
        assert {tuple(j.info.depends_on) for j in many} == {(first.id, sweep.id)}

    def test_a_failed_dependency_fails_its_dependents_transitively(self, client: Any) -> None:
        root = jobkit.submit(sleep_then, 0.5)
        broken = jobkit.remote(fail_with).options(after=[root]).submit(3)
        middle = jobkit.submit(square, broken)
        last = jobkit.remote(total).options(after=[middle]).submit([middle])
        for job in (middle, last):
            with pytest.raises(jobkit.DependencyError) as caught:
                job.result(timeout=T)
            assert caught.value.dependency_id == broken.id
            assert isinstance(caught.value, jobkit.JobFailedError)
            info = job.info
            assert info.state is JobState.FAILED
            assert info.failure_reason is FailureReason.DEPENDENCY
            assert broken.id in (info.message or "") and "ERROR" in (info.message or "")
            assert info.started_at is None  # it never ran
        assert isinstance(broken.exception(timeout=T), SuiteError)
        before = self.submissions(client)
        late = jobkit.submit(square, last)  # known failed at submit: never sent
        assert late.info.failure_reason is FailureReason.DEPENDENCY
        assert self.submissions(client) == before
        with pytest.raises(jobkit.DependencyError) as caught:
            late.result(timeout=T)
        assert caught.value.dependency_id == broken.id

    def test_cancelling_a_dependency_fails_its_dependents(self, client: Any) -> None:
        slow = jobkit.submit(sleep_then, 60)
        dependent = jobkit.map(square, [slow, slow])
        wait_for(lambda: slow.info.state is JobState.RUNNING)
        assert slow.cancel()
        for job in dependent:
            with pytest.raises(jobkit.DependencyError) as caught:
                job.result(timeout=T)
            assert caught.value.dependency_id == slow.id
            assert job.info.message == f"dependency {slow.id} failed (CANCELLED)"
            assert job.info.started_at is None

    def test_a_chain_finishes_after_its_submitter_exited(self, client: Any) -> None:
        options = {
            "store": client.config.store,
            "backend": self.backend_name,
            **self.subprocess_options(client),
        }
        script = textwrap.dedent(
            f"""
            import json, os, jobkit
            from backend_suite import pick, prep_data, total
            with jobkit.use(**json.loads({json.dumps(json.dumps(options))})):
                prep = jobkit.submit(prep_data, 10, 2.0)
                # No handle kept on what follows: this process must not release it.
                reduce_id = jobkit.submit(total, jobkit.map(pick, [prep] * 10, range(10))).id
                if {self.runs_in_submitter is not None!r}:
                    prep.result(timeout={T})
                print(json.dumps([reduce_id, os.getpid()]), flush=True)
                os._exit(0)  # at once: no monitor, no cleanup
            """
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
            ),
        }
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=T, env=env
        )
        assert out.returncode == 0, out.stderr
        reduce_id, pid = json.loads(out.stdout)
        assert not _alive(pid)
        again = jobkit.get(reduce_id)
        assert isinstance(again, jobkit.Job)
        assert not again.info.state.is_terminal  # the submitter left it waiting
        assert again.info.extra["submitter"]["pid"] == pid
        assert again.result(timeout=T) == sum(i * 10 for i in range(10))

    # -- futures ---------------------------------------------------------------------
    def test_await_as_completed_and_wait(self, client: Any) -> None:
        async def both() -> list[Any]:
            return list(await asyncio.gather(jobkit.submit(square, 3), jobkit.submit(square, 4)))

        assert asyncio.run(both()) == [9, 16]
        jobs = [jobkit.submit(square, i) for i in range(3)]
        done = {f.result() for f in concurrent.futures.as_completed(jobs, timeout=T)}
        assert done == {0, 1, 4}
        more = [jobkit.submit(square, 5)]
        finished, pending = concurrent.futures.wait(more, timeout=T)
        assert not pending and [f.result() for f in finished] == [25]

    # -- caching ----------------------------------------------------------------------
    def test_cache_hits_across_processes_and_misses_after_an_edit(
        self, client: Any, tmp_path: Path
    ) -> None:
        module = f"cached_{self.backend_name}_{os.getpid()}"
        write_cached_module(tmp_path, module, "x * 3")
        sys.path.insert(0, str(tmp_path))
        try:
            cached = __import__(module)
        finally:
            sys.path.remove(str(tmp_path))
        first = cached.scaled.submit(7)
        assert first.result(timeout=T) == 21
        before = self.submissions(client)

        # Another process, same store: a done Job pointing at the first, nothing submitted.
        hit = submit_cached_elsewhere(client, tmp_path, module, 7)
        assert hit["submits"] == 0 and hit["done"] and hit["state"] == "SUCCEEDED"
        assert hit["cached_from"] == first.id and hit["id"] != first.id
        assert hit["result"] == 21 and hit["backend_id"] is None
        assert self.submissions(client) == before
        found = jobkit.get(hit["id"])
        assert found.info.extra["cached_from"] == first.id and found.result() == 21

        # A map: the cached item is done at once, the others go in one submission.
        array = cached.scaled.map([8, 9, 7])
        assert [j.info.extra.get("cached_from") for j in array] == [None, None, first.id]
        assert array.results(timeout=T) == [24, 27, 21]
        assert self.submissions(client) == before + 1
        # Cached items first: a backend that runs any items of an array runs only
        # the others; one that cannot (sparse_arrays False) runs the whole map.
        sparse = cached.scaled.map([7, 10, 8, 11])
        expected = [first.id, None, array[0].id, None]
        sparse_arrays = client.backend(self.backend_name).sparse_arrays
        assert [j.info.extra.get("cached_from") for j in sparse] == (
            expected if sparse_arrays else [None] * 4
        )
        assert sparse.results(timeout=T) == [21, 30, 24, 33]

        # The function's file edited: a new interpreter misses and runs it.
        write_cached_module(tmp_path, module, "x * 4")
        miss = submit_cached_elsewhere(client, tmp_path, module, 7)
        assert miss["submits"] == 1 and miss["cached_from"] is None and miss["result"] == 28
        again = submit_cached_elsewhere(client, tmp_path, module, 7)
        assert again["submits"] == 0 and again["cached_from"] == miss["id"]

    # -- usage: sampled by the worker, on every backend --------------------------------
    def test_a_cpu_burn_is_in_the_usage_and_its_series(self, client: Any) -> None:
        job = jobkit.submit(burn, 1.5)
        job.result(timeout=T)
        usage = job.info.usage
        assert usage["final"] is True and usage["samples"] >= 2, usage
        assert usage["cpu_seconds"] > 0.5 and usage["mean_cpu_util"] > 0.4, usage
        assert usage["wall_seconds"] >= 1.5 and usage["max_cpu_util"] > 0.4, usage
        assert 0 <= usage["sampler_cpu_seconds"] < usage["cpu_seconds"], usage
        assert "gpus" not in usage or usage["gpus"], usage  # absent, never empty
        series = decode_series(client.store.get_blob(usage_key(job.id)))
        assert len(series["t"]) == len(series["cpu_util"]) == len(series["rss_bytes"]) >= 2
        assert series["t"] == sorted(series["t"]) and max(series["cpu_util"]) > 0.4, series
        cli = [sys.executable, "-m", "jobkit", "--store", client.config.store]
        out = subprocess.run(  # another process, as a user would look
            [*cli, "status", job.id, "--json"],
            capture_output=True,
            text=True,
            timeout=T,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["usage"] == usage

    def test_a_memory_ramp_reaches_its_peak_in_the_usage(self, client: Any) -> None:
        mib = 2**20
        job = jobkit.submit(ramp, 160 * mib, 8, 0.25)
        assert job.result(timeout=T) == 160 * mib
        usage = job.info.usage
        assert usage["final"] is True and usage["peak_rss_bytes"] >= 150 * mib, usage
        assert 0 < usage["mean_rss_bytes"] <= usage["peak_rss_bytes"], usage
        rss = decode_series(client.store.get_blob(usage_key(job.id)))["rss_bytes"]
        assert max(rss) - rss[0] >= 100 * mib, rss  # it rose while the job ran

    def test_a_child_process_cpu_is_counted(self, client: Any) -> None:
        job = jobkit.submit(burn_in_child, 1.5)
        assert job.result(timeout=T) == 0
        usage = job.info.usage
        assert usage["final"] is True and usage["cpu_seconds"] > 0.5, usage

    def test_a_failed_job_records_its_final_usage(self, client: Any) -> None:
        job = jobkit.submit(burn_then_fail, 0.5)
        with pytest.raises(SuiteError):
            job.result(timeout=T)
        usage = job.info.usage
        assert job.info.failure_reason is FailureReason.ERROR
        assert usage["final"] is True and usage["wall_seconds"] >= 0.5, usage
        assert usage["cpu_seconds"] > 0.1 and usage["samples"] >= 2, usage
        assert decode_series(client.store.get_blob(usage_key(job.id)))["t"]

    def test_a_retry_starts_its_own_usage_and_keeps_the_ended_attempts(
        self, client: Any, tmp_path: Path
    ) -> None:
        job = jobkit.remote(retries=1, retry_on={"ERROR"})(burn_once_then_fail).submit(
            str(tmp_path / "burnt"), 1.0
        )
        assert job.result(timeout=T) == "second try"
        info = job.info
        assert info.attempt == 1 and info.state is JobState.SUCCEEDED
        first = info.attempts[0]["usage"]
        assert first["final"] is True and first["cpu_seconds"] > 0.5, first
        usage = info.usage  # attempt 1 returned at once: its own figures only
        assert usage["final"] is True and usage["cpu_seconds"] < 0.5, usage
        assert usage["wall_seconds"] < first["wall_seconds"], usage
        series = decode_series(client.store.get_blob(usage_key(job.id)))
        assert series["t"][-1] <= usage["wall_seconds"] + 0.01, series  # not attempt 0's

    def test_a_rerun_starts_without_the_failed_attempts_usage(
        self, client: Any, tmp_path: Path
    ) -> None:
        jobs = jobkit.map(needs_marker_after_burn, [str(tmp_path)] * 2, range(2), [0.6] * 2)
        jobs.wait(timeout=T, progress=False)
        assert all(j.info.usage["cpu_seconds"] > 0.3 for j in jobs)
        assert all(client.store.get_blob(usage_key(j.id)) for j in jobs)
        again = jobs.retry_failed()
        for job in again:  # not started yet (it may have been, fast): nothing measured
            info = job.info
            if info.state in (JobState.PENDING, JobState.QUEUED):
                assert info.usage == {}, info.usage
                assert not client.store.blobs_present([usage_key(job.id)])
            assert info.attempts[0]["usage"]["cpu_seconds"] > 0.3, info.attempts
        for i in range(2):
            (tmp_path / str(i)).touch()
        assert again.results(timeout=T, progress=False) == [0, 1]
        assert all(j.info.attempts[0]["usage"]["final"] for j in again)

    def test_gpu_usage_through_nvml_for_the_visible_device_only(
        self, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if self.nvml_skip:
            pytest.skip(self.nvml_skip)
        from jobkit.usage import flags
        from jobkit_testing import nvml_standin

        gib = 2**30
        devices = [
            nvml_standin.FakeDevice(
                "NVIDIA H100 80GB HBM3", f"GPU-00000000-0000-4000-8000-00000000000{i}",
                80 * gib, (i + 1) * gib, power_mw=None if i else 300_000,
                process_bytes=0, utils=[0],
            )
            for i in range(2)
        ]  # fmt: skip
        values = nvml_standin.write_devices(tmp_path / "devices.tsv", devices)
        library = nvml_standin.build(tmp_path / "lib")
        for name, value in nvml_standin.environment(library, values).items():
            monkeypatch.setenv(name, value)
        if self.nvml_gpus_granted:  # the scheduler sets CUDA_VISIBLE_DEVICES=0
            want, job = 0, jobkit.remote(gpus=1)(sleep_then).submit(1.2)
        else:  # it inherits a device (a UUID, as some schedulers set it), asked for none
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", devices[1].uuid)
            cpu_only = jobkit.submit(sleep_then, 1.2)
            cpu_only.result(timeout=T)
            usage = cpu_only.info.usage  # the node's GPUs are not its own: not measured
            assert usage["final"] is True and "gpus" not in usage, usage
            return
        job.result(timeout=T)
        (gpu,) = job.info.usage["gpus"]
        assert gpu["index"] == want and gpu["uuid"] == devices[want].uuid, gpu
        assert gpu["util_max"] == 0.0 and gpu["mem_peak_bytes"] == (want + 1) * gib, gpu
        assert gpu["mem_total_bytes"] == 80 * gib, gpu
        assert gpu.get("power_mean_watts") == (None if want else 300.0), gpu
        asked = bool(job.info.resources.get("gpus"))
        assert [f.name for f in flags(job.info)] == (["idle_gpu"] if asked else [])

    def test_live_usage_while_running_survives_a_kill(self, client: Any) -> None:
        job = jobkit.submit(burn, 60)
        live = wait_for(lambda: job.info.usage)  # the first flush, about 2 s in
        assert job.info.state is JobState.RUNNING
        assert live["final"] is False and live["samples"] >= 1 and live["cpu_seconds"] > 0, live
        # The series is written just after the record (so no series outlives a pruned record).
        assert wait_for(lambda: client.store.blobs_present([usage_key(job.id)]))
        assert decode_series(client.store.get_blob(usage_key(job.id)))["t"]
        assert job.cancel()  # the worker is killed: it never writes a final summary
        with pytest.raises(concurrent.futures.CancelledError):
            job.result(timeout=T)
        wait_for(lambda: self.let_go(client, job))
        kept = job.info.usage
        assert kept["final"] is False and kept["wall_seconds"] >= live["wall_seconds"], kept

    # -- bad input, plan ---------------------------------------------------------------
    def test_bad_resources_are_one_line_before_anything_is_recorded(self, client: Any) -> None:
        before = len(jobkit.jobs(limit=10_000))
        with pytest.raises(jobkit.ConfigError) as caught:
            jobkit.remote(mem="lots")(square).submit(1)
        assert "\n" not in str(caught.value) and "mem" in str(caught.value)
        if self.impossible is not None:
            with pytest.raises(jobkit.ConfigError) as caught:
                jobkit.remote(**self.impossible)(square).submit(1)
            assert "\n" not in str(caught.value)
        assert len(jobkit.jobs(limit=10_000)) == before

    def test_plan_describes_the_submission(self, client: Any) -> None:
        backend = client.backend(self.backend_name)
        resources = client.resolve_resources(jobkit.Resources(cpus=1, time="5m"))
        text = backend.plan(resources, name="square")
        assert isinstance(text, str) and text.strip()
