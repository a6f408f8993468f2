"""Backends by name: a lazy registry with install hints.

As in fsspec's registry, the table maps a name to ``"module:Class"`` and to
the text to show when the extra it needs is missing; third-party backends
register through the ``jobkit.backends`` entry-point group, looked up only
for names not in the table.  There is no ``register_backend`` call: a
process-wide mutable table would be the hidden global state STYLE.md warns
of, and an entry point works in every process (the worker's included).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from jobkit.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from jobkit.backends.base import Backend, BackendServices
    from jobkit.config import Config

    SettingsT = TypeVar("SettingsT", bound=BaseModel)

_known: dict[str, tuple[str, str]] = {
    "kubernetes": (
        "jobkit.backends.kubernetes.backend:KubernetesBackend",
        "pip install 'jobkit[kubernetes]'",
    ),
    "local": ("jobkit.backends.local:LocalBackend", ""),
    "slurm": ("jobkit.backends.slurm.backend:SlurmBackend", "pip install 'jobkit[slurm]'"),
}


def known_backends() -> Mapping[str, tuple[str, str]]:
    """Read-only view of the registry: name -> (target, install hint)."""
    return types.MappingProxyType(_known)


def _entry_point(name: str) -> str | None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="jobkit.backends"):
        if ep.name == name:
            return str(ep.value)
    return None


def backend_class(name: str) -> type[Backend]:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"invalid backend {name!r}: expected one of {', '.join(sorted(_known))}")
    target, hint = _known.get(name, (None, ""))
    if target is None:
        target = _entry_point(name)
        if target is None:
            raise ConfigError(
                f"unknown backend {name!r}: valid backends are {', '.join(sorted(_known))} "
                "(or install a package that registers one under 'jobkit.backends')"
            )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if hint and exc.name and not exc.name.startswith("jobkit"):
            raise BackendError(f"backend {name!r} needs {exc.name}: {hint}") from exc
        raise BackendError(f"backend {name!r} is not available in this version of jobkit") from exc
    cls: type[Backend] = getattr(module, attr)
    return cls


def backend_settings(config: Any, name: str, model: type[SettingsT]) -> SettingsT:
    """The ``[backends.NAME]`` table of ``config`` validated by a plugin's own
    pydantic ``model``, so third-party backends get the built-ins' one-line
    errors (the key, the value, the fix) without ``Config`` knowing them."""
    from pydantic import ValidationError

    tables = getattr(config, "backends", None) or {}
    table = tables.get(name, {})
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in error["loc"]) or "(table)"
        where = f"backends.{name}.{key}"
        if error["type"] == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields)) or "none"
            raise ConfigError(
                f"unknown key {where!r} for the {name} backend: valid keys are {valid}"
            ) from None
        raise ConfigError(
            f"invalid {where}={error.get('input')!r}: {error['msg']} "
            f"(fix it in the [backends.{name}] table)"
        ) from None


def open_backend(name: str, config: Config, services: BackendServices) -> Backend:
    """The backend ``name`` built from its own settings in ``config`` and ``services``."""
    cls = backend_class(name)
    return cls(cls.settings_from(config), services)


def availability(name: str, config: Config) -> tuple[bool, str]:
    """Whether backend ``name`` is usable with ``config``, and why not; a missing
    extra or an invalid settings table raises (BackendError, ConfigError)."""
    cls = backend_class(name)
    ok, why = cls.available(cls.settings_from(config))
    return bool(ok), str(why)
