"""Where jobkit keeps its files on this machine.

Kept free of heavy imports: the worker and the CLI both need these paths
before (or without) loading pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def user_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$HOME`` from ``environ`` (so tests can pass their own), else the account's."""
    env = os.environ if environ is None else environ
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def expand(path: str, environ: Mapping[str, str] | None = None) -> Path:
    """``~`` expanded against :func:`user_home` of ``environ``."""
    if path == "~" or path.startswith("~/"):
        return user_home(environ) / path[2:]
    return Path(path).expanduser()


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where jobkit keeps per-user data: ``$JOBKIT_HOME``, else ``~/.local/share/jobkit``."""
    env = os.environ if environ is None else environ
    raw = env.get("JOBKIT_HOME")
    if raw:
        return expand(raw, env).absolute()
    return user_home(env) / ".local" / "share" / "jobkit"


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """The store when nothing names one: ``jobkit.db`` in :func:`home_dir`."""
    return f"sqlite://{os.path.abspath(home_dir(environ) / 'jobkit.db')}"


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/jobkit/config.toml`` (absolute XDG only), else ``~/.config/...``."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME", "")
    root = Path(xdg) if xdg and os.path.isabs(xdg) else user_home(env) / ".config"
    return root / "jobkit" / "config.toml"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by its owner only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
