"""The ``[kubernetes]`` config table, validated once, with the reason for each default.

Cluster-wide choices live here (namespace, image, the Secret that carries
store credentials, how GPUs are named on this cluster); what one job asks
for lives in :class:`~jobkit.resources.Resources` and its ``kubernetes={...}``
extras (:mod:`.manifest`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from jobkit.errors import ConfigError

from .namespace import SERVICE_ACCOUNT_NAMESPACE, resolve_namespace

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""RFC 1123 label: namespaces, Secret and ServiceAccount names."""
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)
"""The taint NVIDIA's GPU operator and most managed clusters put on GPU nodes."""


@dataclasses.dataclass(frozen=True)
class KubernetesSettings:
    """``[kubernetes]`` in jobkit.toml (or ``jobkit.configure(kubernetes={...})``)."""

    namespace: str = "default"
    """Where Jobs go; from_config resolves it when unset (:mod:`.namespace`)."""
    namespace_source: str = "[kubernetes] namespace"
    """Where ``namespace`` came from (resolved, not a setting)."""
    namespace_file: str = SERVICE_ACCOUNT_NAMESPACE
    """Where the in-cluster ServiceAccount namespace is read from."""
    image: str | None = None
    """Default container image; it must have jobkit and the job's code (``image=`` per call)."""
    python: str = "python"
    """The interpreter inside the image that runs ``-m jobkit.worker``."""
    service_account: str | None = None
    """The pods' ServiceAccount (for IRSA/workload identity to reach the store)."""
    image_pull_secrets: tuple[str, ...] = ()
    secret: str | None = None
    """A Secret whose keys become the pod's environment: the store credentials
    (``AWS_ACCESS_KEY_ID``...) and ``JOBKIT_KEY``, the payload signing key.
    Never put either in a manifest: anyone who may read Jobs would see them."""
    env_secrets: tuple[str, ...] = ()
    """More Secrets exposed as environment variables (envFrom)."""
    gpu_resource: str = "nvidia.com/gpu"
    """The extended resource whole GPUs are requested as (``amd.com/gpu`` on AMD)."""
    gpu_type_label: str = "nvidia.com/gpu.product"
    """Node label ``gpu_type`` selects on (set by NVIDIA's GPU feature discovery)."""
    gpu_types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``gpu_type`` -> that label's value, e.g. ``{"a100": "NVIDIA-A100-SXM4-80GB"}``;
    unmapped types are used as written."""
    gpu_tolerations: tuple[Mapping[str, Any], ...] = GPU_TOLERATIONS
    gpu_sharing: Mapping[str, Any] | None = None
    """How a fraction of a GPU is requested; None refuses fractions.
    ``{"mode": "mig", "profiles": {"0.5": "nvidia.com/mig-3g.40gb", ...}}`` or
    ``{"mode": "memory", "resource": "aliyun.com/gpu-mem", "per_gpu": 80}``."""
    priority_classes: Mapping[str, str | None] = dataclasses.field(
        default_factory=lambda: {"low": "jobkit-low", "normal": None, "high": "jobkit-high"}
    )
    """Priority band -> PriorityClass (``backends/kubernetes/priority-classes.yaml``)."""
    queue_label: str = "kueue.x-k8s.io/queue-name"
    """Label ``queue=`` sets on the Job, read by Kueue."""
    ttl_seconds_after_finished: int | None = 86400
    """Finished Jobs (and their pods and logs) are deleted after a day; None keeps them."""
    array_parallelism: int = 256
    """Pods of one map running at once, unless ``kubernetes={"parallelism": n}``."""
    per_index_retries: str = "auto"
    """``backoffLimitPerIndex`` for maps: ``"auto"`` (Kubernetes >= 1.29), ``"on"``, ``"off"``."""
    pending_grace: float = 600.0
    """Seconds a pod may wait on an image pull or an unschedulable request before
    the job is failed with Kubernetes' message."""
    api_server: str | None = None
    """Talk to this URL without credentials (a local proxy: ``kubectl proxy``)."""
    kubeconfig: str | None = None
    context: str | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> KubernetesSettings:
        known = {f.name for f in dataclasses.fields(cls)} - {"namespace_source"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"unknown [kubernetes] setting {unknown[0]!r}: "
                f"valid settings are {', '.join(sorted(known))}"
            )
        values = dict(table)
        for name in ("image_pull_secrets", "env_secrets", "gpu_tolerations"):
            if name in values:
                values[name] = _sequence(name, values[name])
        if "pending_grace" in values:
            values["pending_grace"] = _seconds("pending_grace", values["pending_grace"])
        settings = cls(**values)
        settings._check()
        if "namespace" not in table:
            found = resolve_namespace(
                None,
                api_server=settings.api_server,
                kubeconfig=settings.kubeconfig,
                context=settings.context,
                namespace_file=settings.namespace_file,
            )
            settings = dataclasses.replace(
                settings, namespace=found.name, namespace_source=found.source
            )
            if not DNS_LABEL.match(settings.namespace):
                raise ConfigError(
                    f"invalid namespace {settings.namespace!r} from {found.source}: Kubernetes "
                    "names are lower-case letters, digits and '-'; fix it there or set "
                    "[kubernetes] namespace"
                )
        return settings

    def _check(self) -> None:
        _name("namespace", self.namespace, DNS_LABEL)
        for name in ("service_account", "secret"):
            value = getattr(self, name)
            if value is not None:
                _name(name, value, DNS_SUBDOMAIN)
        for value in (*self.image_pull_secrets, *self.env_secrets):
            _name("secret name", value, DNS_SUBDOMAIN)
        if self.per_index_retries not in ("auto", "on", "off"):
            raise ConfigError(
                f"invalid [kubernetes] per_index_retries={self.per_index_retries!r}: "
                "expected auto, on or off"
            )
        if not isinstance(self.array_parallelism, int) or self.array_parallelism < 1:
            raise ConfigError(
                f"invalid [kubernetes] array_parallelism={self.array_parallelism!r}: "
                "expected a positive integer"
            )
        ttl = self.ttl_seconds_after_finished
        if ttl is not None and (not isinstance(ttl, int) or ttl < 0):
            raise ConfigError(
                f"invalid [kubernetes] ttl_seconds_after_finished={ttl!r}: expected seconds >= 0"
            )
        if self.gpu_sharing is not None:
            _check_sharing(self.gpu_sharing)


