"""Launchers by name: the glue a backend needs around the worker, looked up lazily.

``python -m jobkit.worker --launcher NAME`` runs a job through the launcher
``NAME`` instead of the plain worker (Slurm's runs every task's rank and
requeues through ``scontrol``).  The worker sits *below* the backends: a
backend's in-job code calls :func:`jobkit.worker.run_job`, never the other
way round.  So, as in the backend registry, this table maps a name to
``"module:function"`` and the module is imported only when that launcher is
asked for; ``jobkit.worker`` imports no backend and no import cycle forms::

    backends/slurm/entry.py ──imports──► worker.py ──imports──► launchers.py
              ▲                                                     │
              └──────────── importlib, by name, at run time ────────┘

A launcher is called as ``launcher(store_url, job_id)`` and returns the
worker's exit code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from jobkit.errors import ConfigError

Launcher = Callable[[str, str], int]

PLAIN = "plain"
"""The worker itself: no glue."""

_known: dict[str, str] = {
    "slurm": "jobkit.backends.slurm.entry:run_in_slurm",
}


def launcher_names() -> tuple[str, ...]:
    """Every name ``--launcher`` accepts, ``plain`` first."""
    return (PLAIN, *sorted(_known))


def load_launcher(name: str) -> Launcher:
    """The launcher registered as ``name``; ConfigError names the valid ones."""
    target = _known.get(name)
    if target is None:
        raise ConfigError(
            f"unknown launcher {name!r}: valid launchers are {', '.join(sorted(_known))}"
        )
    module_name, _, attr = target.partition(":")
    return cast(Launcher, getattr(importlib.import_module(module_name), attr))
