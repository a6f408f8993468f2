"""Warm workers (the local backend's default): reused processes, and what
each job gets back or cannot leak into the next.

Real agents and real worker processes; the facts come from the jobs
themselves (their pid, cwd, environment, threads) and from ``/proc``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jobkit
from conftest import local_env, wait_for

T = 30


def on(fn: Any, *args: Any, **resources: Any) -> jobkit.Job[Any]:
    """Submit ``fn(*args)`` with these resources."""
    return jobkit.remote(**resources)(fn).submit(*args)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One cpu: jobs run one after another, so a reused worker is the same pid."""
    with local_env(tmp_path_factory.mktemp("warm"), cpus=1) as client:
        yield client


def test_jobs_reuse_one_worker_and_isolate_gets_a_process_of_its_own(one_slot: Any) -> None:
    pids = [jobkit.submit(os.getpid).result(timeout=T) for _ in range(3)]
    assert len(set(pids)) == 1, pids  # one warm worker ran all three
    assert jobkit.submit(os.getpid).info.pid in (None, pids[0])
    isolated = on(os.getpid, isolate=True)
    assert isolated.result(timeout=T) not in pids
    assert isolated.info.pid == isolated.result()
    wait_for(lambda: not alive(isolated.result()), 10)  # it ran one job and ended
    assert jobkit.submit(os.getpid).result(timeout=T) == pids[0]  # the warm one is still there


def test_cwd_environment_path_and_argv_are_put_back_between_jobs(
    one_slot: Any, tmp_path: Path
) -> None:
    def meddle(elsewhere: str) -> str:
        import sys

        os.chdir(elsewhere)
        os.environ["LEFT_BY_A_JOB"] = "1"
        os.environ.pop("HOME", None)
        sys.path.insert(0, "/nowhere")
        sys.argv.append("--junk")
        return str(os.getpid())

    def look() -> tuple[str, str | None, str | None, bool, list[str], str]:
        import sys

        return (
            os.getcwd(),
            os.environ.get("LEFT_BY_A_JOB"),
            os.environ.get("HOME"),
            "/nowhere" in sys.path,
            sys.argv,
            str(os.getpid()),
        )

    pid = jobkit.submit(meddle, str(tmp_path)).result(timeout=T)
    cwd, left, home, nowhere, argv, again = jobkit.submit(look).result(timeout=T)
    assert again == pid  # the same process ran both
    assert cwd == os.getcwd()  # the submitter's directory, not the one the job moved to
    assert left is None and home == os.environ.get("HOME") and not nowhere
    assert argv[0] == "jobkit-worker" and len(argv) == 2 and argv[1].startswith("jk-")


def test_a_job_that_leaves_a_thread_or_a_child_retires_its_worker(one_slot: Any) -> None:
    def leave_thread() -> int:
        threading.Thread(target=time.sleep, args=(60,), name="left-behind", daemon=True).start()
        return os.getpid()

    def leave_child() -> tuple[int, int]:
        import subprocess

        child = subprocess.Popen(["sleep", "60"], start_new_session=False)
        return os.getpid(), child.pid

    threaded = jobkit.submit(leave_thread)
    first = threaded.result(timeout=T)
    wait_for(lambda: not alive(first), 10)  # retired: its thread cannot reach the next job
    assert "left 1 thread(s) running (left-behind); retiring" in threaded.logs("stderr")
    second, child = jobkit.submit(leave_child).result(timeout=T)
    assert second != first
    wait_for(lambda: not alive(second) and not alive(child), 10)  # its process group went too
    assert jobkit.submit(os.getpid).result(timeout=T) not in (first, second)


def test_a_time_limit_kills_the_worker_and_the_next_job_gets_a_new_one(one_slot: Any) -> None:
    before = jobkit.submit(os.getpid).result(timeout=T)

    def hang() -> None:
        time.sleep(60)

    slow = on(hang, time="1s")
    with pytest.raises(jobkit.JobFailedError) as failed:
        slow.result(timeout=T)
    assert failed.value.reason is jobkit.FailureReason.TIMEOUT
    assert slow.info.pid == before  # it ran on the warm worker, which was killed with it
    assert not alive(before)
    after = jobkit.submit(os.getpid).result(timeout=T)
    assert after != before


