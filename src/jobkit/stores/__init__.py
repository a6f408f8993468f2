"""Stores by URL scheme: ``open_store("sqlite:///~/jobs.db")``.

Modelled on fsspec's ``registry.py``: a sorted table ``scheme -> "module:Class"``
with the install hint to show when an optional extra is missing, a read-only
public view (:func:`known_stores`), :func:`register_store` that refuses to
replace an entry unless ``clobber=True``, and the entry-point group
``jobkit.stores`` for third-party stores.  Nothing is imported until a scheme
is opened, so ``import jobkit.stores`` stays cheap for the CLI, and entry
points are only scanned for a scheme the table does not know.

A store class is built with its ``from_url(url)`` classmethod (part of the
:class:`~jobkit.stores.base.Store` contract); it raises ConfigError for a URL
it cannot use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jobkit.errors import ConfigError

from .base import Store

__all__ = ["Store", "StoreSpec", "known_stores", "open_store", "register_store"]

ENTRY_POINT_GROUP = "jobkit.stores"


@dataclass(frozen=True)
class StoreSpec:
    """Where a store class lives, and what to tell users who lack its extra."""

    target: str | type[Store]
    """``"module:Class"`` (imported on first use) or the class itself."""
    install_hint: str | None = None


_registry: dict[str, StoreSpec] = {
    "memory": StoreSpec("jobkit.stores.memory:MemoryStore"),
    "s3": StoreSpec("jobkit.stores.s3:S3Store", "pip install 'jobkit[s3]'"),
    "sqlite": StoreSpec("jobkit.stores.sqlite:SQLiteStore"),
}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_URL_FORMS = (
    "'sqlite:///abs/path/jobkit.db', 'sqlite:///~/jobkit.db', 'memory://', 's3://bucket/prefix'"
)


def known_stores() -> Mapping[str, StoreSpec]:
    """A read-only view of the registered schemes, sorted by name."""
    return MappingProxyType(dict(sorted(_registry.items())))


def register_store(
    scheme: str,
    target: str | type[Store],
    *,
    clobber: bool = False,
    install_hint: str | None = None,
) -> None:
    """Make ``open_store`` build ``target`` for URLs ``scheme://...``.

    ``target`` is ``"module:Class"`` (imported lazily) or a Store subclass.
    Replacing an existing scheme needs ``clobber=True``.
    """
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ConfigError(
            f"store scheme {scheme!r} is not valid: use lowercase letters, digits, '+', '-' "
            "or '.', starting with a letter"
        )
    if isinstance(target, str):
        if target.count(":") != 1 or not all(target.split(":")):
            raise ConfigError(f"store target {target!r} must look like 'package.module:Class'")
    elif not (isinstance(target, type) and issubclass(target, Store)):
        raise ConfigError(f"store target {target!r} is neither 'module:Class' nor a Store class")
    if scheme in _registry and not clobber:
        raise ConfigError(
            f"store scheme {scheme!r} is already registered ({_describe(_registry[scheme])}); "
            "pass clobber=True to replace it"
        )
    _registry[scheme] = StoreSpec(target, install_hint)


def open_store(url: str) -> Store:
    """Open the store a URL names; ConfigError says what is wrong with a bad one."""
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be a string, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(
            f"store URL {url!r} is not of the form 'scheme://...'; valid forms: {_URL_FORMS}"
        )
    scheme = scheme.lower()
    spec = _registry.get(scheme) or _from_entry_points(scheme)
    if spec is None:
        raise ConfigError(
            f"store URL {url!r}: unknown scheme {scheme!r}; known schemes: "
            f"{', '.join(sorted(_registry))} (third-party stores register through the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        )
    cls = _load(scheme, spec)
    store = cls.from_url(url)
    if not isinstance(store, Store):
        raise ConfigError(f"store {scheme!r} ({_describe(spec)}) did not return a Store")
    return store


def _from_entry_points(scheme: str) -> StoreSpec | None:
    """Look ``scheme`` up among installed distributions; remember what is found."""
    import importlib.metadata  # ~20 ms: only for schemes the table does not know

    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        spec = StoreSpec(entry.value)
        _registry.setdefault(scheme, spec)
        return spec
    return None


def _load(scheme: str, spec: StoreSpec) -> type[Store]:
    if not isinstance(spec.target, str):
        return spec.target
    module_name, _, class_name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"the {scheme!r} store is not available in this installation of jobkit "
                f"(no module {module_name!r}); use one of: "
                f"{', '.join(s for s in sorted(_registry) if s != scheme)}"
            ) from exc
        hint = f"; install it with: {spec.install_hint}" if spec.install_hint else ""
        raise ConfigError(
            f"the {scheme!r} store needs a package that is not installed ({exc}){hint}"
        ) from exc
    cls: Any = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Store)):
        raise ConfigError(f"store {scheme!r}: {spec.target!r} does not name a Store class")
    return cls


def _describe(spec: StoreSpec) -> str:
    target = spec.target
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
