"""What only the Slurm backend does, against a real single-node Slurm cluster
(backends/slurm/cluster.sh): submitit submits, the jobkit worker runs in the
Slurm job, squeue/sacct reconcile what the worker cannot record.  Here: sbatch
arrays and their limits, resources as Slurm's environment, GPUs, sbatch's
refusals, scancel from outside, QOS, multi-task ranks, checkpoint requeue.
What every backend does (result, exception, cancel, logs, reattach, time limit,
retries) is in tests/conformance/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import slurm_env, wait_for
from jobkit.states import FailureReason, JobState

T = 120


def slurm_ids(jobs: Any) -> set[str]:
    return {j.info.backend_id.split("_")[0] for j in jobs}


def test_map_of_200_is_one_sbatch_array(slurm: Any) -> None:
    jobs = jobkit.map(helpers.square, range(200))
    assert len(slurm_ids(jobs)) == 1  # one sbatch call, one array
    assert {j.info.backend_id.split("_")[1] for j in jobs} == {str(i) for i in range(200)}
    assert jobs.results(timeout=300, progress=False) == [i * i for i in range(200)]


def test_arrays_above_max_array_size_are_split(slurm: Any) -> None:
    backend = slurm.backend("slurm")
    assert backend.max_array_size() == 1001  # read from the real cluster's config
    backend._max_array = 5  # pretend a small limit, to split without 1,000 jobs
    try:
        jobs = jobkit.map(helpers.square, range(12))
    finally:
        backend._max_array = None
    assert len(slurm_ids(jobs)) == 3  # 5 + 5 + 2
    assert jobs.results(timeout=T, progress=False) == [i * i for i in range(12)]


def test_a_rerun_keeps_max_array_size_windows_and_runs_exact_task_ids(
    slurm: Any, tmp_path: Path
) -> None:
    """Items 1, 7 and 11 of a map split 5 + 5 + 2: one array per window they
    fall in, each over exactly its task ids (item - the window's offset)."""
    backend = slurm.backend("slurm")
    for i in set(range(12)) - {1, 7, 11}:
        (tmp_path / str(i)).touch()
    backend._max_array = 5
    try:
        jobs = jobkit.map(helpers.needs_marker, [str(tmp_path)] * 12, range(12))
        jobs.wait(timeout=T, progress=False)
        for i in (1, 7, 11):
            (tmp_path / str(i)).touch()
        again = jobs.retry_failed()
    finally:
        backend._max_array = None
    assert again.results(timeout=T, progress=False) == [i * i for i in range(12)]
    tasks = [again[i].info.backend_id.split("_") for i in (1, 7, 11)]
    assert [task for _, task in tasks] == ["1", "2", "1"]  # 1 - 0, 7 - 5, 11 - 10
    assert len({array for array, _ in tasks}) == 3
    assert not {array for array, _ in tasks} & slurm_ids(jobs[:1])


def test_a_rerun_through_submitits_runtime_runs_exact_task_ids(slurm: Any, tmp_path: Path) -> None:
    """Multi-task jobs run through submitit's pickles: a rerun's pickles are
    found by the rerun task ids too."""
    for i in (0, 2):
        (tmp_path / str(i)).touch()
    ranks = jobkit.remote(tasks_per_node=2, cpus=1)(helpers.needs_marker)
    jobs = ranks.map([str(tmp_path)] * 4, range(4))
    jobs.wait(timeout=T, progress=False)
    assert [j.info.state for j in jobs][1::2] == [JobState.FAILED, JobState.FAILED]
    (tmp_path / "1").touch()
    (tmp_path / "3").touch()
    again = jobs.retry_failed()
    assert again.results(timeout=T, progress=False) == [0, 1, 4, 9]
    assert [again[i].info.backend_id.split("_")[1] for i in (1, 3)] == ["1", "3"]


def test_a_rerun_whose_submitter_died_after_sbatch_is_found_by_its_own_mark(
    slurm: Any, tmp_path: Path
) -> None:
    """The rerun's sbatch ran, its submitter died before recording the Slurm id:
    the reconciler finds the NEW array task by the rerun's tagged mark, not the
    ended attempt's task that Slurm still lists under the plain mark."""
    from jobkit.rerun import reopen
    from jobkit.resources import Resources

    (tmp_path / "0").touch()
    jobs = jobkit.map(helpers.needs_marker, [str(tmp_path)] * 2, range(2))
    jobs.wait(timeout=T, progress=False)
    old = jobs[1].info
    assert old.state is JobState.FAILED
    (tmp_path / "1").touch()
    (reopened,) = reopen(slurm.store, [old])
    slurm.backend("slurm").submit([reopened], Resources.from_record(reopened.resources))
    gone = subprocess.Popen(["true"])
    gone.wait()
    who = {**reopened.extra["submitter"], "pid": gone.pid}
    slurm.store.update(reopened.id, extra={**reopened.extra, "submitter": who})
    slurm.reconcile([slurm.store.get(reopened.id)])
    found = slurm.store.get(reopened.id)
    assert found.backend_id is not None and found.backend_id != old.backend_id
    assert found.backend_id.endswith("_1") and found.state is not JobState.FAILED
    assert jobkit.get(reopened.id).result(timeout=T) == 1


def test_logs_and_resources_reach_the_job(slurm: Any) -> None:
    @jobkit.remote(backend="slurm", cpus=2, mem="300MB", env={"GREETING": "hello"})
    def report() -> dict[str, str | None]:
        print("printed inside slurm", flush=True)
        return {
            k: os.environ.get(k) for k in ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "GREETING")
        }

    job = report.submit()
    assert job.result(timeout=T) == {
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_MEM_PER_NODE": "287",
        "GREETING": "hello",
    }
    assert "printed inside slurm" in job.logs()


