"""Loading configuration: find every layer, check each alone, merge them into a :class:`Config`.

Constructors that each look up their own settings (dask-jobqueue's ``Job``)
make it impossible to say where a value came from.  Here every source becomes
a *layer*, each layer is validated on its own with the models of
:mod:`jobkit.config` -- so an error names the exact file, profile table,
environment variable or call that holds the bad key -- and the layers then
merge, nested tables key-wise, into a frozen :class:`Config`.  The README's
precedence, lowest to highest::

    defaults                      backend="local", store=sqlite:///$JOBKIT_HOME/jobkit.db
      < user config               $XDG_CONFIG_HOME/jobkit/config.toml (~/.config/...)
          [profiles.NAME]         ...applied on top of that file's base table
      < jobkit.toml / [tool.jobkit]  the nearest, searching upward from the cwd
          [profiles.NAME]         ([tool.jobkit.profiles.NAME] in pyproject.toml)
      < JOBKIT_* variables        JOBKIT_BACKEND, _STORE, _PROFILE, _KEY, _KEY_FILE, ...
      < jobkit.configure(...)     the overrides: the caller's stack, lowest first
      < with jobkit.use(...)      (this module keeps no state; jobkit.context
      < call arguments            holds configure() and use())

Relative paths (``key_file``, ``sqlite://./rel.db``) are anchored to the file
that names them, or to the working directory for the environment and
overrides, so a project's ``jobkit.toml`` means the same from any subdirectory.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from jobkit.config import (
    NAME_RE,
    STORE_RE,
    Config,
    LocalConfig,
    anchor_path,
    anchor_store,
    default_store,
    resources_table,
)
from jobkit.errors import ConfigError
from jobkit.numbers import whole_number_help
from jobkit.paths import user_config_file
from jobkit.resources import Resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ENV_VARS", "Overrides", "load_config"]

ENV_VARS: Mapping[str, str] = {
    "JOBKIT_BACKEND": "backend",
    "JOBKIT_STORE": "store",
    "JOBKIT_PROFILE": "profile",
    "JOBKIT_KEY": "key",
    "JOBKIT_KEY_FILE": "key_file",
    "JOBKIT_POLL_INTERVAL": "poll_interval",
}
"""Environment variables read as settings (``JOBKIT_HOME`` moves the default store).

Other ``JOBKIT_*`` names are ignored: workers set some for their own use.
"""

_EXPECTED: Mapping[str, str] = {
    "backend": "expected a backend name like 'local', 'slurm' or 'kubernetes'",
    "store": "expected a store URL like 'sqlite:///path/jobkit.db', 'memory://' "
    "or 's3://bucket/prefix'",
    "profile": "expected a profile name (letters, digits, '_', '.', '-')",
    "resources": "expected a table of resources like {cpus = 2, mem = '8GB'}",
    "poll_interval": "expected a number of seconds > 0 (or a duration like '2s')",
    "key": "expected a hex string of at least 32 characters (the value is not shown)",
    "key_file": "expected a path to a file holding the hex signing key",
    "local": "expected a table of local-backend settings",
    "local.cpus": "expected a number of CPUs > 0 (leave unset to detect)",
    "local.mem": "expected a size like '16GB', '512MiB' or a number of bytes "
    "(leave unset to detect)",
    "local.gpus": "expected a number of GPUs >= 0 or a list of GPU names "
    "(leave unset to detect with nvidia-smi)",
    "local.max_jobs": whole_number_help(1),
    "local.idle_timeout": "expected a number of seconds >= 0 (or a duration like '5m')",
    "local.start_method": "expected 'warm', 'fork' or 'spawn' "
    "(leave unset for the platform default)",
    "slurm": "expected a table of Slurm backend settings",
    "kubernetes": "expected a table of Kubernetes backend settings",
    "backends": "expected one table of settings per backend: [backends.NAME]",
}


class Overrides(dict[str, Any]):
    """Explicit settings that remember who gave them, for error messages.

    A plain mapping in ``load_config(overrides=...)`` is reported as
    ``configure()``; wrap call arguments as ``Overrides("remote()", cpus=2)``.
    """

    def __init__(self, source: str, /, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source


def load_config(
    overrides: Sequence[Mapping[str, Any]] = (),
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve all layers into a :class:`Config`; raises one-line :class:`ConfigError`.

    ``overrides`` is the caller's stack (``configure()``, ``use()``, call
    arguments), lowest first.  ``None`` values in it mean "not given", and
    resource names at its top level (``cpus=2``) go into ``resources``.
    """
    env = os.environ if environ is None else environ
    here = (cwd or Path.cwd()).absolute()
    files = [f for f in (_user_file(env), _project_file(here)) if f is not None]

    layers = [_Layer("defaults", {"store": default_store(env)}, here)]
    layers += [_Layer(f.source, f.base, f.path.parent, file=f) for f in files]
    for var, key in ENV_VARS.items():
        raw = env.get(var, "").strip()
        if raw:
            layers.append(_Layer(f"{var} environment variable", {key: raw}, here))
    for mapping in overrides:
        source = str(getattr(mapping, "source", "configure()"))
        layers.append(_Layer(source, _override_table(source, mapping), here, is_override=True))
    for layer in layers:
        layer.validate(env)

    profile = _select_profile(layers, files)
    merged: dict[str, Any] = {}
    for layer in layers:
        layer.merge_into(merged)
        if profile is not None and layer.file is not None and profile in layer.file.profiles:
            file = layer.file
            source = (
                f"{file.source.removesuffix(' [tool.jobkit]')} [{file.profiles_table}.{profile}]"
            )
            on_top = _Layer(source, file.profiles[profile], file.path.parent)
            on_top.validate(env)
            on_top.merge_into(merged)
    merged["profile"] = profile
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:  # pragma: no cover - every layer passed on its own
        raise ConfigError(f"configuration: {_describe(exc, _FILE_KEYS)}") from None


