"""The typed configuration: :class:`Config` and :class:`LocalConfig`, and their validators.

These models are what every client, backend and CLI command reads, so they
live apart from the code that finds and merges configuration files
(:mod:`jobkit.config_loading`): a backend that only needs the types does not
need TOML discovery, and the rules for one value (what a store URL, a key or
``local.max_jobs`` must look like) are stated once, here, for every layer.

The helpers below the models are shared with the loader, which validates each
layer with these same models: anchoring relative paths and ``sqlite://`` URLs,
and the default store.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from jobkit.numbers import to_number, whole_number
from jobkit.paths import default_store_url, expand
from jobkit.resources import Resources, parse_resources
from jobkit.stores.sqlite_url import canonical_sqlite_url, is_sqlite_url
from jobkit.units import parse_duration, parse_size

__all__ = ["Config", "LocalConfig"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
"""A backend or profile name."""
STORE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""The start of a store URL: a scheme and ``://``."""


class LocalConfig(BaseModel):
    """Settings of the local backend; ``None`` means detect from the machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float | None = None
    mem: int | None = None
    """Bytes; accepts sizes like ``"16GB"``."""
    gpus: int | list[str] | None = None
    """Detected with nvidia-smi when ``None``; an int or names declare fake GPUs (tests)."""
    max_jobs: int | None = None
    """Cap on concurrently running jobs, on top of fitting cpus/mem/gpus."""
    idle_timeout: float = 60.0
    """Seconds an idle worker pool lingers before shutting down."""
    start_method: Literal["warm", "fork", "spawn"] | None = None
    """How a job gets a process: ``warm`` (reused workers, each running many
    jobs; a job asks for a fresh one with ``isolate=True``), ``fork`` (a fresh
    fork of a warm interpreter per job) or ``spawn`` (a fresh interpreter)."""

    @property
    def resolved_start_method(self) -> Literal["warm", "fork", "spawn"]:
        """``start_method``, defaulting to warm workers on Linux and spawn elsewhere."""
        if self.start_method is not None:
            return self.start_method
        return "warm" if sys.platform.startswith("linux") else "spawn"

    @field_validator("cpus", mode="before")
    @classmethod
    def _check_cpus(cls, value: Any) -> float | None:
        if value is None:
            return None
        number = to_number(value)
        if not number > 0:
            raise ValueError("cpus must be > 0")
        return number

    @field_validator("mem", mode="before")
    @classmethod
    def _check_mem(cls, value: Any) -> int | None:
        if value is None:
            return None
        nbytes = parse_size(value)
        if nbytes <= 0:
            raise ValueError("mem must be > 0")
        return nbytes

    @field_validator("gpus", mode="before")
    @classmethod
    def _check_gpus(cls, value: Any) -> int | list[str] | None:
        if value is None:
            return None
        if isinstance(value, list | tuple):
            if not all(isinstance(name, str) and name.strip() for name in value):
                raise ValueError("GPU names must be non-empty strings")
            return [name.strip() for name in value]
        return whole_number(value, minimum=0)

    @field_validator("max_jobs", mode="before")
    @classmethod
    def _check_max_jobs(cls, value: Any) -> int | None:
        if value is None:
            return None
        return whole_number(value, minimum=1)

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _check_idle_timeout(cls, value: Any) -> float:
        return parse_duration(value).total_seconds()

    @field_validator("start_method", mode="before")
    @classmethod
    def _check_start_method(cls, value: Any) -> str | None:
        return value.strip().lower() if isinstance(value, str) else value


class Config(BaseModel):
    """Everything a client needs, resolved from all layers.

    Build it with :func:`jobkit.config_loading.load_config`, which says which
    layer holds a bad value; constructing it directly checks values only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = "local"
    store: str = Field(default_factory=lambda: default_store(os.environ))
    """Store URL; ``sqlite://`` URLs in the canonical form ``sqlite:///abs/path.db``."""
    profile: str | None = None
    """The profile that was applied, if any."""
    resources: dict[str, Any] = Field(default_factory=dict)
    """Default resources of every job: only the keys set, validated and normalized."""
    poll_interval: float = 1.0
    """Seconds between state polls of the store and backends."""
    key: SecretStr | None = None
    """Hex signing key (clusters); otherwise ``key_file`` or the per-user key is used."""
    key_file: Path | None = None
    local: LocalConfig = Field(default_factory=LocalConfig)
    slurm: dict[str, Any] = Field(default_factory=dict)
    """Slurm backend settings (per-job sbatch extras go in ``resources.slurm``)."""
    kubernetes: dict[str, Any] = Field(default_factory=dict)
    """Kubernetes backend settings (per-job extras go in ``resources.kubernetes``)."""
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """``[backends.NAME]``: settings of third-party backends, one table each.  Only
    the shape is checked here; the plugin's own settings class validates the
    contents (:func:`jobkit.backends.backend_settings`), so a typo among the
    top-level keys is still caught."""

    @property
    def default_resources(self) -> Resources:
        """``resources`` as a model, ready for ``.merged(...)`` with a job's own."""
        return Resources(**self.resources)

    @field_validator("backend", mode="before")
    @classmethod
    def _check_backend(cls, value: Any) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value.strip()):
            raise ValueError("not a backend name")
        return value.strip().lower()

    @field_validator("store", mode="before")
    @classmethod
    def _check_store(cls, value: Any) -> str:
        if not isinstance(value, str) or not STORE_RE.match(value.strip()):
            raise ValueError("not a store URL")
        return anchor_store(value.strip(), Path.cwd(), os.environ)

    @field_validator("profile", mode="before")
    @classmethod
    def _check_profile(cls, value: Any) -> str | None:
        if value is not None and not (isinstance(value, str) and NAME_RE.match(value)):
            raise ValueError("not a profile name")
        return value

    @field_validator("resources", mode="before")
    @classmethod
    def _check_resources(cls, value: Any) -> dict[str, Any]:
        table = resources_table(value)
        resources = parse_resources(**table)
        return {name: getattr(resources, name) for name in table}

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _check_poll_interval(cls, value: Any) -> float:
        seconds = parse_duration(value).total_seconds()
        if seconds <= 0:
            raise ValueError("poll_interval must be > 0")
        return seconds

    @field_validator("key", mode="before")
    @classmethod
    def _check_key(cls, value: Any) -> str | None:
        if value is None:
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str) or len(text.strip()) < 32:
            raise ValueError("not a key")
        try:
            bytes.fromhex(text.strip())
        except ValueError:
            raise ValueError("not a key") from None
        return text.strip().lower()

    @field_validator("key_file", mode="before")
    @classmethod
    def _check_key_file(cls, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise ValueError("not a path")
        return anchor_path(os.fspath(value), Path.cwd(), os.environ)

    @field_validator("slurm", "kubernetes", mode="before")
    @classmethod
    def _check_table(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError("not a table")
        return dict(value)

    @field_validator("backends", mode="before")
    @classmethod
    def _check_backends(cls, value: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(value, Mapping):
            raise ValueError("not a table")
        tables: dict[str, dict[str, Any]] = {}
        for name, table in value.items():
            if not (isinstance(name, str) and NAME_RE.match(name)):
                raise ValueError("not a backend name")
            if not isinstance(table, Mapping) or not all(isinstance(k, str) for k in table):
                raise ValueError("not a table")
            tables[name.lower()] = dict(table)
        return tables


# ------------------------------------------------------------------------ helpers


def resources_table(value: Any) -> dict[str, Any]:
    """The keys set in a resources table or :class:`Resources`, as a plain dict."""
    if isinstance(value, Resources):
        return {name: getattr(value, name) for name in value.model_fields_set}
    if not isinstance(value, Mapping):
        raise ValueError("not a table")
    return dict(value)


def anchor_path(path: str, base_dir: Path, environ: Mapping[str, str]) -> Path:
    """``path`` with ``~`` expanded, relative to ``base_dir`` (the file that names it)."""
    expanded = expand(path, environ)
    return expanded if expanded.is_absolute() else base_dir / expanded


def anchor_store(url: str, base_dir: Path, environ: Mapping[str, str]) -> str:
    """A ``sqlite://`` URL in its canonical absolute form, ``./`` paths anchored to
    ``base_dir`` (see :mod:`jobkit.stores.sqlite_url`); other URLs unchanged."""
    if not is_sqlite_url(url):
        return url
    return canonical_sqlite_url(url, base_dir, environ)


def default_store(environ: Mapping[str, str]) -> str:
    """The lowest layer's store; here because :class:`Config`'s default needs it too."""
    return default_store_url(environ)