def test_gpu_jobs_get_disjoint_devices_and_impossible_requests_fail(slurm: Any) -> None:
    two = jobkit.remote(backend="slurm", gpus=2, gpu_type="a100")(helpers.hold_gpus)
    first, second = two.submit(3.0), two.submit(3.0)
    a = set(first.result(timeout=T)["CUDA_VISIBLE_DEVICES"].split(","))
    b = set(second.result(timeout=T)["CUDA_VISIBLE_DEVICES"].split(","))
    assert len(a) == len(b) == 2 and not a & b
    with pytest.raises(jobkit.SubmitError, match="Requested node configuration is not available"):
        jobkit.remote(backend="slurm", gpus=5)(helpers.square).submit(1)
    failed = jobkit.jobs(state="FAILED", limit=1)[0]
    assert failed.info.failure_reason is FailureReason.SUBMIT_ERROR
    assert "\n" not in (failed.info.message or "")


def test_rejected_submissions_are_submit_errors(slurm: Any) -> None:
    with pytest.raises(jobkit.SubmitError, match=r"(?i)invalid partition"):
        jobkit.remote(backend="slurm", queue="nosuchpartition")(helpers.square).submit(1)
    with pytest.raises(jobkit.SubmitError, match=r"(?i)account"):
        jobkit.remote(backend="slurm", slurm={"account": "nosuchaccount"})(helpers.square).submit(1)
    with pytest.raises(jobkit.ConfigError, match="whole GPUs"):
        jobkit.remote(backend="slurm", gpus=0.5)(helpers.square).submit(1)
    with pytest.raises(jobkit.ConfigError, match="unknown slurm option 'acount'"):
        jobkit.remote(backend="slurm", slurm={"acount": "x"})(helpers.square).submit(1)


def test_scancel_from_outside_is_reconciled(slurm: Any) -> None:
    job = jobkit.submit(helpers.sleep_then, 120)
    wait_for(job.running)
    subprocess.run(["scancel", job.info.backend_id], check=True)
    wait_for(lambda: job.state is JobState.CANCELLED, timeout=30)
    assert job.cancelled()


