"""jobkit: turn a function into a job on this machine, Slurm or Kubernetes.

Every job is recorded in a store (SQLite by default) so any process finds it
again by id.  The public names are exactly ``__all__``.  They load lazily
(PEP 562): ``import jobkit`` is cheap, and the worker and the CLI import only
the modules they use, never pydantic on the ``jobkit list`` path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobkit._version import __version__

if TYPE_CHECKING:
    from jobkit.api import RemoteFunction, get, jobs, map, remote, submit
    from jobkit.checkpoint import Checkpointable
    from jobkit.context import configure, use
    from jobkit.environment import JobEnvironment, env
    from jobkit.errors import (
        BackendError,
        ConfigError,
        DependencyError,
        IllegalTransitionError,
        JobFailedError,
        JobkitError,
        JobNotFoundError,
        SerializationError,
        SignatureError,
        StoreError,
        StoreUnavailableError,
        SubmitError,
        VersionMismatchError,
    )
    from jobkit.executor import Executor
    from jobkit.job import Job, JobArray
    from jobkit.resources import Resources
    from jobkit.states import FailureReason, JobRecord, JobState

_WHERE = {
    "RemoteFunction": "api",
    "get": "api",
    "jobs": "api",
    "map": "api",
    "remote": "api",
    "submit": "api",
    "configure": "context",
    "use": "context",
    "Executor": "executor",
    "Checkpointable": "checkpoint",
    "env": "environment",
    "JobEnvironment": "environment",
    "Job": "job",
    "JobArray": "job",
    "Resources": "resources",
    "FailureReason": "states",
    "JobRecord": "states",
    "JobState": "states",
    "BackendError": "errors",
    "ConfigError": "errors",
    "DependencyError": "errors",
    "IllegalTransitionError": "errors",
    "JobFailedError": "errors",
    "JobkitError": "errors",
    "JobNotFoundError": "errors",
    "SerializationError": "errors",
    "SignatureError": "errors",
    "StoreError": "errors",
    "StoreUnavailableError": "errors",
    "SubmitError": "errors",
    "VersionMismatchError": "errors",
}

__all__ = [
    "BackendError",
    "Checkpointable",
    "ConfigError",
    "DependencyError",
    "Executor",
    "FailureReason",
    "IllegalTransitionError",
    "Job",
    "JobArray",
    "JobEnvironment",
    "JobFailedError",
    "JobNotFoundError",
    "JobRecord",
    "JobState",
    "JobkitError",
    "RemoteFunction",
    "Resources",
    "SerializationError",
    "SignatureError",
    "StoreError",
    "StoreUnavailableError",
    "SubmitError",
    "VersionMismatchError",
    "__version__",
    "configure",
    "env",
    "get",
    "jobs",
    "map",
    "remote",
    "submit",
    "use",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jobkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jobkit.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
