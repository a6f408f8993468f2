"""pytest fixtures: load them with ``pytest_plugins = ["jobkit_testing.k8s_emulator.fixtures"]``.

``k8s_api_server`` (session)
    The :class:`K8sEmulator` of the one server of the session, not reset.
``k8s_emulator``
    The same, reset to an empty cluster (namespaces ``default`` and ``jobkit``)
    before the test; fails the test if the server hit an internal error.
``k8s_client``
    A ``kubernetes.client.ApiClient`` configured for the emulator (no kubeconfig).
``k8s_kubeconfig``
    A kubeconfig file for the emulator, exported as ``KUBECONFIG`` for the test.
``k8s_controller``
    A started :class:`JobController`, stopped (processes killed) after the test;
    fails the test if the controller hit an unexpected error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .controller import JobController
from .facade import K8sEmulator, ServerThread

# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def k8s_api_server() -> Iterator[K8sEmulator]:
    """The emulated API server of the session (not reset: use ``k8s_emulator``)."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = ServerThread()
    emulator = server.start()
    try:
        yield emulator
    finally:
        server.stop()


@pytest.fixture
def k8s_emulator(k8s_api_server: K8sEmulator) -> Iterator[K8sEmulator]:
    """An empty cluster (namespaces ``default`` and ``jobkit``) served over HTTP."""
    k8s_api_server.reset()
    yield k8s_api_server
    k8s_api_server.drop_watches()
    errors = k8s_api_server.take_errors()
    if errors:
        pytest.fail("the Kubernetes API emulator failed:\n" + "\n".join(errors))


@pytest.fixture
def k8s_client(k8s_emulator: K8sEmulator) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the emulator (no kubeconfig involved)."""
    api = k8s_emulator.api_client()
    yield api
    api.close()


@pytest.fixture
def k8s_kubeconfig(
    k8s_emulator: K8sEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A kubeconfig for the emulator (namespace ``jobkit``), exported as ``KUBECONFIG``."""
    path = k8s_emulator.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def k8s_controller(
    k8s_emulator: K8sEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobController]:
    """A running :class:`JobController`; its processes are killed after the test."""
    controller = JobController(k8s_emulator, tmp_path_factory.mktemp("pods")).start()
    try:
        yield controller
    finally:
        controller.stop()
    if controller.errors:
        pytest.fail("the test Job controller failed:\n" + "\n".join(controller.errors))
