"""The local agent as a cluster manager: process-group kills, lost workers,
memory, GPU assignment, priorities, fair share and jobs that outlive their
submitter or the agent.  What every backend does (cancel queued or running,
time limit, reattach, retries) is in tests/conformance/."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env, wait_for
from jobkit.states import FailureReason, JobRecord, JobState

T = 30


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_kills_the_process_group(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"

    def with_grandchild(path: str) -> None:
        import subprocess
        import time

        child = subprocess.Popen(["sleep", "60"])
        with open(path, "w") as handle:
            handle.write(str(child.pid))
        time.sleep(60)

    job = jobkit.submit(with_grandchild, str(marker))
    wait_for(lambda: marker.exists() and marker.read_text())
    grandchild = int(marker.read_text())
    assert job.running()
    assert job.cancel() is True
    assert job.cancelled() and job.state is JobState.CANCELLED
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(timeout=T)
    wait_for(lambda: not pid_alive(grandchild), timeout=15)
    assert job.cancel() is False  # already ended


def test_worker_killed_by_a_signal_is_lost(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    job = jobkit.submit(helpers.pid_and_sleep, str(marker), 60)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(jobkit.JobFailedError, match="SIGKILL"):
        job.result(timeout=T)
    assert job.info.failure_reason is FailureReason.LOST
    assert job.info.exit_code == -signal.SIGKILL


def test_worker_that_exits_without_outcome(local: Any) -> None:
    def hard_exit() -> None:
        os._exit(7)

    job = jobkit.submit(hard_exit)
    with pytest.raises(jobkit.JobFailedError, match="code 7"):
        job.result(timeout=T)
    assert job.info.exit_code == 7


def test_memory_limit_kills_with_oom(local: Any) -> None:
    def hog() -> int:
        import time

        blocks = [bytearray(50 * 2**20) for _ in range(8)]  # 400 MiB, touched
        time.sleep(10)
        return len(blocks)

    job = jobkit.remote(mem="100MiB")(hog).submit()
    with pytest.raises(jobkit.JobFailedError, match="OOM"):
        job.result(timeout=T)
    assert job.info.failure_reason is FailureReason.OOM
    assert "requested" in (job.info.message or "")


def test_gpus_are_assigned_disjointly_and_a_third_job_waits(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=8, gpus=["a100"] * 4):
        two = jobkit.remote(gpus=2)(helpers.hold_gpus)
        first, second = two.submit(2.0), two.submit(2.0)
        wait_for(lambda: first.running() and second.running())
        third = two.submit(0.1)
        time.sleep(0.5)
        assert third.state is JobState.QUEUED
        a = set(first.result(timeout=T)["CUDA_VISIBLE_DEVICES"].split(","))
        b = set(second.result(timeout=T)["CUDA_VISIBLE_DEVICES"].split(","))
        assert len(a) == len(b) == 2 and not a & b and a | b == {"0", "1", "2", "3"}
        third_result = third.result(timeout=T)
        assert len(third_result["CUDA_VISIBLE_DEVICES"].split(",")) == 2
        assert float(third_result["t"]) > float(first.result()["t"]) - 0.5
        assert third.info.started_at >= min(first.info.finished_at, second.info.finished_at) - 0.05  # type: ignore[operator]


def test_fractional_gpus_share_one_device_and_cpu_jobs_see_none(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=8, gpus=2):
        half = jobkit.remote(gpus=0.5)(helpers.env_of)
        jobs = [half.submit("CUDA_VISIBLE_DEVICES", "JOBKIT_GPU_FRACTION") for _ in range(2)]
        envs = [j.result(timeout=T) for j in jobs]
        assert {e["JOBKIT_GPU_FRACTION"] for e in envs} == {"0.5"}
        cpu_only = jobkit.submit(helpers.env_of, "CUDA_VISIBLE_DEVICES").result(timeout=T)
        assert cpu_only["CUDA_VISIBLE_DEVICES"] == ""
        with pytest.raises(jobkit.ConfigError, match="requests 3 GPUs but this machine has 2"):
            jobkit.remote(gpus=3)(helpers.square).submit(1)
        with pytest.raises(jobkit.ConfigError, match="type 'h100'"):
            jobkit.remote(gpus=1, gpu_type="h100")(helpers.square).submit(1)


def test_priority_order_then_fifo(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=1, max_jobs=1):
        blocker = jobkit.submit(helpers.sleep_then, 1.0)
        wait_for(blocker.running)
        order = []
        for priority, tag in [("low", "low"), ("normal", "n1"), ("high", "high"), ("normal", "n2")]:
            order.append(jobkit.remote(priority=priority, name=tag)(helpers.square).submit(1))
        for job in order:
            job.result(timeout=T)
        started = sorted(order, key=lambda j: j.info.started_at)
        assert [j.info.name for j in started] == ["high", "n1", "n2", "low"]


def test_fair_share_between_owners(tmp_path: Path) -> None:
    # Two slots: once alice holds one, bob (share 0) goes before alice's backlog.
    with local_env(tmp_path, cpus=2):
        blocker = jobkit.remote(cpus=2)(helpers.sleep_then).submit(1.0)
        wait_for(blocker.running)
        alice = jobkit.remote(labels={"owner": "alice"}, name="alice")(helpers.sleep_then)
        bob = jobkit.remote(labels={"owner": "bob"}, name="bob")(helpers.sleep_then)
        jobs = [alice.submit(0.3) for _ in range(4)] + [bob.submit(0.3)]
        for job in jobs:
            job.result(timeout=T)
        started = [j.info.name for j in sorted(jobs, key=lambda j: j.info.started_at)]
        assert started.index("bob") <= 1, started  # bob is not starved behind alice's sweep


def test_reattach_from_another_process_after_the_submitter_exited(
    local: Any, tmp_path: Path
) -> None:
    store = local.config.store
    script = textwrap.dedent(
        f"""
        import json, time, jobkit
        def slow(x):
            time.sleep(1.5)
            return {{"x": x, "from": "a process that exited"}}
        with jobkit.use(store={store!r}, local={{"cpus": 4, "idle_timeout": 10}}):
            job = jobkit.submit(slow, 5)
            print(json.dumps({{"id": job.id}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=T, check=True
    )
    job_id = json.loads(out.stdout)["id"]
    job = jobkit.get(job_id)
    assert isinstance(job, jobkit.Job)
    assert job.state in (JobState.PENDING, JobState.QUEUED, JobState.RUNNING)
    assert job.result(timeout=T) == {"x": 5, "from": "a process that exited"}


def test_concurrent_submitters_from_several_processes(local: Any) -> None:
    store = local.config.store
    script = textwrap.dedent(
        f"""
        import json, jobkit
        with jobkit.use(store={store!r}, local={{"cpus": 4, "idle_timeout": 10}}):
            jobs = [jobkit.submit(pow, i, 2) for i in range(8)]
            print(json.dumps([[j.id, j.result(timeout=60)] for j in jobs]))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ids = [job_id for batch in results for job_id, _ in batch]
    assert len(set(ids)) == 32
    assert all(value == i * i for batch in results for i, (_, value) in enumerate(batch))


def test_jobs_survive_the_agent_dying(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=2) as client:
        job = jobkit.submit(helpers.sleep_then, 1.5, "survived")
        wait_for(lambda: job.info.pid)  # the worker itself is up (not only claimed)
        backend = client.backend("local")
        agent_pid = int(backend.paths.lock.read_text())
        os.kill(agent_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(agent_pid))
        assert job.result(timeout=T) == "survived"  # the worker records its own outcome
        backend._reset()
        assert jobkit.submit(helpers.square, 3).result(timeout=T) == 9  # a new agent starts


def test_cancel_reaches_every_backend_even_if_one_fails(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    running = jobkit.submit(helpers.pid_and_sleep, str(marker), 60)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text()))
    orphan = JobRecord(id="jk-nowherebackend", name="x", backend="nowhere", created_at=time.time())
    local.store.create([orphan])
    with pytest.raises(jobkit.BackendError, match=r"nowhere \(jk-nowherebackend\)"):
        local.cancel(["jk-nowherebackend", running.id])
    assert running.cancelled()
    wait_for(lambda: not pid_alive(pid), timeout=15)  # the local job was still killed
    assert local.store.get(orphan.id).state is JobState.CANCELLED


def test_spawn_start_method_runs_the_worker_module(tmp_path: Path) -> None:
    """`spawn` execs `python -m jobkit.worker` per job (the default off Linux)."""
    with local_env(tmp_path, cpus=2, start_method="spawn"):
        job = jobkit.submit(helpers.env_of, "JOBKIT_JOB_ID")
        assert job.result(timeout=T) == {"JOBKIT_JOB_ID": job.id}
        with pytest.raises(helpers.CustomError):
            jobkit.submit(helpers.fail_with, 3).result(timeout=T)
        slow = jobkit.remote(time="1s")(helpers.sleep_then).submit(30)
        with pytest.raises(jobkit.JobFailedError, match="TIMEOUT"):
            slow.result(timeout=T)


def test_retries_rerun_a_failing_job(local: Any, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    def flaky(path: str) -> int:
        from pathlib import Path

        attempts = int(Path(path).read_text()) + 1 if os.path.exists(path) else 1
        with open(path, "w") as handle:
            handle.write(str(attempts))
        if attempts < 3:
            raise RuntimeError(f"attempt {attempts} fails")
        return attempts

    job = jobkit.remote(retries=2, retry_on={"ERROR"})(flaky).submit(str(counter))
    assert job.result(timeout=T) == 3
    assert job.info.attempt == 2 and job.state is JobState.SUCCEEDED

    always = jobkit.remote(retries=1, retry_on={helpers.CustomError})(helpers.fail_with).submit(5)
    with pytest.raises(helpers.CustomError):
        always.result(timeout=T)
    assert always.info.attempt == 1
    assert "retrying" in always.logs(stream="stderr")


def test_retries_apply_to_time_limits_too(local: Any) -> None:
    slow = jobkit.remote(time="1s", retries=1, retry_on={"TIMEOUT"})(helpers.sleep_then).submit(30)
    with pytest.raises(jobkit.JobFailedError, match="TIMEOUT"):
        slow.result(timeout=T)
    assert slow.info.attempt == 1