def test_a_cancelled_jobs_worker_is_replaced(one_slot: Any, tmp_path: Path) -> None:
    started = tmp_path / "started"

    def wait_forever(flag: str) -> None:
        Path(flag).write_text(str(os.getpid()))
        time.sleep(60)

    job = jobkit.submit(wait_forever, str(started))
    wait_for(started.exists, T)
    worker = int(started.read_text())
    job.cancel()
    wait_for(lambda: not alive(worker), 10)
    assert job.state is jobkit.JobState.CANCELLED
    assert jobkit.submit(lambda: 41 + 1).result(timeout=T) == 42


def test_jobs_with_other_environments_or_cpus_get_other_workers(one_slot: Any) -> None:
    plain = jobkit.submit(os.getpid).result(timeout=T)
    with_env = on(lambda: (os.getpid(), os.environ.get("X_FOR_JOB")), env={"X_FOR_JOB": "7"})
    with_env = with_env.result(timeout=T)
    assert with_env[1] == "7" and with_env[0] != plain
    assert jobkit.submit(os.environ.get, "X_FOR_JOB").result(timeout=T) is None
    half = on(os.getpid, cpus=0.5).result(timeout=T)
    assert half not in (plain, with_env[0])


def test_start_method_fork_gives_every_job_its_own_process(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=1, start_method="fork"):
        pids = [jobkit.submit(os.getpid).result(timeout=T) for _ in range(3)]
    assert len(set(pids)) == 3


def test_a_bad_isolate_value_is_one_clear_error(one_slot: Any) -> None:
    with pytest.raises(jobkit.ConfigError, match=r"isolate.*expected true or false"):
        on(os.getpid, isolate="yes")


def _sent_ahead(tmp_path: Path, first: Any, *first_args: Any, **first_res: Any) -> tuple[Any, Any]:
    """On one slot whose worker just ran a trivial job: start ``first`` and
    submit a trivial job behind it, which is sent ahead to the busy worker."""
    jobkit.submit(os.getpid).result(timeout=T)  # a short last job: send ahead
    running = on(first, *first_args, **first_res)
    wait_for(lambda: running.state is jobkit.JobState.RUNNING, T)
    behind = jobkit.submit(Path(tmp_path, "behind-ran").write_text, "yes")
    wait_for(lambda: behind.state is jobkit.JobState.RUNNING, T)  # claimed while waiting
    return running, behind


def test_a_job_sent_ahead_starts_when_the_one_before_ends(one_slot: Any, tmp_path: Path) -> None:
    first, behind = _sent_ahead(tmp_path, time.sleep, 1.0)
    assert not Path(tmp_path, "behind-ran").exists()  # it waits for the slot
    assert behind.result(timeout=T) == 3
    assert first.info.pid == behind.info.pid  # the same warm worker, in turn
    assert behind.info.started_at >= first.info.finished_at - 0.05  # when it really started


def test_cancelling_a_job_sent_ahead_spares_the_one_running(one_slot: Any, tmp_path: Path) -> None:
    first, behind = _sent_ahead(tmp_path, time.sleep, 1.5)
    assert behind.cancel() is True
    assert first.result(timeout=T) is None  # its worker was not killed
    wait_for(lambda: behind.info.state is jobkit.JobState.CANCELLED, T)
    time.sleep(0.5)
    assert not Path(tmp_path, "behind-ran").exists()


def test_a_job_sent_ahead_to_a_worker_that_dies_runs_elsewhere_once(
    one_slot: Any, tmp_path: Path
) -> None:
    first, behind = _sent_ahead(tmp_path, time.sleep, 60.0, time="2s")
    with pytest.raises(jobkit.JobFailedError):
        first.result(timeout=T)  # its time limit killed the worker
    assert behind.result(timeout=T) == 3
    assert behind.info.attempt == 0 and behind.info.pid != first.info.pid


def test_an_isolated_job_is_never_sent_ahead_to_a_warm_worker(one_slot: Any) -> None:
    jobkit.submit(os.getpid).result(timeout=T)  # a short last job
    running = jobkit.submit(time.sleep, 1.0)
    wait_for(lambda: running.state is jobkit.JobState.RUNNING, T)
    isolated = on(os.getpid, isolate=True)
    time.sleep(0.3)
    assert isolated.state is jobkit.JobState.QUEUED  # waits for a slot, not for the worker
    assert isolated.result(timeout=T) != running.info.pid
