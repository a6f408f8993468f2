"""Every built-in store runs the one store conformance suite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_suite import StoreConformance

from jobkit.errors import ConfigError
from jobkit.stores import open_store
from jobkit.stores.base import Store
from jobkit.stores.memory import MemoryStore
from jobkit.stores.patient import PatientStore
from jobkit.stores.s3 import S3Store
from jobkit.stores.sqlite import SQLiteStore
from jobkit.stores.sqlite_sql import INLINE_MAX

pytest_plugins = ["s3_fixtures"]


def corrupt_sqlite_row(path: Path, job_id: str, field: str, value: object) -> None:
    """Rewrite one field of a row's JSON with the sqlite3 module, as a bad tool would."""
    conn = sqlite3.connect(path)
    with conn:
        (data,) = conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        values = json.loads(data)
        values[field] = value
        conn.execute("UPDATE jobs SET data = ? WHERE id = ?", (json.dumps(values), job_id))
    conn.close()


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = open_store("memory://")
        assert isinstance(store, MemoryStore)
        yield store
        store.close()

    def corrupt(self, store: Store, job_id: str, field: str, value: object) -> None:
        assert isinstance(store, MemoryStore)
        setattr(store._records[job_id], field, value)


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = open_store(f"sqlite://{tmp_path}/jobkit.db")
        assert isinstance(store, SQLiteStore)
        yield store
        store.close()

    def corrupt(self, store: Store, job_id: str, field: str, value: object) -> None:
        assert isinstance(store, SQLiteStore)
        corrupt_sqlite_row(store.path, job_id, field, value)

    def test_a_killed_writers_temporary_payload_is_an_orphan_and_pruned(self, store: Store) -> None:
        assert isinstance(store, SQLiteStore)
        store.put_blob("payloads/jk-kept.1", b"p" * (INLINE_MAX + 1))  # a file, not a row
        folder = store.local_dir / "blobs" / "payloads"
        (folder / ".jk-gone.3.0123456789ab.tmp").write_bytes(b"half a payl")
        (folder / ".jk-kept.1.ba9876543210.tmp").write_bytes(b"half")
        assert sorted(store.payload_blobs()) == ["jk-gone.3", "jk-kept.1"]
        store.delete_blobs(["payloads/jk-gone.3"])
        assert sorted(p.name for p in folder.iterdir()) == [
            ".jk-kept.1.ba9876543210.tmp",
            "jk-kept.1",
        ]


class TestPatientStore(StoreConformance):
    """What workers talk to: SQLite with every call retried while it is unreachable."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = PatientStore(open_store(f"sqlite://{tmp_path}/jobkit.db"), patience=5)
        yield store
        store.close()

    def corrupt(self, store: Store, job_id: str, field: str, value: object) -> None:
        assert isinstance(store, PatientStore) and isinstance(store.wrapped, SQLiteStore)
        corrupt_sqlite_row(store.wrapped.path, job_id, field, value)


def test_a_patient_store_is_a_store_with_the_wrapped_stores_hints(
    tmp_path: Path, s3_bucket: str
) -> None:
    for url in (f"sqlite://{tmp_path}/jobkit.db", f"s3://{s3_bucket}/hints", "memory://"):
        inner = open_store(url)
        patient = PatientStore(inner)
        assert isinstance(patient, Store)
        assert patient.wrapped is inner
        assert (patient.url, patient.identity, patient.local_dir) == (
            inner.url,
            inner.identity,
            inner.local_dir,
        )
        assert (patient.scheme, patient.sweep_interval, patient.read_budget) == (
            inner.scheme,
            inner.sweep_interval,
            inner.read_budget,
        )
        assert patient.shared_across_processes == inner.shared_across_processes
        patient.close()


def test_a_negative_patience_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"patience=-1 .*e\.g\. patience=600"):
        PatientStore(open_store("memory://"), patience=-1)


class TestS3Store(StoreConformance):
    """Against a moto server over real HTTP (see ``tests/s3_fixtures.py``)."""

    @pytest.fixture
    def store(self, s3_bucket: str) -> Iterator[Store]:
        store = open_store(f"s3://{s3_bucket}/conformance")
        assert isinstance(store, S3Store)
        yield store
        store.close()

    def corrupt(self, store: Store, job_id: str, field: str, value: object) -> None:
        assert isinstance(store, S3Store)
        key = store.layout.record(job_id)
        client: Any = store.client
        obj = client.get_object(Bucket=store.bucket, Key=key)
        values = json.loads(obj["Body"].read())
        values[field] = value
        client.put_object(
            Bucket=store.bucket,
            Key=key,
            Body=json.dumps(values).encode(),
            Metadata=obj.get("Metadata") or {},
        )
