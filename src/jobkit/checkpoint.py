"""Checkpointable jobs: requeued on timeout or preemption, resumed from state.

Modeled on submitit's ``Checkpointable``: a callable object whose
``checkpoint`` method says how to resume.  When Slurm warns a job that its
time is nearly up (SIGUSR2) or preempts it, jobkit calls
``checkpoint(*args, **kwargs)`` on the object *as it is now* (its attributes
hold the progress), signs the result as the job's new payload and requeues
the same job; the next attempt runs the resumed call.  Return ``None`` to
let the job end with its timeout instead.

    class Train(jobkit.Checkpointable):
        def __init__(self):
            self.epoch = 0

        def __call__(self, epochs):
            while self.epoch < epochs:
                ...                      # one epoch
                self.epoch += 1
            return self.epoch

    jobkit.remote(backend="slurm", time="1h")(Train()).submit(100)
"""

from __future__ import annotations

from typing import Any


class Checkpointable:
    """Base class for callables that resume after a timeout or preemption."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __call__")

    def checkpoint(
        self, *args: Any, **kwargs: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Arguments for the resumed call, or None to stop.

        The default resubmits this object (with the progress in its
        attributes) and the same arguments.  Override to save large state
        elsewhere, or to change the arguments.
        """
        return args, kwargs