# ------------------------------------------------------------------------- layers

_CONFIG_KEYS = frozenset(Config.model_fields)
_RESOURCE_KEYS = frozenset(Resources.model_fields) - _CONFIG_KEYS  # slurm/kubernetes: config
_FILE_KEYS = sorted(_CONFIG_KEYS | {"profiles"})
_OVERRIDE_KEYS = sorted(_CONFIG_KEYS | _RESOURCE_KEYS)


@dataclass
class _Layer:
    """One source of settings: where it came from, its table, and its base directory."""

    source: str
    table: dict[str, Any]
    base_dir: Path
    is_override: bool = False
    file: _File | None = None

    def validate(self, environ: Mapping[str, str]) -> None:
        """Check this layer alone, anchoring relative paths to ``base_dir``."""
        table = self.table
        if "key" in table and "key_file" in table:
            raise ConfigError(f"{self.source}: set either key or key_file, not both")
        if isinstance(table.get("store"), str) and STORE_RE.match(table["store"].strip()):
            try:
                table["store"] = anchor_store(table["store"].strip(), self.base_dir, environ)
            except ConfigError as exc:
                raise ConfigError(f"{self.source}: {exc}") from None
        key_file = table.get("key_file")
        if isinstance(key_file, str | os.PathLike) and os.fspath(key_file):
            table["key_file"] = anchor_path(os.fspath(key_file), self.base_dir, environ)
        try:
            Config.model_validate(table)
        except ValidationError as exc:
            valid = _OVERRIDE_KEYS if self.is_override else _FILE_KEYS
            raise ConfigError(f"{self.source}: {_describe(exc, valid)}") from None

    def merge_into(self, merged: dict[str, Any]) -> None:
        """Key-wise merge; ``key`` and ``key_file`` replace each other."""
        if "key" in self.table:
            merged.pop("key_file", None)
        if "key_file" in self.table:
            merged.pop("key", None)
        _deep_merge(merged, self.table)


@dataclass
class _File:
    path: Path
    source: str
    base: dict[str, Any]
    profiles: dict[str, dict[str, Any]]

    @property
    def profiles_table(self) -> str:
        return "tool.jobkit.profiles" if self.path.name == "pyproject.toml" else "profiles"


def _user_file(environ: Mapping[str, str]) -> _File | None:
    path = user_config_file(environ)
    return _file(path, str(path), _read_toml(path)) if _is_file(path) else None


def _project_file(cwd: Path) -> _File | None:
    """The nearest jobkit.toml or pyproject.toml with [tool.jobkit], from ``cwd`` up."""
    for directory in (cwd, *cwd.parents):
        path = directory / "jobkit.toml"
        if _is_file(path):
            return _file(path, str(path), _read_toml(path))
        path = directory / "pyproject.toml"
        if _is_file(path):
            text = _read_text(path)
            if "jobkit" not in text:  # cheap: most pyproject files never mention us
                continue
            tool = _parse_toml(path, text).get("tool", {})
            table = tool.get("jobkit") if isinstance(tool, dict) else None
            if table is not None:
                return _file(path, f"{path} [tool.jobkit]", table)
    return None


