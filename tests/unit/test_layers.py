"""The layers show in the imports: client -> backends -> worker -> store.

Read from the source with ``ast`` (every import, also those inside functions
and under ``TYPE_CHECKING``), and checked once in a real interpreter, so a
lazy import cannot hide a dependency the picture forbids.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jobkit
from jobkit.config import Config

SRC = Path(jobkit.__file__).resolve().parent
BACKENDS = SRC / "backends"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere, as absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from jobkit import client`` imports the submodule jobkit.client
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in SRC.rglob("*.py")}
    return {
        name: {dep for dep in imported_modules(path) if dep in modules}
        for name, path in modules.items()
    }


def test_no_backend_module_imports_the_client() -> None:
    offenders = [
        str(path.relative_to(SRC.parent))
        for path in sorted(BACKENDS.rglob("*.py"))
        if "jobkit.client" in imported_modules(path)
    ]
    assert not offenders, f"backends must not import jobkit.client: {', '.join(offenders)}"


def test_the_worker_imports_no_backend() -> None:
    worker = SRC / "worker.py"
    found = sorted(m for m in imported_modules(worker) if m.startswith("jobkit.backends"))
    assert not found, f"jobkit/worker.py imports {', '.join(found)}: look launchers up by name"


def test_nothing_the_worker_imports_reaches_a_backend() -> None:
    """No path worker -> ... -> backends in the static graph, so no cycle through them."""
    graph = import_graph()
    seen, todo = {"jobkit.worker"}, ["jobkit.worker"]
    parent: dict[str, str] = {}
    while todo:
        current = todo.pop()
        for dep in graph[current]:
            if dep not in seen:
                seen.add(dep)
                parent[dep] = current
                todo.append(dep)
    reached = sorted(m for m in seen if m.startswith("jobkit.backends"))
    if reached:
        chain, node = [reached[0]], reached[0]
        while node in parent:
            node = parent[node]
            chain.append(node)
        raise AssertionError(f"the worker reaches a backend: {' -> '.join(reversed(chain))}")


def test_the_backend_package_has_no_cycle_with_the_worker() -> None:
    graph = import_graph()
    assert "jobkit.worker" in graph["jobkit.backends.slurm.entry"]  # the allowed direction
    assert not {m for m in graph["jobkit.worker"] if m.startswith("jobkit.backends")}


def test_a_worker_process_loads_no_backend() -> None:
    script = (
        "import sys, jobkit.worker\n"
        "try:\n"
        "    jobkit.worker.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('jobkit.backends')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"
    assert "--launcher {plain,slurm}" in out  # the names come from the launcher table


def test_the_slurm_launcher_is_found_by_name() -> None:
    from jobkit.backends.slurm.entry import run_in_slurm
    from jobkit.launchers import launcher_names, load_launcher

    assert launcher_names() == ("plain", "slurm")
    assert load_launcher("slurm") is run_in_slurm


def test_an_unknown_launcher_is_one_clear_error() -> None:
    import pytest

    from jobkit.errors import ConfigError
    from jobkit.launchers import load_launcher

    with pytest.raises(ConfigError, match="unknown launcher 'moon': valid launchers are slurm"):
        load_launcher("moon")


def test_dead_backend_hooks_are_gone() -> None:
    import jobkit.backends
    from jobkit.backends.base import Backend

    assert not hasattr(Backend, "payload_meta")
    assert not hasattr(jobkit.backends, "register_backend")


def test_a_backend_is_built_from_its_settings_and_services_not_the_client(
    tmp_path: Path,
) -> None:
    from jobkit.backends import backend_class, open_backend
    from jobkit.backends.base import BackendServices
    from jobkit.client import Client
    from jobkit.config import LocalConfig
    from jobkit.resources import parse_resources
    from jobkit.stores import open_store

    url = f"sqlite:///{tmp_path}/jobkit.db"
    config = Config(store=url, local=LocalConfig(cpus=3), slurm={"folder": str(tmp_path / "s")})
    poked: list[list[str] | None] = []
    services = BackendServices(
        store=open_store(url),
        key=lambda: b"k" * 32,
        poke=lambda ids=None: poked.append(None if ids is None else list(ids)),
        report=lambda records, seen: None,
    )

    local = open_backend("local", config, services)
    assert local.store is services.store
    assert local.settings == LocalConfig(cpus=3)  # its own settings, from [local]
    assert backend_class("local").settings_from(config) is config.local

    resources = parse_resources(cpus=2, mem="1GB", time="5m")
    through_services = open_backend("slurm", config, services).plan(resources, name="train")
    through_client = Client(config).backend("slurm").plan(resources, name="train")
    assert through_services == through_client
    assert "train" in through_services


def test_the_cli_modules_import_each_other_without_cycles() -> None:
    """A command module reaching back into ``jobkit.cli.app`` (which imports
    every command), or ``render`` and ``usage_view`` importing each other,
    only loads because the import hides in a function: shared pieces belong
    in a module both import at top level (``options``, ``session``)."""
    graph = {
        name: {dep for dep in deps if dep.startswith("jobkit.cli.")}
        for name, deps in import_graph().items()
        if name.startswith("jobkit.cli.")
    }
    cycles: list[str] = []

    def visit(name: str, path: list[str]) -> None:
        for dep in sorted(graph.get(name, ())):
            if dep in path:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif len(path) < len(graph):
                visit(dep, [*path, dep])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles in jobkit.cli: " + "; ".join(sorted(set(cycles))[:5])
