"""A worker whose S3 store goes away mid-job: it waits, then records; or says why not.

The worker is the real ``python -m jobkit.worker`` process; the store is S3
over HTTP (moto), reached through a TCP gate the test closes and reopens, so
the worker meets real refused connections, not a simulated exception.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from jobkit.serialization import Call, dump_payload, load_outcome
from jobkit.signing import load_key
from jobkit.states import JobRecord, JobState
from jobkit.stores import open_store
from jobkit.stores.base import Store, outcome_key, payload_key
from jobkit.stores.patient import EXIT_STORE_UNREACHABLE
from jobkit_testing.faults.cluster import pump

pytest_plugins = ["s3_fixtures"]


class Gate:
    """A TCP forwarder to ``upstream`` that can refuse connections and cut live ones."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._live: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """From now on the port refuses connections; open ones are cut."""
        with self._lock:
            listener, self._listener = self._listener, None
            live, self._live = self._live, []
        for sock in [listener, *live]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._live += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()


def wait_for_file(path: str) -> int:
    """The job: says it started (its worker is done with the store until it returns),
    waits for the test to say go (after it closed the gate), then answers."""
    Path(path + ".started").touch()
    while not Path(path).exists():
        time.sleep(0.02)
    return 42


@pytest.fixture
def gate(s3_endpoint: str, s3_bucket: str) -> Iterator[Gate]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    gate = Gate((host, int(port)))
    gate.open()
    yield gate
    gate.close()


def start_job(store: Store, tmp_path: Path) -> tuple[str, Path]:
    go = tmp_path / "go"
    job_id = "jk-outage"
    store.create([JobRecord(id=job_id, name="wait", backend="slurm", created_at=time.time())])
    call = Call(fn=wait_for_file, args=(str(go),), kwargs={})
    store.put_blob(payload_key(job_id), dump_payload(call, key=load_key(), job_id=job_id))
    return job_id, go


def worker(url: str, job_id: str, patience: float) -> subprocess.Popen[str]:
    env = {**os.environ, "JOBKIT_STORE_PATIENCE": str(patience)}
    return subprocess.Popen(
        [sys.executable, "-m", "jobkit.worker", "--store", url, job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def gated_url(bucket: str, gate: Gate) -> str:
    return (
        f"s3://{bucket}/p?endpoint_url=http://127.0.0.1:{gate.port}"
        "&max_attempts=1&connect_timeout=1&read_timeout=5"
    )


def test_a_worker_waits_out_an_outage_and_records_its_result(
    s3_bucket: str, gate: Gate, tmp_path: Path
) -> None:
    direct = open_store(f"s3://{s3_bucket}/p")
    job_id, go = start_job(direct, tmp_path)
    proc = worker(gated_url(s3_bucket, gate), job_id, patience=60)
    wait_for(lambda: Path(f"{go}.started").exists(), timeout=30)
    assert direct.get(job_id).state is JobState.RUNNING

    gate.close()
    go.touch()  # the function returns; the outcome has nowhere to go yet
    time.sleep(2.0)
    assert proc.poll() is None and direct.get(job_id).state is JobState.RUNNING
    gate.open()

    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # The outcome and the end are one write (transition_many), retried as one.
    assert "store call transition_many failed (attempt 1)" in err
    assert "retrying in" in err
    record = direct.get(job_id)
    assert record.state is JobState.SUCCEEDED
    outcome = load_outcome(direct.get_blob(outcome_key(job_id)), key=load_key(), job_id=job_id)
    assert outcome.value == 42


def test_a_worker_that_cannot_reach_the_store_in_time_says_so_and_fails(
    s3_bucket: str, gate: Gate, tmp_path: Path
) -> None:
    direct = open_store(f"s3://{s3_bucket}/p")
    job_id, go = start_job(direct, tmp_path)
    proc = worker(gated_url(s3_bucket, gate), job_id, patience=2)
    wait_for(lambda: Path(f"{go}.started").exists(), timeout=30)
    assert direct.get(job_id).state is JobState.RUNNING

    gate.close()
    go.touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_STORE_UNREACHABLE
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"jobkit worker: job {job_id}: could not record its state or result, the store "
        f"stayed unreachable: cannot reach the S3 endpoint http://127.0.0.1:{gate.port}"
    )
    assert "gave up after" in last and "JOBKIT_STORE_PATIENCE" in last
    assert direct.get(job_id).state is JobState.RUNNING  # nothing half-written


def test_errors_a_retry_cannot_fix_are_not_retried(s3_bucket: str) -> None:
    proc = worker(f"s3://{s3_bucket}/p", "jk-absent", patience=60)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "retrying" not in err
    assert "jk-absent" in err


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_patience_setting_is_named(value: str, s3_bucket: str) -> None:
    env: dict[str, Any] = {**os.environ, "JOBKIT_STORE_PATIENCE": value}
    result = subprocess.run(
        [sys.executable, "-m", "jobkit.worker", "--store", f"s3://{s3_bucket}/p", "jk-x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"JOBKIT_STORE_PATIENCE={value!r} is not a number of seconds" in result.stderr
