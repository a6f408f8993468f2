"""Issue 9, item 5: a running local agent takes the machine settings of the
latest submitter (``[local]`` cpus, mem, gpus, max_jobs).

Each test starts a real agent from one client, then submits from a second
client on the same store with other settings while that agent is alive: the
agent reloads them in place, jobs running across the change finish and record
their results, and a request the new settings cannot hold fails at submit.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env, wait_for
from jobkit.states import FailureReason, JobState

T = 60


def agent_pid(client: Any) -> int:
    return int(client.backend("local").paths.lock.read_text())


def test_gpus_declared_while_an_agent_runs_reach_it(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=2, gpus=0) as first:
        assert jobkit.submit(helpers.square, 3).result(timeout=T) == 9  # agent up, 0 GPUs
        pid = agent_pid(first)
        with local_env(tmp_path, cpus=2, gpus=["a100", "a100"]) as second:
            job = jobkit.remote(gpus=1)(helpers.env_of).submit("CUDA_VISIBLE_DEVICES")
            assert job.result(timeout=T) == {"CUDA_VISIBLE_DEVICES": "0"}
            assert agent_pid(second) == pid  # reloaded in place, not replaced
            before = len(second.store.query())
            with pytest.raises(jobkit.ConfigError, match="requests 3 GPUs but this machine has 2"):
                jobkit.remote(gpus=3)(helpers.square).submit(1)
            assert len(second.store.query()) == before  # nothing recorded, nothing PENDING
            log = second.backend("local").paths.log.read_text()
            assert "machine settings changed by client pid" in log
            assert "latest submitter's settings apply" in log


@pytest.mark.parametrize(
    ("old", "new", "cpus"),
    [
        ({"cpus": 1}, {"cpus": 4}, 3),  # stale: "requests 3 cpus but this machine offers 1"
        ({"cpus": 4, "max_jobs": 1}, {"cpus": 4, "max_jobs": 2}, 1),  # stale: waits
    ],
    ids=["cpus", "max_jobs"],
)
def test_cpus_and_max_jobs_change_while_a_job_runs(
    tmp_path: Path, old: dict[str, Any], new: dict[str, Any], cpus: int
) -> None:
    marker = tmp_path / "released"
    with local_env(tmp_path, **old):
        running = jobkit.submit(helpers.wait_for_file, str(marker), 20)
        wait_for(running.running)
        with local_env(tmp_path, **new):
            # Runs beside the first job only under the new settings, and releases it.
            releaser = jobkit.remote(cpus=cpus)(helpers.touch).submit(str(marker))
            assert releaser.result(timeout=T) == str(marker)
            assert running.result(timeout=T) is True  # ran across the change, recorded
            assert running.info.state is JobState.SUCCEEDED


def test_a_queued_job_that_no_longer_fits_fails_with_the_reason(tmp_path: Path) -> None:
    marker = tmp_path / "released"
    with local_env(tmp_path, cpus=2, max_jobs=1):
        blocker = jobkit.submit(helpers.wait_for_file, str(marker), 30)
        wait_for(blocker.running)
        queued = jobkit.remote(cpus=2)(helpers.square).submit(4)
        wait_for(lambda: queued.state is JobState.QUEUED)
        with local_env(tmp_path, cpus=1):
            later = jobkit.submit(helpers.square, 5)
            with pytest.raises(jobkit.JobFailedError, match="machine settings changed by client"):
                queued.result(timeout=T)
            assert queued.info.failure_reason is FailureReason.SUBMIT_ERROR
            assert "requests 2 cpus but this machine offers 1" in (queued.info.message or "")
            helpers.touch(str(marker))
            assert blocker.result(timeout=T) is True
            assert later.result(timeout=T) == 25


def test_settings_sent_before_a_job_are_read_before_it_is_judged(tmp_path: Path) -> None:
    """The agent may find a new job in the store (its periodic rescan) before it
    has read the submitter's settings from the socket: it reads them first."""
    with local_env(tmp_path, cpus=2, gpus=0) as first:
        assert jobkit.submit(helpers.square, 2).result(timeout=T) == 4
        pid = agent_pid(first)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1.2)  # past the agent's rescan interval: it rescans first on waking
            with local_env(tmp_path, cpus=2, gpus=["a100"]):
                job = jobkit.remote(gpus=1)(helpers.env_of).submit("CUDA_VISIBLE_DEVICES")
                os.kill(pid, signal.SIGCONT)
                assert job.result(timeout=T) == {"CUDA_VISIBLE_DEVICES": "0"}
        finally:
            os.kill(pid, signal.SIGCONT)
