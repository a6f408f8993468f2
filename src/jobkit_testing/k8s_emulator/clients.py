"""jobkit clients of the emulated cluster, set up as the README tells users to.

Store credentials and the signing key reach the pods through a Secret named
``jobkit-store``; the client runs the pods' command with this interpreter.
One place for tests and the backend conformance suite, so a change to how a
cluster is configured is made once.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import jobkit

from .facade import K8sEmulator

__all__ = ["NAMESPACE", "SECRET", "kubernetes_client", "on_kubernetes", "put_store_secret"]

NAMESPACE = "jobkit"
SECRET = "jobkit-store"


def put_store_secret(emulator: K8sEmulator, namespace: str, key: bytes) -> None:
    """Create ``namespace`` if needed and the Secret its pods read the store from."""
    if namespace not in ("default", NAMESPACE):
        emulator.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    emulator.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": namespace},
            "stringData": {
                "JOBKIT_KEY": key.hex(),
                **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
            },
        }
    )


@contextlib.contextmanager
def kubernetes_client(store: str, **settings: Any) -> Iterator[Any]:
    """A client of the kubernetes backend with ``settings`` (no namespace unless given);
    its backend is closed at the end."""
    base = {"image": "python:3.11-slim", "python": sys.executable, "secret": SECRET}
    with jobkit.use(
        store=store, backend="kubernetes", poll_interval=0.2, kubernetes={**base, **settings}
    ) as client:
        try:
            yield client
        finally:
            if "kubernetes" in client._backends:
                client.backend("kubernetes").close()


@contextlib.contextmanager
def on_kubernetes(emulator: K8sEmulator, store: str, **overrides: Any) -> Iterator[Any]:
    """A client whose jobs run as Jobs of ``emulator`` in :data:`NAMESPACE`."""
    settings = {"api_server": emulator.url, "namespace": NAMESPACE, "pending_grace": 2}
    with kubernetes_client(store, **{**settings, **overrides}) as client:
        put_store_secret(emulator, NAMESPACE, client.key)
        yield client
