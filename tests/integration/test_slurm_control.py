"""The Slurm backend when the cluster misbehaves: the controller restarts
under running jobs, is unreachable at submit time, or runs without
accounting.  These tests restart daemons of the real test cluster and leave
it as they found it (running, accounting on)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import helpers
import pytest

import jobkit
from conftest import slurm_env, wait_for
from jobkit.states import FailureReason, JobRecord, JobState

T = 120
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "backends" / "slurm" / "cluster.sh"


def cluster(*args: str, **env: str) -> None:
    subprocess.run(
        ["bash", str(CLUSTER), *args],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
        timeout=180,
    )


def controller_up() -> bool:
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "UP" in ping.stdout


@pytest.fixture
def restored(slurm_cluster: str) -> Iterator[Path]:
    """Give the cluster back running, with accounting, whatever the test did."""
    run_dir = Path(slurm_cluster).parent.parent / "run"
    try:
        yield run_dir
    finally:
        cluster("start", JOBKIT_SLURM_ACCOUNTING="1")


def test_controller_restart_and_unreachable_controller(restored: Path, tmp_path: Path) -> None:
    with slurm_env(tmp_path) as client:
        job = jobkit.submit(helpers.sleep_then, 25, "survived")
        wait_for(lambda: job.info.pid)
        pid = int((restored / "slurmctld.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not controller_up(), timeout=60, interval=0.5)

        # Submitting now fails in one line, is recorded as such, and loses nothing.
        with pytest.raises(jobkit.SubmitError, match=r"(?i)unable to contact slurm controller"):
            jobkit.submit(helpers.square, 3)
        failed = jobkit.jobs(state="FAILED", limit=1)[0].info
        assert failed.failure_reason is FailureReason.SUBMIT_ERROR and "\n" not in failed.message
        assert job.state is JobState.RUNNING  # reconcile errors do not touch the record
        with pytest.raises(jobkit.BackendError, match="squeue"):
            client.backend("slurm").observe([job.info])

        cluster("start")
        assert job.result(timeout=T) == "survived"
        assert jobkit.submit(helpers.square, 4).result(timeout=T) == 16


def test_accounting_disabled_mode(restored: Path, tmp_path: Path) -> None:
    cluster("start", JOBKIT_SLURM_ACCOUNTING="0")
    with slurm_env(tmp_path) as client:
        assert jobkit.submit(helpers.square, 5).result(timeout=T) == 25

        def vanish() -> None:
            os._exit(0)  # ends without an outcome: only Slurm knows what happened

        lost = jobkit.submit(vanish)
        with pytest.raises(jobkit.JobFailedError, match="worker recorded no outcome"):
            lost.result(timeout=T)
        assert lost.info.failure_reason is FailureReason.LOST

        # A job the controller has forgotten: sacct cannot help, squeue-only mode decides.
        backend = client.backend("slurm")
        ghost = JobRecord(
            id="jk-ghostslurmjob1",
            name="ghost",
            backend="slurm",
            state=JobState.QUEUED,
            backend_id="999999",
            created_at=time.time(),
        )
        client.store.create([ghost])
        client.reconcile([ghost])
        assert backend._accounting is False
        record = client.store.get(ghost.id)
        assert record.state is JobState.FAILED and "accounting is disabled" in (
            record.message or ""
        )
