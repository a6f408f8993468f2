"""Test isolation: every session gets its own jobkit home and user config.

Local-backend tests run real agents and real worker processes; each store
gets its own agent, stopped when the fixture that made it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("jobkit-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("JOBKIT_HOME", str(home))
    mp.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    for name in (
        "JOBKIT_STORE",
        "JOBKIT_BACKEND",
        "JOBKIT_PROFILE",
        "JOBKIT_KEY",
        "JOBKIT_KEY_FILE",
    ):
        mp.delenv(name, raising=False)
    yield home
    mp.undo()


@contextlib.contextmanager
def local_env(directory: Path, **local: Any) -> Iterator[Any]:
    """A store in ``directory`` with its own agent, configured by ``local``."""
    import jobkit

    settings = {"idle_timeout": 10, **local}
    with jobkit.use(
        store=f"sqlite:///{directory}/jobkit.db", backend="local", local=settings
    ) as client:
        try:
            yield client
        finally:
            if "local" in client._backends:
                client.backend("local").stop_agent()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A shared local store+agent for a test module (4 cpus declared)."""
    with local_env(tmp_path_factory.mktemp("local"), cpus=4) as client:
        yield client