def _file(path: Path, source: str, table: Any) -> _File:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: expected a table of jobkit settings")
    base = dict(table)
    profiles = base.pop("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(
            f"{source}: 'profiles' must hold one table per profile, like [profiles.cluster]"
        )
    for name, profile in profiles.items():
        if not NAME_RE.match(name):
            raise ConfigError(f"{source}: invalid profile name {name!r}: {_EXPECTED['profile']}")
        nested = sorted({"profile", "profiles"} & profile.keys())
        if nested:
            raise ConfigError(
                f"{source}: profile {name!r} cannot set {nested[0]!r}; "
                "profiles are selected by configure(profile=...), JOBKIT_PROFILE or a "
                "top-level 'profile' key"
            )
    return _File(path, source, base, profiles)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:  # e.g. a parent directory we may not search
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"invalid TOML in {path}: the file is not UTF-8 text") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot read config file {path}: {reason}; fix its permissions or remove it"
        ) from None


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path, _read_text(path))


def _override_table(source: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values and move top-level resource names into ``resources``."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {mapping!r}")
    table: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    for key, value in mapping.items():
        if value is None:
            continue
        if key in _RESOURCE_KEYS:
            resources[key] = value
        else:
            table[key] = value
    if resources:
        if "resources" in table:
            try:
                base = resources_table(table["resources"])
            except ValueError:
                base = {}  # validation reports the bad table
            else:
                resources = {**base, **resources}
        table["resources"] = resources
    elif isinstance(table.get("resources"), Resources):
        table["resources"] = resources_table(table["resources"])
    return table


def _select_profile(layers: list[_Layer], files: list[_File]) -> str | None:
    """Highest layer's ``profile`` wins; it must be defined in at least one file."""
    chosen = next(
        (
            (lay.table["profile"], lay.source)
            for lay in reversed(layers)
            if lay.table.get("profile") is not None
        ),
        None,
    )
    if chosen is None:
        return None
    name, selector = chosen
    defined: dict[str, list[str]] = {}
    for file in files:
        for known in file.profiles:
            defined.setdefault(known, []).append(str(file.path))
    if name in defined:
        return str(name)
    close = difflib.get_close_matches(name, sorted(defined), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if defined:
        where = ", ".join(f"{p} ({', '.join(src)})" for p, src in sorted(defined.items()))
        known = f"defined profiles are {where}"
    else:
        known = (
            "no profiles are defined; add a [profiles.NAME] table to jobkit.toml or "
            "~/.config/jobkit/config.toml, or [tool.jobkit.profiles.NAME] to "
            "pyproject.toml"
        )
    raise ConfigError(f"{selector}: unknown profile {name!r}{hint}: {known}")


def _describe(exc: ValidationError, valid_keys: Sequence[str]) -> str:
    """One line for the first error: the key, the value and the expected form."""
    error: ErrorDetails = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    if error["type"] == "extra_forbidden":
        if len(loc) == 2 and loc[0] == "local":
            return _unknown_key(dotted, loc[1], sorted(LocalConfig.model_fields))
        return _unknown_key(dotted, loc[0], valid_keys)
    cause = (error.get("ctx") or {}).get("error")
    if loc[0] in ("resources", "store") and isinstance(cause, ConfigError):
        return str(cause)  # already names the resource, value and fix
    if loc[0] == "key":
        return f"invalid key: {_EXPECTED['key']}"
    field = ".".join(loc[:2]) if loc[0] == "local" and len(loc) > 1 else loc[0]
    return f"invalid {field}={error['input']!r}: {_EXPECTED.get(field, 'invalid value')}"


def _unknown_key(dotted: str, key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    if key in _RESOURCE_KEYS and "resources" in valid and key not in valid:
        hint = f" (resources go under [resources]: {key} = ...)"
    elif close:
        hint = f" (did you mean {close[0]!r}?)"
    else:
        hint = ""
    return f"unknown key {dotted!r}{hint}: valid keys are {', '.join(valid)}"


def _deep_merge(into: dict[str, Any], table: Mapping[str, Any]) -> None:
    for key, value in table.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = _copy_tables(value)


def _copy_tables(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy_tables(item) for key, item in value.items()}
    return value
