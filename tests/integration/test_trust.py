"""Signed payloads and outcomes, exercised through real agents and workers.

The marker-file trick proves a tampered payload is never unpickled: the
payload holds an object whose unpickling would create the marker.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from conftest import local_env
from jobkit.serialization import Call, dump_payload
from jobkit.states import FailureReason, JobRecord, JobState
from jobkit.stores.base import outcome_key, payload_key

T = 30


class Tripwire:
    """Unpickling this creates a file: evidence that bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (Path(self.path),))


def _queue_behind_blocker(tmp_path: Path) -> Any:
    blocker = jobkit.submit(helpers.sleep_then, 30)
    deadline = time.monotonic() + T
    while not blocker.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    return blocker


def test_tampered_payload_is_refused_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with local_env(tmp_path, cpus=1, max_jobs=1) as client:
        blocker = _queue_behind_blocker(tmp_path)
        victim = jobkit.submit(helpers.square, Tripwire(str(marker)))
        blob = client.store.get_blob(payload_key(victim.id))
        blob[-1] ^= 0xFF  # flip one bit of the pickle
        client.store.put_blob(payload_key(victim.id), blob)
        blocker.cancel()
        with pytest.raises(jobkit.SignatureError, match="bad signature"):
            victim.result(timeout=T)
        assert victim.info.failure_reason is FailureReason.SUBMIT_ERROR
        assert not marker.exists()


def test_unsigned_payload_is_refused(tmp_path: Path) -> None:
    import cloudpickle

    marker = tmp_path / "unpickled"
    with local_env(tmp_path, cpus=1, max_jobs=1) as client:
        blocker = _queue_behind_blocker(tmp_path)
        victim = jobkit.submit(helpers.square, 2)
        raw = cloudpickle.dumps(Call(fn=helpers.square, args=(Tripwire(str(marker)),), kwargs={}))
        client.store.put_blob(payload_key(victim.id), raw)
        blocker.cancel()
        with pytest.raises(jobkit.SignatureError, match="not a jobkit envelope"):
            victim.result(timeout=T)
        assert not marker.exists()


def test_payload_of_another_job_cannot_be_replayed(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=1, max_jobs=1) as client:
        blocker = _queue_behind_blocker(tmp_path)
        victim = jobkit.submit(helpers.square, 2)
        other = dump_payload(
            Call(fn=helpers.square, args=(9,), kwargs={}), key=client.key, job_id="jk-other"
        )
        client.store.put_blob(payload_key(victim.id), other)
        blocker.cancel()
        with pytest.raises(jobkit.SignatureError, match="signed for payload of job jk-other"):
            victim.result(timeout=T)


def test_payload_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    with local_env(tmp_path, cpus=1, max_jobs=1) as client:
        blocker = _queue_behind_blocker(tmp_path)
        victim = jobkit.submit(helpers.square, 2)
        forged = dump_payload(
            Call(fn=helpers.square, args=(3,), kwargs={}), key=b"k" * 32, job_id=victim.id
        )
        client.store.put_blob(payload_key(victim.id), forged)
        blocker.cancel()
        with pytest.raises(jobkit.SignatureError):
            victim.result(timeout=T)


def test_altered_outcome_is_refused_by_the_client(local: Any) -> None:
    job = jobkit.submit(helpers.square, 5)
    assert job.result(timeout=T) == 25
    again = jobkit.get(job.id)
    blob = local.store.get_blob(outcome_key(job.id))
    blob[-2] ^= 0x01
    local.store.put_blob(outcome_key(job.id), blob)
    with pytest.raises(jobkit.SignatureError, match="outcome of job"):
        again.result()  # type: ignore[union-attr]


def test_version_mismatch_is_reported_clearly(local: Any) -> None:
    from jobkit.serialization import _seal

    store = local.store
    record = JobRecord(
        id="jk-oldpython00001", name="old", backend="memory-test", created_at=time.time()
    )
    store.create([record])
    header = {
        "kind": "payload",
        "job": record.id,
        "python": "2.7",
        "jobkit": "0.0.1",
        "sys_path": [],
    }
    store.put_blob(payload_key(record.id), _seal(local.key, header, b"not even a pickle", []))
    from jobkit.worker import run_job

    assert run_job(store, record.id, local.key) != 0
    failed = store.get(record.id)
    assert failed.state is JobState.FAILED and failed.failure_reason is FailureReason.SUBMIT_ERROR
    assert "Python 2.7" in (failed.message or "") and "this worker runs Python 3." in (
        failed.message or ""
    )
    with pytest.raises(jobkit.VersionMismatchError, match="same Python minor version"):
        local.load_outcome(failed).unwrap()


def test_key_and_store_files_are_owner_only(local: Any, _isolated_home: Path) -> None:
    key = _isolated_home / "signing.key"
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
    db = Path(local.config.store.removeprefix("sqlite://"))
    for path in (db, db.parent / (db.name + ".d")):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    job = jobkit.submit(helpers.square, 1)
    job.result(timeout=T)
    log = Path(job.info.extra["stdout"])
    assert stat.S_IMODE(log.stat().st_mode) & 0o077 == 0


def test_a_key_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobkit.signing import load_key

    path = tmp_path / "key"
    path.write_text("ab" * 32)
    os.chmod(path, 0o644)
    with pytest.raises(jobkit.ConfigError, match="chmod 600"):
        load_key(key_file=path, environ={})
    os.chmod(path, 0o600)
    assert load_key(key_file=path, environ={}) == bytes.fromhex("ab" * 32)
    with pytest.raises(jobkit.ConfigError, match="not hex"):
        load_key("zz", environ={})
    monkeypatch.setenv("JOBKIT_HOME", str(tmp_path / "fresh"))
    created = load_key()
    assert len(created) == 32 and load_key() == created  # created once, then reused
