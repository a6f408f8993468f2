"""Resolve ``MODULE:FUNC`` for ``jobkit plan``, as ``python -m`` would find it."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from jobkit.errors import ConfigError

if TYPE_CHECKING:
    from jobkit.resources import Resources


def load_target(target: str) -> tuple[Any, Resources | None, str | None]:
    """The callable, its resources and backend (when decorated with @remote)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(
            f"{target!r} is not MODULE:FUNC (e.g. 'train:main' or 'pkg.jobs:train')",
            param_hint="TARGET",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} for {target!r}: {exc}; run from the "
            "directory that holds it, or install its package"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    from jobkit.api import RemoteFunction

    if isinstance(obj, RemoteFunction):
        return obj._fn, obj.resources, obj.backend
    if not callable(obj):
        raise ConfigError(f"{target!r} is {type(obj).__name__}, not a function")
    return obj, None, None


def job_name(fn: Any) -> str:
    """The name a submit gives a job of ``fn`` when ``name=`` is not set."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)
