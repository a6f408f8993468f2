"""Where jobkit keeps its files on this machine.

Kept free of heavy imports: the worker and the CLI both need these paths
before (or without) loading pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$JOBKIT_HOME``, else ``~/.local/share/jobkit``."""
    env = os.environ if environ is None else environ
    raw = env.get("JOBKIT_HOME")
    if raw:
        return Path(raw).expanduser().absolute()
    return Path("~/.local/share/jobkit").expanduser()


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by its owner only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