def _name(what: str, value: object, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(
            f"invalid [kubernetes] {what} {value!r}: Kubernetes names are lower-case letters, "
            "digits and '-' (e.g. 'ml-jobs')"
        )


def _sequence(name: str, value: object) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"invalid [kubernetes] {name}={value!r}: expected a list")
    return tuple(value)


def _seconds(name: str, value: object) -> float:
    from jobkit.resources import parse_duration

    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        return parse_duration(value).total_seconds()
    raise ConfigError(
        f"invalid [kubernetes] {name}={value!r}: expected seconds or a duration like '10m'"
    )


def _check_sharing(sharing: Mapping[str, Any]) -> None:
    mode = sharing.get("mode")
    if mode == "mig":
        profiles = sharing.get("profiles")
        if not isinstance(profiles, Mapping) or not profiles:
            raise ConfigError(
                "[kubernetes] gpu_sharing mode 'mig' needs profiles, e.g. "
                '{"0.5": "nvidia.com/mig-3g.40gb", "0.25": "nvidia.com/mig-2g.20gb"}'
            )
        for fraction in profiles:
            try:
                ok = 0 < float(fraction) < 1
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(
                    f"[kubernetes] gpu_sharing profile key {fraction!r} is not a fraction "
                    "between 0 and 1"
                )
    elif mode == "memory":
        per_gpu = sharing.get("per_gpu")
        if not isinstance(sharing.get("resource"), str) or not (
            isinstance(per_gpu, (int, float)) and per_gpu > 0
        ):
            raise ConfigError(
                "[kubernetes] gpu_sharing mode 'memory' needs a resource and per_gpu, e.g. "
                '{"mode": "memory", "resource": "aliyun.com/gpu-mem", "per_gpu": 80}'
            )
    else:
        raise ConfigError(
            f"[kubernetes] gpu_sharing mode {mode!r} is not 'mig' or 'memory' "
            "(see the kubernetes backend docs for both forms)"
        )
