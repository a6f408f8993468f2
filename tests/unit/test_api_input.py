"""Bad input at the public entry points: one clear error, nothing stored."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit


@pytest.fixture
def memory_client() -> Iterator[Any]:
    with jobkit.use(store="memory://") as client:
        yield client


def test_bad_resources_fail_at_decoration() -> None:
    with pytest.raises(jobkit.ConfigError, match=r"invalid resource mem='lots'"):
        jobkit.remote(mem="lots")
    with pytest.raises(jobkit.ConfigError, match=r"did you mean 'gpus'"):
        jobkit.remote(gpu=1)
    with pytest.raises(jobkit.ConfigError, match="gpus"):
        jobkit.remote(gpus=1.5)
    with pytest.raises(jobkit.ConfigError, match="priority"):
        jobkit.remote(priority="urgent")
    with pytest.raises(jobkit.ConfigError, match="needs a callable"):
        jobkit.remote(42)  # type: ignore[call-overload]
    f = jobkit.remote(cpus=1)(print)
    with pytest.raises(jobkit.ConfigError, match="time"):
        f.options(time="soon")


def test_unknown_backend_is_named(memory_client: Any) -> None:
    with pytest.raises(jobkit.ConfigError, match=r"unknown backend 'moon': valid backends are"):
        jobkit.remote(backend="moon")(print).submit()
    assert memory_client.store.query() == []


def test_local_backend_refuses_a_memory_store(memory_client: Any) -> None:
    with pytest.raises(jobkit.ConfigError, match="sqlite"):
        jobkit.submit(print, 1)


def test_unknown_job_id(memory_client: Any) -> None:
    with pytest.raises(jobkit.JobNotFoundError, match=r"no job 'jk-nope'.*jobkit list"):
        jobkit.get("jk-nope")
    with pytest.raises(jobkit.ConfigError, match="invalid job id"):
        jobkit.get("")


def test_unpicklable_argument_records_nothing(tmp_path: Path) -> None:
    with jobkit.use(store=f"sqlite:///{tmp_path}/j.db") as client:
        with pytest.raises(jobkit.SerializationError, match=r"argument 0 cannot be pickled"):
            jobkit.submit(print, threading.Lock())
        assert client.store.query() == []


def test_configure_and_use_validate_immediately() -> None:
    with pytest.raises(jobkit.ConfigError, match="store"), jobkit.use(store="ftp://nowhere"):
        pass
    with pytest.raises(jobkit.ConfigError, match="local"):
        jobkit.configure(local={"cpus": "many"})


def test_corrupted_record_is_one_error_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with jobkit.use(store=f"sqlite:///{db}") as client:
        from jobkit.states import JobRecord, JobState

        client.store.create(
            # Finished jobs: handles on them watch nothing and start no agent.
            [
                JobRecord(id=f"jk-ok{i}", name="n", backend="local", state=JobState.SUCCEEDED)
                for i in range(3)
            ]
        )
        raw = sqlite3.connect(db)
        raw.execute("UPDATE jobs SET data='{not json' WHERE id='jk-ok1'")
        raw.commit()
        raw.close()
        with pytest.raises(jobkit.StoreError, match="jk-ok1"):
            jobkit.get("jk-ok1")
        assert sorted(j.id for j in jobkit.jobs()) == ["jk-ok0", "jk-ok2"]
        assert jobkit.get("jk-ok2").id == "jk-ok2"  # type: ignore[union-attr]


def test_unreadable_config_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "jobkit.toml").write_text("backend = [unclosed\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(jobkit.ConfigError, match=r"jobkit\.toml"):
        jobkit.submit(print, 1)


def test_public_names_are_exactly_all() -> None:
    public = {name for name in dir(jobkit) if not name.startswith("_")}
    assert public == set(jobkit.__all__) - {"__version__"}
    for name in jobkit.__all__:
        assert getattr(jobkit, name) is not None
