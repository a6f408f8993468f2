"""Which namespace jobs go to, found as kubectl and the Kubernetes client find it.

In order, the first that names one wins::

    [kubernetes] namespace          jobkit's config
    the kubeconfig context's        [kubernetes] context, else current-context, in
      namespace                     [kubernetes] kubeconfig, else $KUBECONFIG (a list:
                                    first file to say wins), else ~/.kube/config
    the in-cluster ServiceAccount   /var/run/secrets/kubernetes.io/serviceaccount/namespace
      namespace                     ([kubernetes] namespace_file)
    "default"

A user whose context says ``namespace: team-a`` expects kubectl and jobkit to
agree; sending their jobs to ``default`` instead fails late (no Role there) or,
worse, succeeds where no one looks.  With ``api_server`` set jobkit talks to
that URL without a kubeconfig, so no context applies.

The kubeconfig is read as plain YAML here (no client import), so ``jobkit
backends`` stays quick.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobkit.errors import ConfigError

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
"""Where a pod's ServiceAccount token volume puts the pod's namespace."""

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclasses.dataclass(frozen=True)
class Namespace:
    name: str
    source: str
    """Where it came from, for ``jobkit plan`` and ``jobkit backends``."""


def resolve_namespace(
    configured: str | None,
    *,
    api_server: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace_file: str = SERVICE_ACCOUNT_NAMESPACE,
    environ: Mapping[str, str] | None = None,
) -> Namespace:
    """The namespace in force and its source (see the module docstring)."""
    if configured is not None:
        return Namespace(configured, "[kubernetes] namespace")
    env = os.environ if environ is None else environ
    if not api_server:
        found = _context_namespace(_kubeconfig_files(kubeconfig, env), context)
        if found is not None:
            return found
    path = Path(namespace_file)
    try:
        name = path.read_text().strip()
    except OSError:
        name = ""
    if name:
        return Namespace(name, f"the in-cluster ServiceAccount ({path})")
    return Namespace("default", "Kubernetes' default (no namespace configured)")


def _kubeconfig_files(kubeconfig: str | None, env: Mapping[str, str]) -> list[Path]:
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    listed = env.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path(DEFAULT_KUBECONFIG).expanduser()]


def _context_namespace(files: list[Path], context: str | None) -> Namespace | None:
    """The chosen context's namespace, merging files as kubectl does (first wins)."""
    configs = [(path, _load(path)) for path in files if path.is_file()]
    if not configs:
        return None
    name = context
    if name is None:
        name = next(
            (str(c["current-context"]) for _, c in configs if c.get("current-context")), None
        )
    if not name:
        return None
    for path, config in configs:
        for entry in config.get("contexts") or ():
            if isinstance(entry, Mapping) and entry.get("name") == name:
                namespace = (entry.get("context") or {}).get("namespace")
                if namespace:
                    return Namespace(str(namespace), f"kubeconfig context {name!r} ({path})")
                return None
    return None


def _load(path: Path) -> Mapping[str, Any]:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError as exc:  # comes with the kubernetes client
        raise ConfigError(
            f"reading the kubeconfig {path} needs PyYAML: pip install 'jobkit[kubernetes]'"
        ) from exc
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(
            f"cannot read the kubeconfig {path} ({first}): fix it, or name another with "
            "[kubernetes] kubeconfig or KUBECONFIG"
        ) from exc
    return data if isinstance(data, Mapping) else {}
