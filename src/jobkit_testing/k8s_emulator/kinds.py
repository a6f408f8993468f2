"""The resource kinds the emulator serves, and what every part shares.

Kinds (group, version, plural, namespaced), the names tests and the
controller agree on (the test namespace, the controller's User-Agent), and
the time stamps and generated names the API server gives objects.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import random
import re
from typing import Any, TypeVar

Obj = dict[str, Any]
T = TypeVar("T")

log = logging.getLogger("k8s_emulator")

TEST_NAMESPACE = "jobkit"
CONTROLLER_AGENT = "k8s-emulator-controller"
NODE_NAME = "emulated-node"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
MAX_INDEXED_COMPLETIONS = 100_000

# -- resources ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kind:
    """One served resource: where it lives in the API and what it is called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``jobs.batch`` / ``pods``: how the API server names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Job.batch`` / ``Pod``: how the API server names a kind in 422 messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", False, ("status",)),
    Kind("", "v1", "pods", "Pod", True, ("status", "log")),
    Kind("", "v1", "secrets", "Secret", True),
    Kind("", "v1", "configmaps", "ConfigMap", True),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True),
    Kind("", "v1", "events", "Event", True),
    Kind("batch", "v1", "jobs", "Job", True, ("status",)),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Kind("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False),
)
_KINDS_BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
_KINDS_BY_PLURAL = {k.plural: k for k in KINDS}
_KINDS_BY_KIND = {k.kind: k for k in KINDS}

# Field selectors the real API server accepts, beyond metadata.name / metadata.namespace.
_FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "jobs": ("status.successful",),
    "secrets": ("type",),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "namespaces": ("status.phase",),
}


def find_kind(resource: str) -> Kind:
    """``"jobs"``, ``"batch/v1/jobs"``, ``"v1/pods"`` or ``"pods/log"`` -> its :class:`Kind`."""
    plural = resource.split("/")[-1]
    if plural in _KINDS_BY_PLURAL:
        return _KINDS_BY_PLURAL[plural]
    base = resource.split("/")[0]
    if base in _KINDS_BY_PLURAL:  # pods/log, jobs/status
        return _KINDS_BY_PLURAL[base]
    raise KeyError(f"the emulator serves no resource {resource!r}")


# -- time and names -------------------------------------------------------------------


def now_rfc3339() -> str:
    """A timestamp as the API server writes them (second precision, UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339_nano() -> str:
    """A timestamp as kubelet writes them in logs (sub-second precision, UTC)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what apimachinery's rand.String uses


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(length))


_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def truthy(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (clients send "True")."""
    return value in ("1", "t", "T", "true", "TRUE", "True")
