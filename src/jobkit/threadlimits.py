"""Thread pools of numeric libraries sized to the job's cpus, not the node's.

OpenMP, OpenBLAS, MKL, Accelerate (vecLib), NumExpr and BLIS start as many
threads as the node has cores unless an environment variable says
otherwise.  A ``cpus=1`` job on a 64-core node would run 64 BLAS threads,
and jobs packed onto one machine would oversubscribe it.  Ray sets
``OMP_NUM_THREADS`` from a task's cpus for the same reason; we set the whole
family, because numpy's OpenBLAS reads ``OPENBLAS_NUM_THREADS`` first.

The rule, per variable: a variable already set in the environment the job
runs in is the user's choice and is kept; every other one is set to the
job's ``cpus`` (per task), rounded down, at least 1.  The environment the
job runs in is the job's ``env`` resource on top of what its backend passes
on (the submitter's environment for local and Slurm jobs, the pod's for
Kubernetes).  The libraries read these variables once, when they load, so
the worker applies them before it unpickles the payload (which may import
numpy).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
"""Every variable the worker sets, in the order the libraries are best known."""


def threads_for(cpus: object) -> int:
    """Whole threads for a cpu request: rounded down, at least 1.

    A fractional request (``cpus=0.5``) still needs one thread to run;
    rounding up would give a ``cpus=2.5`` job more threads than cores it was
    given.
    """
    try:
        value = float(cpus)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    if not math.isfinite(value):
        return 1
    return max(1, int(value))


def limit_threads(cpus: object, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every unset thread variable in ``environ`` (``os.environ``) to
    :func:`threads_for` ``(cpus)``; returns what it set."""
    env = os.environ if environ is None else environ
    value = str(threads_for(cpus))
    added = {name: value for name in THREAD_VARIABLES if name not in env}
    env.update(added)
    return added
