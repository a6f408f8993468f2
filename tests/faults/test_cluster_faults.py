"""What the cluster around jobkit does wrong, in the middle of a map.

- slurmctld restarts (SIGTERM, then ``cluster.sh start``) while jobs run and
  while a map is being submitted (the real test cluster);
- the Kubernetes watches drop and the next resume answers 410 Expired (the
  emulator), and the backend lists again;
- S3 answers 503 SlowDown and resets connections for 10 s (a gate in front
  of moto) while local jobs record their ends in the bucket.

Ground truth is read around jobkit: the marker files job functions write,
the raw SQLite rows or the S3 record objects, ``sacct``, the emulator's
object and request lists.  Each scenario prints one line of figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
from conftest import slurm_env, wait_for
from jobkit_testing.faults.cluster import (
    TERMINAL,
    FlakyGate,
    count,
    executions,
    mark,
    raw_rows,
    s3_rows,
    wait_or_stall,
)
from jobkit_testing.k8s_emulator.clients import NAMESPACE, on_kubernetes

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "backends" / "slurm" / "cluster.sh"
SETTLE = 180.0  # a wait bound, not a pass/fail timing


def assert_once_each(ran: dict[int, int] | Any, items: int) -> None:
    twice = sorted(i for i, n in ran.items() if n > 1)
    assert not twice, f"items ran twice: {twice}"
    assert sorted(ran) == list(range(items)), f"never ran: {sorted(set(range(items)) - set(ran))}"


# -- Slurm: the controller restarts ------------------------------------------------------


def controller_up() -> bool:
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "UP" in ping.stdout


@pytest.fixture
def run_dir(slurm_cluster: str) -> Iterator[Path]:
    """The cluster's run directory; the cluster is given back running whatever happened."""
    try:
        yield Path(slurm_cluster).parent.parent / "run"
    finally:
        subprocess.run(
            ["bash", str(CLUSTER), "start"], check=True, capture_output=True, timeout=180
        )


def stop_controller(run: Path) -> None:
    os.kill(int((run / "slurmctld.pid").read_text()), signal.SIGTERM)
    wait_for(lambda: not controller_up(), timeout=60, interval=0.2)


def start_controller() -> None:
    subprocess.run(["bash", str(CLUSTER), "start"], check=True, capture_output=True, timeout=180)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slurmctld_restart_while_jobs_run(run_dir: Path, tmp_path: Path) -> None:
    items, markers, db = 24, tmp_path / "markers", tmp_path / "jobkit.db"
    markers.mkdir()
    with slurm_env(tmp_path):
        array = jobkit.map(mark, [str(markers)] * items, range(items), [4.0] * items)
        wait_for(lambda: any(r.state == "RUNNING" for r in raw_rows(db)), timeout=120)
        running = sum(r.state == "RUNNING" for r in raw_rows(db))
        stop_controller(run_dir)
        time.sleep(3)  # jobs go on without their controller
        start_controller()
        fault_at = time.monotonic()
        settled = array.wait(timeout=SETTLE, progress=False)
        settle_s = time.monotonic() - fault_at if settled else None
    ran = executions(markers)
    result = count(
        "slurmctld restart, jobs running",
        "slurm",
        items,
        raw_rows(db),
        ran,
        settle_s=settle_s,
        running_at_fault=running,
    )
    result.report()
    assert_once_each(ran, items)
    assert result.succeeded == items and result.stuck == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slurmctld_down_while_a_map_is_submitted(run_dir: Path, tmp_path: Path) -> None:
    """The controller goes away as soon as the map's records are committed: sbatch
    either got through (every job runs once after the restart) or the submission
    fails in one line and every record says so; nothing runs in either case twice."""
    items, markers, db = 50, tmp_path / "markers", tmp_path / "jobkit.db"
    markers.mkdir()

    stopped = threading.Event()

    def stop_once_recorded() -> None:
        wait_for(lambda: raw_rows(db), timeout=120, interval=0.002)
        stop_controller(run_dir)
        stopped.set()

    stopper = threading.Thread(target=stop_once_recorded)
    stopper.start()
    error: jobkit.SubmitError | None = None
    with slurm_env(tmp_path):
        try:
            array = jobkit.map(mark, [str(markers)] * items, range(items), [0.0] * items)
        except jobkit.SubmitError as exc:
            error = exc
        stopper.join()
        assert stopped.is_set(), "the controller was never stopped: the scenario did not happen"
        start_controller()
        fault_at = time.monotonic()
        if error is None:
            settled = array.wait(timeout=SETTLE, progress=False)
        else:
            settled = wait_for(
                lambda: all(r.state == "FAILED" for r in raw_rows(db)), timeout=SETTLE
            )
        settle_s = time.monotonic() - fault_at if settled else None
    rows = raw_rows(db)
    ran = executions(markers)
    result = count(
        "slurmctld down during submit",
        "slurm",
        items,
        rows,
        ran,
        settle_s=settle_s,
        submit_error=str(error) if error else None,
    )
    result.report()
    assert result.duplicated == 0 and result.stuck == 0 and result.lost == 0
    if error is not None:
        assert "\n" not in str(error) and "slurm" in str(error).lower()
        assert all(r.reason == "SUBMIT_ERROR" and "\n" not in (r.message or "") for r in rows)
        assert not ran  # nothing reached Slurm, nothing ran
    else:
        assert_once_each(ran, items)
        assert result.succeeded == items


