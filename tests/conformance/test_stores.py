"""Every built-in store runs the one store conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_suite import StoreConformance

from jobkit.stores import open_store
from jobkit.stores.base import Store
from jobkit.stores.memory import MemoryStore
from jobkit.stores.s3 import S3Store
from jobkit.stores.sqlite import SQLiteStore

pytest_plugins = ["s3_fixtures"]


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = open_store("memory://")
        assert isinstance(store, MemoryStore)
        yield store
        store.close()


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = open_store(f"sqlite://{tmp_path}/jobkit.db")
        assert isinstance(store, SQLiteStore)
        yield store
        store.close()


class TestS3Store(StoreConformance):
    """Against a moto server over real HTTP (see ``tests/s3_fixtures.py``)."""

    @pytest.fixture
    def store(self, s3_bucket: str) -> Iterator[Store]:
        store = open_store(f"s3://{s3_bucket}/conformance")
        assert isinstance(store, S3Store)
        yield store
        store.close()