def test_priority_maps_to_qos(slurm: Any) -> None:
    job = jobkit.remote(backend="slurm", priority="high")(helpers.square).submit(2)
    assert job.result(timeout=T) == 4
    out = subprocess.run(  # squeue: sacct lags a moment behind the controller
        ["squeue", "--me", "-h", "-t", "all", "-o", "%q", "-j", job.info.backend_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "high"
    assert job.info.native_state in (None, "RUNNING", "COMPLETED", "PENDING", "COMPLETING")


def test_multi_task_ranks(slurm: Any) -> None:
    def ranks() -> dict[str, Any]:
        import jobkit

        e = jobkit.env()
        return {
            "rank": e.rank,
            "world": e.world_size,
            "local": e.local_rank,
            "master": e.master_addr,
            "torch": e.torch_env(),
        }

    job = jobkit.remote(backend="slurm", tasks_per_node=2)(ranks).submit()
    result = job.result(timeout=T)
    assert result["rank"] == 0 and result["world"] == 2 and result["local"] == 0
    assert result["torch"]["WORLD_SIZE"] == "2" and result["master"]
    rank1 = Path(job.info.extra["stdout"].replace("_0_log", "_1_log"))
    # Rank 0 records the result; rank 1 may still be flushing its log when it arrives.
    wait_for(lambda: rank1.exists() and "global_rank=1" in rank1.read_text(), timeout=T)


def test_reconcile_is_one_query_per_cycle_whatever_the_number(slurm: Any) -> None:
    from jobkit.backends.slurm.backend import SlurmBackend

    # Its own counter: the client's monitor observes too.
    probe = SlurmBackend(SlurmBackend.settings_from(slurm.config), slurm.backend("slurm").services)
    jobs = jobkit.map(helpers.sleep_then, [30] * 40)
    seen = probe.observe([j.info for j in jobs])
    assert probe.queries_made == 1  # squeue only: every job is still in the queue
    assert set(seen) == {j.id for j in jobs}
    jobs.cancel()


class Counter(jobkit.Checkpointable):
    """Counts slowly; its progress survives a requeue through checkpoint()."""

    def __init__(self) -> None:
        self.done = 0
        self.attempts = 0

    def __call__(self, target: int) -> dict[str, int]:
        self.attempts += 1
        while self.done < target:
            time.sleep(0.2)
            self.done += 1
        return {"done": self.done, "attempts": self.attempts}


def test_checkpointed_job_is_requeued_and_resumes(slurm: Any) -> None:
    job = jobkit.remote(backend="slurm", time="1m")(Counter()).submit(40)
    wait_for(job.running)
    time.sleep(2)  # some progress to keep
    subprocess.run(["scancel", "--signal=USR2", job.info.backend_id], check=True)
    result = job.result(timeout=T)
    assert result["done"] == 40 and result["attempts"] == 2
    assert job.info.attempt == 1
    (first,) = job.info.attempts  # the ended attempt, kept in the history
    assert first["reason"] == "CHECKPOINTED" and "checkpoint" in first["message"]


def test_cli_in_a_fresh_shell_reconciles_what_no_one_watched(slurm: Any) -> None:
    script = textwrap.dedent(
        f"""
        import json, jobkit, time
        def slow():
            time.sleep(120)
        with jobkit.use(store={slurm.config.store!r}, backend="slurm"):
            job = jobkit.submit(slow)
            while job.info.backend_id is None:
                time.sleep(0.05)
            print(json.dumps([job.id, job.info.backend_id]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    job_id, slurm_id = json.loads(out.stdout)
    subprocess.run(["scancel", slurm_id], check=True)  # nobody watches this job now

    def cli_state() -> str:
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobkit",
                "--store",
                slurm.config.store,
                "status",
                job_id,
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return str(json.loads(shown)["state"])

    wait_for(lambda: cli_state() == "CANCELLED", timeout=30, interval=0.5)


def test_array_concurrency_cap_reaches_sbatch(slurm_cluster: str, tmp_path: Path) -> None:
    with slurm_env(tmp_path, array_parallelism=3) as client:
        jobs = jobkit.map(helpers.square, range(12))
        (array,) = slurm_ids(jobs)
        script = (client.backend("slurm").folder / f"{array}_submission.sh").read_text()
        assert "#SBATCH --array=0-11%3" in script
        assert jobs.results(timeout=T, progress=False) == [i * i for i in range(12)]
