"""jobkit: turn a function into a job on this machine, Slurm or Kubernetes.

Every job is recorded in a store (SQLite by default) so any process finds it
again by id.  The public names are exactly ``__all__``; everything else is
internal.
"""

from jobkit._version import __version__
from jobkit.api import RemoteFunction, get, jobs, map, remote, submit
from jobkit.client import configure, use
from jobkit.errors import (
    BackendError,
    ConfigError,
    IllegalTransitionError,
    JobFailedError,
    JobkitError,
    JobNotFoundError,
    SerializationError,
    SignatureError,
    StoreError,
    SubmitError,
    VersionMismatchError,
)
from jobkit.executor import Executor
from jobkit.job import Job, JobArray
from jobkit.resources import Resources
from jobkit.states import FailureReason, JobRecord, JobState

__all__ = [
    "BackendError",
    "ConfigError",
    "Executor",
    "FailureReason",
    "IllegalTransitionError",
    "Job",
    "JobArray",
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
    "SubmitError",
    "VersionMismatchError",
    "__version__",
    "configure",
    "get",
    "jobs",
    "map",
    "remote",
    "submit",
    "use",
]
