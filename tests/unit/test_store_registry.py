"""Choosing a store by URL: the table, third-party stores and every bad URL."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit.stores as registry
from jobkit.errors import ConfigError
from jobkit.stores import known_stores, open_store, register_store
from jobkit.stores.memory import MemoryStore
from jobkit.stores.sqlite import SQLiteStore

THIRD_PARTY = textwrap.dedent(
    """
    from jobkit.stores.memory import MemoryStore

    class ThirdStore(MemoryStore):
        scheme = "thirdparty"

        def __init__(self, url):
            super().__init__()
            self.url = url

        @classmethod
        def from_url(cls, url):
            return cls(url)
    """
)


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test die with it."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for throwaway store modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "third_party_store.py").write_text(THIRD_PARTY)
    (tmp_path / "needs_extra_store.py").write_text("import jobkit_missing_dependency_xyz\n")
    yield tmp_path
    for name in ("third_party_store", "needs_extra_store"):
        sys.modules.pop(name, None)


def test_the_table_is_sorted_read_only_and_carries_install_hints() -> None:
    stores = known_stores()
    assert list(stores) == sorted(stores)
    assert {"memory", "s3", "sqlite"} <= set(stores)
    assert stores["sqlite"].target == "jobkit.stores.sqlite:SQLiteStore"
    assert stores["s3"].install_hint == "pip install 'jobkit[s3]'"
    with pytest.raises(TypeError):
        stores["evil"] = stores["memory"]  # type: ignore[index]


def test_importing_the_registry_imports_no_store() -> None:
    code = (
        "import sys, jobkit.stores; "
        "stores = ('jobkit.stores.sqlite', 'jobkit.stores.memory'); "
        "loaded = [m for m in stores if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_memory_urls_open_new_private_stores() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    assert isinstance(first, MemoryStore) and first is not second
    assert first.url == "memory://" and not first.shared_across_processes


def test_sqlite_urls_absolute_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite://{tmp_path}/a/jobs.db")
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "a" / "jobs.db"
    store.close()
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_store("SQLite:///~/b/jobs.db")
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "b" / "jobs.db"
    assert store.url == f"sqlite://{tmp_path}/b/jobs.db"
    store.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", r"not of the form 'scheme://\.\.\.'.*memory://"),
        ("jobs.db", r"not of the form 'scheme://\.\.\.'.*sqlite:///"),
        ("://x", "not of the form"),
        ("nope://x", r"unknown scheme 'nope'; known schemes: memory, s3, sqlite"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite://rel.db", "relative path"),
        ("memory://name", "takes no name"),
    ],
)
def test_bad_urls_say_what_is_wrong_and_what_is_valid(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        open_store(url)
    assert repr(url) in str(info.value)


def test_s3_without_boto3_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['boto3'] = None; "
        "from jobkit.stores import open_store; from jobkit.errors import ConfigError\n"
        "try: open_store('s3://bucket/prefix')\n"
        "except ConfigError as exc: print(exc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'jobkit[s3]'" in out.stdout


def test_a_missing_extra_gives_the_install_hint(modules: Path) -> None:
    register_store(
        "needsextra", "needs_extra_store:Whatever", install_hint="pip install 'jobkit[extra]'"
    )
    with pytest.raises(ConfigError, match="jobkit_missing_dependency_xyz") as info:
        open_store("needsextra://x")
    assert "pip install 'jobkit[extra]'" in str(info.value)


def test_register_refuses_to_clobber_unless_asked(modules: Path) -> None:
    with pytest.raises(ConfigError, match=r"already registered.*clobber=True"):
        register_store("memory", "third_party_store:ThirdStore")
    register_store("memory", "third_party_store:ThirdStore", clobber=True)
    store = open_store("memory://anything")
    assert type(store).__name__ == "ThirdStore" and store.url == "memory://anything"


def test_register_a_class_directly() -> None:
    class Scratch(MemoryStore):
        scheme = "scratch"

        @classmethod
        def from_url(cls, url: str) -> Scratch:
            return cls()

    register_store("scratch", Scratch)
    assert isinstance(open_store("scratch://"), Scratch)
    assert known_stores()["scratch"].target is Scratch


@pytest.mark.parametrize(
    ("scheme", "target"),
    [("Bad Scheme", "m:C"), ("1x", "m:C"), ("ok", "no-colon"), ("ok", "a:b:c"), ("ok", dict)],
)
def test_register_validates_its_arguments(scheme: str, target: Any) -> None:
    with pytest.raises(ConfigError):
        register_store(scheme, target)


def test_a_target_that_is_not_a_store_is_refused() -> None:
    register_store("notastore", "collections:OrderedDict")
    with pytest.raises(ConfigError, match="does not name a Store class"):
        open_store("notastore://x")


def test_entry_points_are_read_lazily_for_unknown_schemes_only(
    modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    def entry_points(*, group: str, name: str) -> list[importlib.metadata.EntryPoint]:
        lookups.append(name)
        assert group == "jobkit.stores"
        if name != "thirdparty":
            return []
        return [
            importlib.metadata.EntryPoint(
                name="thirdparty", value="third_party_store:ThirdStore", group=group
            )
        ]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    open_store("memory://")
    assert lookups == []
    store = open_store("thirdparty://bucket")
    assert type(store).__name__ == "ThirdStore" and store.url == "thirdparty://bucket"
    assert "thirdparty" in known_stores()
    open_store("thirdparty://again")
    assert lookups == ["thirdparty"]  # remembered after the first lookup
    with pytest.raises(ConfigError, match="unknown scheme 'other'"):
        open_store("other://x")
    assert lookups == ["thirdparty", "other"]


_PLUGIN = '''
from jobkit.stores.sqlite import SQLiteStore


class LabStore(SQLiteStore):
    """``lab://NAME``: a SQLite file named NAME in $LAB_STORE_DIR (a third-party store)."""

    scheme = "lab"

    @classmethod
    def from_url(cls, url):
        import os

        store = cls(os.path.join(os.environ["LAB_STORE_DIR"], url[len("lab://"):] + ".db"))
        store.url = url
        return store
'''

_JOB = """
import jobkit

@jobkit.remote
def double(x):
    return 2 * x

with jobkit.use(store="lab://team", backend="local"):
    job = double.submit(21)
    print(job.id, job.result(timeout=60))
"""


def test_a_store_from_an_installed_distribution_runs_jobs_and_the_cli(tmp_path: Path) -> None:
    """A real distribution on sys.path (dist-info with entry_points.txt), found by
    importlib.metadata in fresh processes: the library, the agent and the CLI."""
    site = tmp_path / "site"
    dist = site / "jobkit_lab_store-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jobkit-lab-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[jobkit.stores]\nlab = jobkit_lab_store:LabStore\n")
    (site / "jobkit_lab_store.py").write_text(_PLUGIN)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "LAB_STORE_DIR": str(tmp_path),
        "JOBKIT_HOME": str(tmp_path / "home"),
    }
    ran = subprocess.run(
        [sys.executable, "-c", _JOB], capture_output=True, text=True, env=env, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    job_id, answer = ran.stdout.split()
    assert answer == "42" and (tmp_path / "team.db").exists()

    listed = subprocess.run(
        [sys.executable, "-m", "jobkit", "--store", "lab://team", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["state"]) == (job_id, "SUCCEEDED")
