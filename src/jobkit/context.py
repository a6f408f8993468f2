"""The client in force: ``configure()`` process-wide, ``use()`` per context.

``jobkit.configure(...)`` sets configuration for the whole process (every
thread, every later notebook cell); ``jobkit.use(...)`` scopes more on top of
it to a block (a :class:`contextvars.ContextVar`, so one thread's or task's
block never leaks into another).  :func:`current_client` returns the shared
:class:`~jobkit.client.Client` for the resolved configuration.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobkit.client import Client

# -- the default client: configure() process-wide, use() per context -----------
#
# configure() must reach every thread and every later notebook cell: threads
# start with an empty context, and ipykernel runs a cell with an ``await`` in a
# task with a *copy* of the context, so a ContextVar set there is lost.  So
# configure() writes one process-wide layer under a lock; use() stays a
# ContextVar, layered on top, so a ``with`` block in one thread or task never
# changes what another sees.  Clients are shared process-wide per resolved
# configuration: one store connection and one monitor thread, not one per
# thread.  Every store is safe to share: SQLite's one connection is opened
# with check_same_thread=False and serialised by the store's lock; the memory
# store guards its dictionaries with a lock; the S3 store's boto3 client is
# thread-safe (the store already drives it from a thread pool).

_config_lock = threading.Lock()
_configured: tuple[Mapping[str, Any], ...] = ()
_scoped: contextvars.ContextVar[tuple[Mapping[str, Any], ...]] = contextvars.ContextVar(
    "jobkit_scoped", default=()
)
_clients: dict[tuple[Any, ...], Client] = {}


def _after_fork_in_child() -> None:
    """A fork taken while another thread held the lock must not deadlock the child."""
    global _config_lock
    _config_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return repr(value)


def _overrides() -> tuple[Mapping[str, Any], ...]:
    """The caller's override stack: process-wide configure(), then this context's use()."""
    with _config_lock:
        configured = _configured
    return (*configured, *_scoped.get())


def current_client() -> Client:
    """The client for the configuration in force here (shared by every thread)."""
    from jobkit.client import Client
    from jobkit.config_loading import load_config

    overrides = _overrides()
    key = (_freeze(overrides), os.getcwd(), _freeze(_env_key()))
    with _config_lock:
        client = _clients.get(key)
    if client is not None:
        return client
    fresh = Client(load_config(overrides))  # outside the lock: opening a store may be slow
    with _config_lock:
        client = _clients.setdefault(key, fresh)
    if client is not fresh:
        fresh.store.close()
    return client


def _env_key() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("JOBKIT_", "AWS_", "KUBECONFIG", "SLURM_CONF"))
    }


def configure(**settings: Any) -> None:
    """Set configuration for the whole process from now on.

    Seen by every thread and every later notebook cell; ``with jobkit.use()``
    blocks layer on top of it, and call arguments on top of both.  Settings
    accumulate: a later ``configure()`` overrides only the keys it names.
    """
    from jobkit.config_loading import load_config

    global _configured
    with _config_lock:
        new = (*_configured, settings)
    load_config((*new, *_scoped.get()))  # validate now: a bad value fails here, not at submit
    with _config_lock:
        _configured = (*_configured, settings)


@contextlib.contextmanager
def use(**settings: Any) -> Iterator[Client]:
    """Scope configuration to a ``with`` block; yields the client it selects.

    Context-scoped: it applies in this thread or task (and the tasks it
    starts) only, layered on top of :func:`configure`'s process-wide settings.
    """
    from jobkit.config_loading import load_config

    new = (*_scoped.get(), settings)
    load_config((*_overrides(), settings))
    token = _scoped.set(new)
    try:
        yield current_client()
    finally:
        _scoped.reset(token)
