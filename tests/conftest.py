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


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


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


# -- Slurm -------------------------------------------------------------------------

SLURM_HINT = (
    "no Slurm cluster: start one with `backends/slurm/cluster.sh up` "
    "(it installs Debian's Slurm packages and starts a single-node cluster)"
)


def _slurm_conf() -> str | None:
    import os

    conf = os.environ.get("SLURM_CONF")
    if conf:
        return conf
    default = Path(os.environ.get("JOBKIT_SLURM_DIR", "/tmp/jobkit-slurm")) / "etc" / "slurm.conf"
    return str(default) if default.exists() else None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """SLURM_CONF of a live cluster; skipped without one, but failed under CI."""
    import os
    import subprocess

    conf = _slurm_conf()
    up = False
    if conf:
        try:
            ping = subprocess.run(
                ["scontrol", "ping"],
                capture_output=True,
                text=True,
                timeout=20,
                env={**os.environ, "SLURM_CONF": conf},
            )
            up = ping.returncode == 0 and "UP" in ping.stdout
        except (OSError, subprocess.TimeoutExpired):
            up = False
    if not up:
        if os.environ.get("CI") or os.environ.get("JOBKIT_REQUIRE_SLURM"):
            pytest.fail(f"{SLURM_HINT}; CI must run the Slurm tests, not skip them")
        pytest.skip(SLURM_HINT)
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(conf))
    yield str(conf)
    mp.undo()


@contextlib.contextmanager
def slurm_env(directory: Path, **slurm: Any) -> Iterator[Any]:
    import jobkit

    with jobkit.use(
        store=f"sqlite:///{directory}/jobkit.db", backend="slurm", slurm=slurm, poll_interval=0.5
    ) as client:
        yield client


@pytest.fixture(scope="module")
def slurm(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A store whose jobs go to the real Slurm cluster."""
    with slurm_env(tmp_path_factory.mktemp("slurm")) as client:
        yield client