# -- Kubernetes: watches drop and expire ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kubernetes_watch_dropped_and_expired_mid_map(
    k8s_emulator: Any, k8s_controller: Any, tmp_path: Path
) -> None:
    items, markers, db = 60, tmp_path / "markers", tmp_path / "jobkit.db"
    markers.mkdir()
    store = f"sqlite:///{db}"
    with on_kubernetes(k8s_emulator, store, array_parallelism=6) as client:
        array = jobkit.map(mark, [str(markers)] * items, range(items), [0.3] * items)
        backend = client.backend("kubernetes")
        wait_for(lambda: backend._watch is not None and backend._watch.synced(0), timeout=60)
        lists_before = len(k8s_emulator.requests(verb="list"))
        relists_before = backend._watch.relists
        wait_for(lambda: len(executions(markers)) >= 10, timeout=120)
        k8s_emulator.drop_watches(abort=True)  # connections reset mid-stream
        k8s_emulator.put(  # the cluster moves on while the watches are away...
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bump", "namespace": NAMESPACE},
                "data": {"a": "1"},
            }
        )
        k8s_emulator.compact()  # ...and etcd compacts: resuming answers 410 Expired
        wait_for(lambda: len(executions(markers)) >= 30, timeout=120)
        k8s_emulator.drop_watches()  # a clean end of stream this time
        fault_at = time.monotonic()
        settled = array.wait(timeout=SETTLE, progress=False)
        settle_s = time.monotonic() - fault_at if settled else None
        relists = backend._watch.relists - relists_before
    lists = len(k8s_emulator.requests(verb="list")) - lists_before
    ran = executions(markers)
    result = count(
        "watch dropped + 410 Expired",
        "kubernetes",
        items,
        raw_rows(db),
        ran,
        settle_s=settle_s,
        list_requests=lists,
        relists=relists,
        kube_jobs=len(k8s_emulator.objects("jobs", NAMESPACE)),
    )
    result.report()
    assert_once_each(ran, items)
    assert result.succeeded == items and result.stuck == 0
    assert lists >= 2 and relists >= 1  # 410 Expired: the watches listed again


# -- S3: SlowDown and dropped connections ----------------------------------------------------


@pytest.fixture
def flaky_gate(s3_endpoint: str, s3_bucket: str) -> Iterator[FlakyGate]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    gate = FlakyGate((host, int(port)))
    yield gate
    gate.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_s3_slowdown_and_dropped_connections_for_10s_mid_map(
    flaky_gate: FlakyGate, s3_client: Any, s3_bucket: str, tmp_path: Path
) -> None:
    items, markers = 40, tmp_path / "markers"
    markers.mkdir()
    url = f"s3://{s3_bucket}/faults?endpoint_url=http://127.0.0.1:{flaky_gate.port}"
    with jobkit.use(store=url, backend="local", local={"cpus": 2, "idle_timeout": 30}) as client:
        try:
            array = jobkit.map(mark, [str(markers)] * items, range(items), [0.2] * items)
            wait_for(lambda: len(executions(markers)) >= 5, timeout=120)
            flaky_gate.start_outage()
            time.sleep(10)
            flaky_gate.end_outage()
            fault_at = time.monotonic()
            settled = wait_or_stall(
                array,
                lambda: sum(r.state in TERMINAL for r in s3_rows(s3_client, s3_bucket, "faults")),
                bound=SETTLE,
            )
            settle_s = time.monotonic() - fault_at if settled else None
        finally:
            client.backend("local").stop_agent()
    ran = executions(markers)
    result = count(
        "S3 503 SlowDown + resets for 10 s",
        "local+s3",
        items,
        s3_rows(s3_client, s3_bucket, "faults"),
        ran,
        settle_s=settle_s,
        answered_503=flaky_gate.answered,
        reset=flaky_gate.reset,
    )
    result.report()
    assert flaky_gate.answered and flaky_gate.reset  # the outage was met, both ways
    assert_once_each(ran, items)
    assert result.succeeded == items and result.stuck == 0
