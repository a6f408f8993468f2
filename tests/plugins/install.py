"""Install the toy backend distribution the way an installer would, offline.

pip needs ``wheel`` to build from ``pyproject.toml`` with setuptools, which a
clean checkout may lack; what importlib.metadata finds is only a
``*.dist-info`` directory (METADATA, entry_points.txt) beside the module on
``sys.path``, so this writes exactly that, from the distribution's own
pyproject.toml: the entry points users' plugins declare are the ones tested.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOY = Path(__file__).parent / "jobkit_toy"


def install_distribution(source: Path, site: Path) -> Path:
    """Install the single-module distribution at ``source`` into ``site``."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in points.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module in source.glob("*.py"):
        shutil.copy(module, site / module.name)
    return site
