"""Issue 9, item 13: a job's numeric thread pools follow its cpus, on every backend.

Real local jobs (agent + forked workers) and real Slurm jobs report the
thread variables they ran with; a real numpy job reports its BLAS pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env, wait_for
from jobkit.threadlimits import THREAD_VARIABLES, limit_threads, threads_for

T = 60


def test_whole_threads_from_cpus() -> None:
    assert [threads_for(c) for c in (0.25, 1, 2.5, 3, "4", None)] == [1, 1, 2, 3, 4, 1]
    env = {"MKL_NUM_THREADS": "7"}
    added = limit_threads(2, env)
    assert env["MKL_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in added
    assert {env[name] for name in THREAD_VARIABLES if name != "MKL_NUM_THREADS"} == {"2"}


@pytest.mark.parametrize("cpus", [1, 3])
def test_local_job_threads_follow_its_cpus(local: Any, cpus: int) -> None:
    env = jobkit.remote(cpus=cpus)(helpers.thread_env).submit().result(timeout=T)
    assert env == dict.fromkeys(THREAD_VARIABLES, str(cpus))


def test_spawned_worker_sets_them_too(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=4, start_method="spawn"):
        env = jobkit.remote(cpus=2)(helpers.thread_env).submit().result(timeout=T)
    assert env == dict.fromkeys(THREAD_VARIABLES, "2")


def test_fractional_cpus_get_one_thread(local: Any) -> None:
    env = jobkit.remote(cpus=0.5)(helpers.thread_env).submit().result(timeout=T)
    assert env == dict.fromkeys(THREAD_VARIABLES, "1")


def test_the_users_own_setting_is_kept(local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    job_env = {"OMP_NUM_THREADS": "2"}
    env = jobkit.remote(cpus=1, env=job_env)(helpers.thread_env).submit().result(timeout=T)
    assert env == {**dict.fromkeys(THREAD_VARIABLES, "1"), "OMP_NUM_THREADS": "2"}
    # Set in the submitter's environment, which local jobs run with: kept too.
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    env = jobkit.remote(cpus=1)(helpers.thread_env).submit().result(timeout=T)
    assert env == {**dict.fromkeys(THREAD_VARIABLES, "1"), "MKL_NUM_THREADS": "4"}


def test_numpy_blas_pool_is_limited_to_the_jobs_cpus(local: Any) -> None:
    pytest.importorskip("threadpoolctl", reason="threadpoolctl is in the dev extra")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: a limit of one thread is the default anyway")
    pools = jobkit.remote(cpus=1)(helpers.blas_pools).submit().result(timeout=T)
    assert pools, "numpy loaded no BLAS/OpenMP thread pool"
    assert {threads for _, threads in pools} == {1}, pools


def test_slurm_job_threads_follow_cpus_per_task(slurm: Any) -> None:
    env = jobkit.remote(backend="slurm", cpus=3)(helpers.thread_env).submit().result(timeout=120)
    assert env == dict.fromkeys(THREAD_VARIABLES, "3")


def test_slurm_multi_task_ranks_each_get_cpus_per_task(slurm: Any) -> None:
    remote = jobkit.remote(backend="slurm", cpus=2, tasks_per_node=2)
    job = remote(helpers.thread_env).submit()
    assert job.result(timeout=120) == dict.fromkeys(THREAD_VARIABLES, "2")
    rank1 = Path(job.info.extra["stdout"].replace("_0_log", "_1_log"))
    expected = "threads=" + ",".join(f"{n}=2" for n in THREAD_VARIABLES)
    wait_for(lambda: rank1.exists() and expected in rank1.read_text(), timeout=120)
