"""Retries by failure class on the local backend, and the history they leave:
``job.info.attempts`` and ``jobkit status`` (the real CLI, in a subprocess).

The generic cases (LOST retried, ERROR not, retry_on an exception class, OOM
with doubled memory) run on every backend in tests/conformance; here are the
local agent's memory growth up to ``mem_max`` and what the CLI shows of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import allocate, kill_self_once, sleep_then

import jobkit
from conftest import local_env, slurm_env, wait_for
from jobkit.states import JobState

T = 120
MiB = 2**20


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_env(tmp_path_factory.mktemp("retries"), cpus=4) as client:
        yield client


def cli(client: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", client.store.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_oom_retries_grow_memory_up_to_mem_max_and_status_shows_each_attempt(
    local: Any,
) -> None:
    """192 MiB, growing x1.5 capped at 300 MiB: attempts ask 192, 288, 300 MiB;
    the function holds ~400 MiB, so every attempt is killed OOM and the last one
    ends FAILED/OOM with the two earlier attempts in its history."""
    grow = jobkit.remote(mem=192 * MiB, mem_growth=1.5, mem_max=300 * MiB, retries=2)
    job = grow(allocate).submit(400 * MiB, 5.0)
    with pytest.raises(jobkit.JobFailedError, match="OOM"):
        job.result(timeout=T)
    info = job.info
    assert info.state is JobState.FAILED and info.attempt == 2
    assert [a["mem"] for a in info.attempts] == [192 * MiB, 288 * MiB]
    assert [a["reason"] for a in info.attempts] == ["OOM", "OOM"]
    assert [a["attempt"] for a in info.attempts] == [0, 1]
    assert info.resources["mem"] == 300 * MiB  # capped at mem_max
    assert all(a["host"] and a["started_at"] and a["ended_at"] for a in info.attempts)

    shown = cli(local, "status", job.id)
    assert shown.returncode == 0, shown.stderr
    assert "ATTEMPT" in shown.stdout and "ENDED AS" in shown.stdout
    history = shown.stdout[shown.stdout.index("ATTEMPT") :].splitlines()[1:]
    assert [line.split()[:2] for line in history] == [["0", "OOM"], ["1", "OOM"], ["2", "FAILED"]]
    assert "192MiB" in history[0] and "288MiB" in history[1] and "300MiB" in history[2]

    as_json = cli(local, "status", job.id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert [a["mem"] for a in record["attempts"]] == [192 * MiB, 288 * MiB]
    assert record["resources"]["mem"] == 300 * MiB and record["failure_reason"] == "OOM"


def test_a_lost_attempt_shows_in_status_and_a_job_without_retries_shows_no_history(
    local: Any, tmp_path: Path
) -> None:
    job = jobkit.remote(retries=1)(kill_self_once).submit(str(tmp_path / "killed"))
    assert job.result(timeout=T) == "survived"
    shown = cli(local, "status", job.id)
    assert shown.returncode == 0, shown.stderr
    history = shown.stdout[shown.stdout.index("ATTEMPT") :].splitlines()[1:]
    assert [line.split()[:2] for line in history] == [["0", "LOST"], ["1", "SUCCEEDED"]]
    assert "SIGKILL" in history[0]

    plain = jobkit.submit(abs, -3)
    assert plain.result(timeout=T) == 3
    shown = cli(local, "status", plain.id)
    assert shown.returncode == 0 and "ATTEMPT" not in shown.stdout
    record = json.loads(cli(local, "status", plain.id, "--json").stdout)
    assert record["attempts"] == [] and record["attempt"] == 0


def test_mem_growth_without_mem_is_one_cli_style_line_and_nothing_is_stored(local: Any) -> None:
    before = len(jobkit.jobs(limit=10_000))
    with pytest.raises(jobkit.ConfigError) as caught:
        jobkit.remote(mem_growth=2.0, retries=1)(abs).submit(-1)
    message = str(caught.value)
    assert "\n" not in message and "mem_growth=2" in message and "mem=" in message
    assert len(jobkit.jobs(limit=10_000)) == before


_SUBMIT_AND_EXIT = """
import sys
import jobkit
from helpers import kill_self_once

with jobkit.use(store=sys.argv[1], backend="slurm"):
    job = jobkit.remote(retries=1)(kill_self_once).submit(sys.argv[2])
    print(job.id)
"""


def test_a_lost_slurm_job_is_resubmitted_by_the_cli_after_its_submitter_exited(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """Nobody watches the job: its submitter exits at once.  The attempt is
    killed on the node; the next ``jobkit status`` (a fresh process) notices,
    requeues it and resubmits it to Slurm (a new Slurm job), and a later one
    sees it SUCCEEDED with the lost attempt in its history."""
    url = f"sqlite:///{tmp_path}/jobkit.db"
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    submitted = subprocess.run(
        [sys.executable, "-c", _SUBMIT_AND_EXIT, url, str(tmp_path / "killed")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=here,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[-1]

    def status() -> dict[str, Any]:
        shown = subprocess.run(
            [sys.executable, "-m", "jobkit", "--store", url, "status", job_id, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        record: dict[str, Any] = json.loads(shown.stdout)
        return record

    deadline = time.monotonic() + T
    record = status()
    while record["state"] != "SUCCEEDED" and time.monotonic() < deadline:
        assert record["state"] != "FAILED", record
        time.sleep(1.0)
        record = status()
    assert record["state"] == "SUCCEEDED" and record["attempt"] == 1
    (first,) = record["attempts"]
    assert first["reason"] == "LOST" and first["backend_id"] != record["backend_id"]
    assert "resubmit" not in record["extra"]


def test_a_slurm_requeue_of_a_running_job_is_kept_as_a_preempted_attempt(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """``scontrol requeue`` (what preemption in REQUEUE mode does): Slurm kills
    the running attempt and runs the job again itself; the reconciler records
    the attempt that ended as PREEMPTED, and the job succeeds as attempt 1."""
    with slurm_env(tmp_path) as client:
        job = jobkit.submit(sleep_then, 6, "done")
        wait_for(lambda: job.info.state is JobState.RUNNING, timeout=T)
        time.sleep(1.0)
        subprocess.run(["scontrol", "requeue", str(job.info.backend_id)], check=True, timeout=30)

        def ended() -> bool:
            client.reconcile([job.info])  # what a monitor or `jobkit status` does
            return job.info.is_terminal

        wait_for(ended, timeout=T, interval=1.0)
        assert job.result(timeout=T) == "done"
        info = job.info
        assert info.state is JobState.SUCCEEDED and info.attempt == 1
        (first,) = info.attempts
        assert first["reason"] == "PREEMPTED" and "requeued it" in first["message"]
        assert first["backend_id"] == info.backend_id  # the same Slurm job, run again
