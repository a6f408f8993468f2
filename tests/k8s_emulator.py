"""A Kubernetes API over real HTTP for tests, and a Job controller that runs pods locally.

Test modules load these fixtures with ``pytest_plugins = ["k8s_emulator"]``.

No kube-apiserver can run on these machines (see ``backends/kubernetes/README.md``).
``kmock`` (0.8) serves a Kubernetes-shaped HTTP API from an asyncio handler; its
stateful ``KubernetesEmulator`` lacks what a Job backend relies on, so
:class:`ApiServer` subclasses kmock's stateless ``KubernetesScaffold`` (HTTP
server, API discovery, ``Status`` error bodies) and implements the object store
itself:

- every object gets ``uid``, ``creationTimestamp``, ``generation`` and a global
  ``resourceVersion``; lists carry the collection's resourceVersion;
- label and field selectors on list, watch and deletecollection; ``limit`` and
  ``continue`` on list;
- watch from a resourceVersion (resume), from "now" (synthetic ADDED events),
  ``timeoutSeconds``, BOOKMARK events, 410 Expired after :meth:`K8sEmulator.compact`;
  a label-selected watch turns label changes into ADDED/DELETED like the real one;
- POST, GET, PUT, PATCH (JSON patch, merge patch, strategic merge patch with the
  merge keys status patches need), DELETE, deletecollection; the ``status``
  subresource (status is ignored on the main resource and vice versa);
  optimistic concurrency (409 Conflict on a stale resourceVersion), ``dryRun``;
- Job defaulting (selector, controller-uid/job-name labels, backoffLimit, ...)
  and the Job validation a backend trips over (422 with the API server's wording);
- deletion with ``propagationPolicy`` Background / Foreground / Orphan (batch/v1
  Jobs default to Orphan, as in the real API) and a garbage collector that
  deletes dependents whose owners are gone;
- pod logs as ``text/plain`` with ``container``, ``tailLines``, ``timestamps``,
  ``limitBytes`` and ``follow=true`` streaming; ``/version`` and ``/version/``;
- test hooks: drop every watch and log stream, compact the watch history,
  inject API errors, require a bearer token, enforce an RBAC Role, and a log of
  every API request (verb, resource, body) for request-count assertions.

:class:`JobController` plays kube-controller-manager and kubelet for batch/v1
Jobs: it lists and watches Jobs and their pods through the unmodified
``kubernetes`` client, creates one pod per completion (per index for Indexed
Jobs) up to ``parallelism``, runs each container's ``command`` + ``args`` as a
local subprocess with the container's environment (values, Secret/ConfigMap
refs, downward-API fields, ``JOB_COMPLETION_INDEX``), streams its output into
the pod log, and patches pod and Job status the way Kubernetes 1.31+ does.
Failures that cannot happen on a laptop are simulated on request
(:meth:`JobController.simulate`).

Fixtures:

``k8s_api_server`` (session)
    The :class:`K8sEmulator` facade of the one server of the session, not reset.
``k8s_emulator``
    The same, reset to an empty cluster (namespaces ``default`` and ``jobkit``)
    before the test; fails the test if the server hit an internal error.
``k8s_client``
    A ``kubernetes.client.ApiClient`` configured for the emulator (no kubeconfig).
``k8s_kubeconfig``
    A kubeconfig file for the emulator, exported as ``KUBECONFIG`` for the test.
``k8s_controller``
    A started :class:`JobController`, stopped (processes killed) after the test;
    fails the test if the controller hit an unexpected error.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import dataclasses
import datetime
import fnmatch
import json
import logging
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import pytest
from typing_extensions import override

from child_signals import with_default_signals

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


# -- errors -------------------------------------------------------------------------

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error answered as the API server does: a ``Status`` object with a code."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(kind: Kind, name: str | None, **extra: Any) -> Obj:
    details: Obj = {"group": kind.group, "kind": kind.plural}
    if name:
        details["name"] = name
    details.update(extra)
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, f'{kind.qualified} "{name}" not found', "NotFound", _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(
        409, f'{kind.qualified} "{name}" already exists', "AlreadyExists", _details(kind, name)
    )


def conflict(kind: Kind, name: str, why: str | None = None) -> ApiError:
    why = (
        why
        or "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": {why}',
        "Conflict",
        _details(kind, name),
    )


def invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 with the API server's wording; ``causes`` are (field, detail) pairs."""
    parts = [f"{field}: {detail}" for field, detail in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {
        "name": name,
        "group": kind.group,
        "kind": kind.kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": detail, "field": field}
            for field, detail in causes
        ],
    }
    return ApiError(422, f'{kind.qualified_kind} "{name}" is invalid: {joined}', "Invalid", details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def forbidden(
    user: str, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
) -> ApiError:
    what = f'{kind.qualified} "{name}"' if name else kind.qualified
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    message = (
        f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{kind.group}"{where}'
    )
    return ApiError(403, message, "Forbidden", _details(kind, name))


# -- selectors ----------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # key, operator, values
_SET_TERM = re.compile(r"^\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Equality- and set-based label selectors, as ``kubectl -l`` writes them."""
    requirements: list[Requirement] = []
    for term in _split_terms(selector or ""):
        set_term = _SET_TERM.match(term)
        if set_term:
            values = frozenset(v.strip() for v in set_term.group(3).split(",") if v.strip())
            requirements.append((set_term.group(1), set_term.group(2), values))
            continue
        for operator in ("!=", "==", "="):
            if operator in term:
                key, value = (part.strip() for part in term.split(operator, 1))
                if not _KEY.match(key) or not _LABEL_VALUE.fullmatch(value):
                    raise bad_request(f"unable to parse requirement: {term!r}")
                requirements.append((key, "!=" if operator == "!=" else "=", frozenset([value])))
                break
        else:
            negated = term.startswith("!")
            key = term[1:].strip() if negated else term
            if not _KEY.match(key):
                raise bad_request(f"unable to parse requirement: {term!r}")
            requirements.append((key, "!" if negated else "exists", frozenset()))
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        if operator == "=" and value not in values:
            return False
        if operator == "!=" and present and value in values:
            return False
        if operator == "in" and (not present or value not in values):
            return False
        if operator == "notin" and present and value in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
    return True


def parse_field_selector(kind: Kind, selector: str | None) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,status.phase!=Running`` -> (path, equal?, value) triples."""
    allowed = ("metadata.name", "metadata.namespace", *_FIELD_LABELS.get(kind.plural, ()))
    result: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector or ""):
        for operator in ("!=", "==", "="):
            if operator in term:
                path, value = (part.strip() for part in term.split(operator, 1))
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        result.append((path, operator != "!=", value))
    return result


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_match(requirements: list[tuple[str, bool, str]], obj: Obj) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)


# -- patches ------------------------------------------------------------------------

# Lists merged by key in strategic merge patches (patchMergeKey in the OpenAPI schema).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
_MERGED_PRIMITIVE_LISTS = {"finalizers"}


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and not k.startswith("$setElementOrder/")
        }
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``application/merge-patch+json``)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch: a merge patch whose keyed lists merge by key.

    Covers the merge keys of the core and batch types (``conditions`` by ``type``,
    ``containers`` and ``containerStatuses`` by ``name``, ...), ``finalizers`` as a
    merged set, and the ``$patch: replace|delete`` directives. ``$retainKeys`` and
    ``$deleteFromPrimitiveList`` are not implemented.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _without_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(current, value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(current, list):
            result[key] = _merge_keyed_list(current, value, _MERGE_KEYS[key])
        elif (
            isinstance(value, list) and key in _MERGED_PRIMITIVE_LISTS and isinstance(current, list)
        ):
            result[key] = current + [item for item in value if item not in current]
        else:
            result[key] = _without_directives(copy.deepcopy(value))
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _without_directives(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)
        ]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_without_directives(copy.deepcopy(item)))
            continue
        position = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_without_directives(copy.deepcopy(item)))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch (``application/json-patch+json``)."""
    import jsonpatch  # type: ignore[import-untyped,unused-ignore]  # a dependency of kmock

    if not isinstance(operations, list):
        raise bad_request(
            "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
        )
    try:
        patched = jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise ApiError(
            422, f"the server rejected our request due to an error in our request: {error}"
        ) from error
    if not isinstance(patched, dict):
        raise ApiError(422, "the patch did not produce an object")
    return patched


# -- defaulting and validation ------------------------------------------------------------


def _default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        latest = image.endswith(":latest") or not tagged
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")


def _default_job(job: Obj) -> None:
    """What the API server fills in on a new batch/v1 Job (manualSelector unset)."""
    meta, spec = job["metadata"], job.setdefault("spec", {})
    uid, name = meta["uid"], meta["name"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    if spec.get("backoffLimitPerIndex") is not None:
        spec.setdefault("backoffLimit", 2**31 - 1)
    spec.setdefault("backoffLimit", 6)
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        labels = template_meta.setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
    template_spec = spec.setdefault("template", {}).setdefault("spec", {})
    if isinstance(template_spec, dict):
        _default_pod_spec(template_spec)


def _check_name(kind: Kind, name: str) -> list[tuple[str, str]]:
    if kind.plural == "namespaces":
        if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
            return [("metadata.name", f'Invalid value: "{name}": {_LABEL_HELP}')]
        return []
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        return [("metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_HELP}')]
    return []


def _check_labels(meta: Obj) -> list[tuple[str, str]]:
    causes = []
    for key, value in (meta.get("labels") or {}).items():
        name = str(key).split("/")[-1]
        if not _LABEL_NAME.fullmatch(name) or len(name) > 63:
            causes.append(("metadata.labels", f'Invalid value: "{key}": name part must be valid'))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            causes.append(
                (
                    "metadata.labels",
                    f'Invalid value: "{value}": a valid label must be an empty string '
                    "or consist of alphanumeric characters, '-', '_' or '.', and must start and "
                    "end with an alphanumeric character, and be no more than 63 characters",
                )
            )
    return causes


def _check_quantities(kind: Kind, obj: Obj) -> None:
    """Quantities that do not parse are a decoding error (400), as in the API server."""
    spec = (
        (obj.get("spec") or {}).get("template", {}).get("spec")
        if kind.plural == "jobs"
        else obj.get("spec")
    )
    for container in (spec or {}).get("containers") or []:
        resources = (container.get("resources") or {}) if isinstance(container, dict) else {}
        for section in ("requests", "limits"):
            for value in (resources.get(section) or {}).values():
                if not _QUANTITY.match(str(value)):
                    raise bad_request(
                        f'{kind.kind} in version "{kind.version}" cannot be handled '
                        f"as a {kind.kind}: "
                        "quantities must match the regular expression "
                        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    )


def _validate_pod_spec(spec: Any, path: str, job: bool) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        return [(path, "Required value")]
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{path}.containers", "Required value"))
    names: set[str] = set()
    for i, container in enumerate(containers or []):
        where = f"{path}.containers[{i}]"
        name = container.get("name") if isinstance(container, dict) else None
        if not name:
            causes.append((f"{where}.name", "Required value"))
        elif not _DNS1123_LABEL.fullmatch(name):
            causes.append((f"{where}.name", f'Invalid value: "{name}": {_LABEL_HELP}'))
        elif name in names:
            causes.append((f"{where}.name", f'Duplicate value: "{name}"'))
        names.add(str(name))
        if isinstance(container, dict) and not container.get("image"):
            causes.append((f"{where}.image", "Required value"))
        resources = (container.get("resources") or {}) if isinstance(container, dict) else {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource, value in requests.items():
            extended = "/" in resource and not resource.startswith(("kubernetes.io/", "hugepages-"))
            if not extended:
                continue
            if resource not in limits:
                causes.append(
                    (
                        f"{where}.resources.limits",
                        "Required value: Limit must be set for non overcommitable resources",
                    )
                )
            elif str(limits[resource]) != str(value):
                causes.append(
                    (
                        f"{where}.resources.requests[{resource}]",
                        f'Invalid value: "{value}": must be equal to {resource} limit '
                        f"of {limits[resource]}",
                    )
                )
        for section, values in (("requests", requests), ("limits", limits)):
            for resource, value in values.items():
                extended = "/" in resource and not resource.startswith(
                    ("kubernetes.io/", "hugepages-")
                )
                if extended and not re.fullmatch(r"[0-9]+", str(value)):
                    causes.append(
                        (
                            f"{where}.resources.{section}[{resource}]",
                            f'Invalid value: "{value}": must be an integer',
                        )
                    )
    policy = spec.get("restartPolicy")
    if job and policy not in ("OnFailure", "Never"):
        detail = (
            'Required value: valid values: "OnFailure", "Never"'
            if policy in (None, "Always")
            else f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'
        )
        causes.append((f"{path}.restartPolicy", detail))
    return causes


def _validate_job(job: Obj) -> list[tuple[str, str]]:
    meta, spec = job["metadata"], job.get("spec") or {}
    causes: list[tuple[str, str]] = []
    name = meta["name"]
    if len(name) > 63:
        # The name becomes the job-name label of the pods.
        causes.append(
            ("metadata.name", f'Invalid value: "{name}": must be no more than 63 characters')
        )
    indexed = spec.get("completionMode") == "Indexed"
    for field in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ):
        value = spec.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(
                f'Job in version "v1" cannot be handled as a Job: json: cannot unmarshal '
                f"{type(value).__name__} into Go struct field JobSpec.spec.{field} of type int32"
            )
        minimum = 1 if field == "activeDeadlineSeconds" else 0
        if value < minimum:
            relation = "greater than 0" if minimum else "greater than or equal to 0"
            causes.append((f"spec.{field}", f"Invalid value: {value}: must be {relation}"))
    if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
        causes.append(
            (
                "spec.completionMode",
                f'Unsupported value: "{spec.get("completionMode")}": '
                'supported values: "NonIndexed", "Indexed"',
            )
        )
    if indexed:
        completions = spec.get("completions")
        if completions is None:
            causes.append(("spec.completions", "Required value: when completion mode is Indexed"))
        elif completions > MAX_INDEXED_COMPLETIONS:
            causes.append(
                (
                    "spec.completions",
                    f"Invalid value: {completions}: must be less than or equal to 100000 "
                    "when completion mode is Indexed",
                )
            )
        if (spec.get("parallelism") or 0) > MAX_INDEXED_COMPLETIONS:
            causes.append(
                (
                    "spec.parallelism",
                    f"Invalid value: {spec['parallelism']}: must be less than or equal to 100000 "
                    "when completion mode is Indexed",
                )
            )
    else:
        for field in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(field) is not None:
                causes.append(
                    (
                        f"spec.{field}",
                        f"Invalid value: {spec[field]}: requires indexed completion mode",
                    )
                )
    if spec.get("maxFailedIndexes") is not None and spec.get("backoffLimitPerIndex") is None:
        causes.append(
            ("spec.backoffLimitPerIndex", "Required value: when maxFailedIndexes is specified")
        )
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(("spec.template", "Required value"))
    else:
        causes += _check_labels(template.get("metadata") or {})
        causes += _validate_pod_spec(template.get("spec"), "spec.template.spec", job=True)
    return causes


# -- the server ---------------------------------------------------------------------


@dataclasses.dataclass
class ApiRequest:
    """One request the emulator answered, in RBAC terms (``verb`` on ``resource``)."""

    verb: str
    resource: str  # "jobs", "pods/log", "jobs/status"
    namespace: str | None
    name: str | None
    params: dict[str, str]
    body: Any
    user_agent: str
    status: int = 0

    @property
    def from_controller(self) -> bool:
        return self.user_agent.startswith(CONTROLLER_AGENT)


@dataclasses.dataclass
class _Fault:
    verb: str | None
    resource: str | None
    namespace: str | None
    name: str | None
    error: ApiError
    remaining: int | None


@dataclasses.dataclass
class _Event:
    rv: int
    plural: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


@dataclasses.dataclass
class _LogBuffer:
    lines: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    partial: bytes = b""
    partial_ts: str = ""
    closed: bool = False

    def append(self, data: bytes) -> None:
        if not self.partial:
            self.partial_ts = now_rfc3339_nano()
        pieces = (self.partial + data).split(b"\n")
        self.partial = pieces.pop()
        for piece in pieces:
            self.lines.append((self.partial_ts, piece + b"\n"))
            self.partial_ts = now_rfc3339_nano()

    def close(self) -> None:
        if self.partial:
            self.lines.append((self.partial_ts, self.partial))
            self.partial = b""
        self.closed = True


@dataclasses.dataclass(frozen=True)
class _Route:
    kind: Kind | None  # None: an unknown resource
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool  # the deprecated /watch/ prefix


def _parse_route(path: str) -> _Route | None:
    """A resource path -> its parts; None for paths kmock's scaffold serves (discovery)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace: str | None = None
    if (
        rest
        and rest[0] == "namespaces"
        and (len(rest) >= 4 or (len(rest) == 3 and rest[2] not in ("status", "finalize")))
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    kind = _KINDS_BY_PATH.get((group, version, rest[0]))
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return _Route(kind, namespace, name, subresource, watch_path)


def _strip_list_item(obj: Obj) -> Obj:
    item = dict(obj)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item


@attrs.define(kw_only=True, eq=False)
class ApiServer(kmock.KubernetesScaffold):
    """The emulated API server; runs in the event loop of the server thread.

    Everything here runs on that one loop: the state needs no locks. Other
    threads use the :class:`K8sEmulator` facade, which hops onto the loop.
    """

    gc_delay: float = 0.05  # seconds between a delete and the garbage collector's pass
    user: str = f"system:serviceaccount:{TEST_NAMESPACE}:jobkit"  # for 403 messages
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    role_rules: list[Obj] | None = None  # when set, requests outside these RBAC rules get 403
    server_version: tuple[str, str] = ("1", "33")

    _objects: dict[tuple[str, str, str], Obj] = attrs.field(factory=dict, init=False)
    _uids: dict[str, tuple[str, str, str]] = attrs.field(factory=dict, init=False)
    _events: list[_Event] = attrs.field(factory=list, init=False)
    _event_rvs: list[int] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _logs: dict[tuple[str, str, str], _LogBuffer] = attrs.field(factory=dict, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _drops: int = attrs.field(default=0, init=False)
    _abort_drops: bool = attrs.field(default=False, init=False)
    _gc_handle: asyncio.TimerHandle | None = attrs.field(default=None, init=False)
    api_requests: list[ApiRequest] = attrs.field(factory=list, init=False)
    internal_errors: list[str] = attrs.field(factory=list, init=False)  # bugs of the emulator

    @override
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in KINDS:
            verbs = {
                "create",
                "get",
                "list",
                "watch",
                "update",
                "patch",
                "delete",
                "deletecollection",
            }
            self.resources[kmock.resource(kind.group, kind.version, kind.plural)] = (
                kmock.ResourceInfo(
                    kind=kind.kind,
                    namespaced=kind.namespaced,
                    singular=kind.kind.lower(),
                    verbs=verbs,
                    subresources=set(kind.subresources),
                )
            )
        self.reset()

    # -- state --------------------------------------------------------------------

    def reset(self) -> None:
        """An empty cluster with namespaces ``default`` and ``jobkit``; streams dropped."""
        self.drop_streams()
        self._objects.clear()
        self._uids.clear()
        self._events.clear()
        self._event_rvs.clear()
        self._compacted_rv = self._rv
        self._logs.clear()
        self._faults.clear()
        self.api_requests.clear()
        self.internal_errors.clear()
        self.token = None
        self.role_rules = None
        if self._gc_handle is not None:
            self._gc_handle.cancel()
            self._gc_handle = None
        for namespace in ("default", TEST_NAMESPACE):
            self.put_object(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )

    def put_object(self, obj: Obj) -> Obj:
        """Create ``obj`` behind the API's back (no request is logged); returns it."""
        kind = _KINDS_BY_KIND[obj["kind"]]
        namespace = obj.get("metadata", {}).get("namespace") if kind.namespaced else None
        return self._create(kind, namespace, copy.deepcopy(obj), {})

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def drop_streams(self, abort: bool = False) -> None:
        """End every open watch and log-follow stream (cleanly, or by resetting the connection)."""
        self._drops += 1
        self._abort_drops = abort
        self._wake()

    def compact(self) -> None:
        """Forget the event history: watches from an older resourceVersion get 410 Expired."""
        self._events.clear()
        self._event_rvs.clear()
        self._compacted_rv = self._rv

    def _key(self, kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (kind.plural, namespace or "", name)

    def read_object(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        return self._objects.get(self._key(kind, namespace, name))

    def objects_of(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        return [
            obj
            for (plural, ns, _), obj in sorted(self._objects.items())
            if plural == kind.plural and (namespace is None or ns == namespace)
        ]

    def history(self, kind: Kind, namespace: str | None, name: str) -> list[tuple[str, Obj]]:
        return [
            (event.type, event.obj)
            for event in self._events
            if event.plural == kind.plural
            and event.obj["metadata"].get("namespace", "") == (namespace or "")
            and event.obj["metadata"]["name"] == name
        ]

    def _commit(self, kind: Kind, event_type: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        uid = obj["metadata"]["uid"]
        if event_type == "DELETED":
            self._objects.pop(key, None)
            self._uids.pop(uid, None)
            if kind.plural == "pods":
                for log_key in [k for k in self._logs if k[:2] == key[1:]]:
                    del self._logs[log_key]
        else:
            self._objects[key] = obj
            self._uids[uid] = key
        self._events.append(_Event(self._rv, kind.plural, event_type, obj, old))
        self._event_rvs.append(self._rv)
        self._wake()
        if event_type == "DELETED" or obj["metadata"].get("ownerReferences"):
            self._schedule_gc()
        return obj

    # -- logs (written by the controller, which plays kubelet) ---------------------------

    def open_log(self, namespace: str, pod: str, container: str) -> None:
        self._logs[(namespace, pod, container)] = _LogBuffer()
        self._wake()

    def append_log(self, namespace: str, pod: str, container: str, data: bytes) -> None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is not None and not buffer.closed:
            buffer.append(data)
            self._wake()

    def close_log(self, namespace: str, pod: str, container: str) -> None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is not None:
            buffer.close()
            self._wake()

    def log_text(self, namespace: str, pod: str, container: str) -> str | None:
        buffer = self._logs.get((namespace, pod, container))
        if buffer is None:
            return None
        return b"".join(line for _, line in buffer.lines).decode(
            errors="replace"
        ) + buffer.partial.decode(errors="replace")

    # -- faults -------------------------------------------------------------------

    def add_fault(self, fault: _Fault) -> None:
        self._faults.append(fault)

    def _take_fault(
        self, verb: str, resource: str, namespace: str | None, name: str | None
    ) -> ApiError | None:
        for fault in self._faults:
            if fault.verb not in (None, verb):
                continue
            if (
                fault.resource not in (None, resource)
                and fault.resource != resource.split("/")[0] + "/*"
            ):
                continue
            if fault.namespace not in (None, namespace) or fault.name not in (None, name):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault.error
        return None

    def _authorize(
        self, verb: str, kind: Kind, resource: str, namespace: str | None, name: str | None
    ) -> None:
        if self.role_rules is None:
            return
        for rule in self.role_rules:
            groups = rule.get("apiGroups") or []
            resources = rule.get("resources") or []
            verbs = rule.get("verbs") or []
            names = rule.get("resourceNames") or []
            if (
                ("*" in groups or kind.group in groups)
                and ("*" in resources or resource in resources)
                and ("*" in verbs or verb in verbs)
                and (not names or name in names)
            ):
                return
        raise forbidden(self.user, verb, kind, resource, namespace, name)

    # -- HTTP ---------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw_request.path
        if path.rstrip("/") == "/version":
            major, minor = self.server_version
            return aiohttp.web.json_response(
                {
                    "major": major,
                    "minor": minor,
                    "gitVersion": f"v{major}.{minor}.0",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        route = _parse_route(path)
        if route is None:  # kmock's scaffold: /, /api, /apis, /apis/GROUP[/VERSION] discovery
            if len(path) > 1 and path.endswith("/"):  # clients ask for /apis/batch/v1/
                raw_request = raw_request.clone(rel_url=path.rstrip("/"))
            return await super().__call__(raw_request)
        body = await raw_request.read()
        params = dict(raw_request.query)
        record = ApiRequest(
            verb=self._verb(raw_request.method, route, params),
            resource=route.kind.plural + (f"/{route.subresource}" if route.subresource else "")
            if route.kind
            else path,
            namespace=route.namespace,
            name=route.name,
            params=params,
            body=None,
            user_agent=raw_request.headers.get("User-Agent", ""),
        )
        self.api_requests.append(record)
        try:
            response = await self._serve(raw_request, route, record, body, params)
        except ApiError as error:
            response = aiohttp.web.json_response(error.status(), status=error.code)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as error:  # a bug in the emulator: answer 500 and fail the test
            log.exception("k8s emulator: %s %s", raw_request.method, raw_request.path_qs)
            self.internal_errors.append(f"{raw_request.method} {raw_request.path_qs}: {error!r}")
            response = aiohttp.web.json_response(
                ApiError(500, f"emulator error: {error!r}").status(), status=500
            )
        record.status = response.status
        return response

    @staticmethod
    def _verb(method: str, route: _Route, params: Mapping[str, str]) -> str:
        if method == "GET":
            if truthy(params.get("watch")) or route.watch_path:
                return "watch"
            return "get" if route.name else "list"
        return {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if route.name else "deletecollection",
        }.get(method, method.lower())

    async def _serve(
        self,
        raw_request: aiohttp.web.BaseRequest,
        route: _Route,
        record: ApiRequest,
        body: bytes,
        params: dict[str, str],
    ) -> aiohttp.web.StreamResponse:
        kind = route.kind
        if kind is None or (route.namespace is not None and not kind.namespaced):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if route.subresource and route.subresource not in kind.subresources:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        controller = record.from_controller
        authorization = raw_request.headers.get("Authorization")
        if self.token is not None and not controller and authorization != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if not controller:
            self._authorize(record.verb, kind, record.resource, route.namespace, route.name)
            fault = self._take_fault(record.verb, record.resource, route.namespace, route.name)
            if fault is not None:
                raise fault
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError as error:
                content_type = raw_request.headers.get("Content-Type", "")
                if "yaml" in content_type:
                    raise ApiError(415, f"the emulator does not decode {content_type}") from error
                raise bad_request(f"error decoding request body: {error}") from error
        record.body = data
        method, verb = raw_request.method, record.verb
        if verb == "watch":
            return await self._watch(raw_request, kind, route, params)
        if method == "GET" and route.subresource == "log":
            return await self._serve_log(raw_request, kind, route, params)
        if verb == "list":
            return aiohttp.web.json_response(self._list(kind, route.namespace, params))
        if verb == "get":
            obj = self.read_object(kind, route.namespace, str(route.name))
            if obj is None:
                raise not_found(kind, str(route.name))
            return aiohttp.web.json_response(obj)
        if params.get("dryRun") not in (None, "All"):
            raise bad_request(f"Invalid dry run value: {params['dryRun']} (only All is supported)")
        dry_run = params.get("dryRun") == "All"
        if route.subresource == "log":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if verb == "create":
            if route.name:
                raise ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
            obj = self._create(kind, route.namespace, data, params, dry_run=dry_run)
            return aiohttp.web.json_response(obj, status=201)
        if verb in ("update", "patch"):
            current = self.read_object(kind, route.namespace, str(route.name))
            if current is None:
                raise not_found(kind, str(route.name))
            if verb == "patch":
                data = self._apply_patch(
                    kind, current, data, raw_request.headers.get("Content-Type", "")
                )
            obj = self._update(kind, current, data, route.subresource, dry_run=dry_run)
            return aiohttp.web.json_response(obj)
        if verb == "delete":
            status, answer = self._delete(
                kind, route.namespace, str(route.name), data, params, dry_run=dry_run
            )
            return aiohttp.web.json_response(answer, status=status)
        if verb == "deletecollection":
            return aiohttp.web.json_response(
                self._delete_collection(kind, route.namespace, data, params)
            )
        raise ApiError(405, "the server does not allow this method on the requested resource")

    # -- verbs --------------------------------------------------------------------

    def _matching(self, kind: Kind, namespace: str | None, params: Mapping[str, str]) -> list[Obj]:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(kind, params.get("fieldSelector"))
        return [
            obj
            for obj in self.objects_of(kind, namespace)
            if labels_match(labels, obj["metadata"].get("labels")) and fields_match(fields, obj)
        ]

    def _list(self, kind: Kind, namespace: str | None, params: Mapping[str, str]) -> Obj:
        items = self._matching(kind, namespace, params)
        metadata: Obj = {"resourceVersion": str(self._rv)}
        start = params.get("continue")
        if start:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(start.encode())))
            except ValueError as error:
                raise bad_request(f"continue key is not valid: {error}") from error
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        limit = int(params.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            token = json.dumps([last.get("namespace", ""), last["name"]]).encode()
            metadata["continue"] = base64.urlsafe_b64encode(token).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": [_strip_list_item(obj) for obj in items],
        }

    def _create(
        self,
        kind: Kind,
        namespace: str | None,
        data: Any,
        params: Mapping[str, str],
        dry_run: bool = False,
    ) -> Obj:
        if not isinstance(data, dict):
            raise bad_request(
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json"
            )
        obj = copy.deepcopy(data)
        if (
            obj.get("apiVersion", kind.api_version) != kind.api_version
            or obj.get("kind", kind.kind) != kind.kind
        ):
            raise bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({kind.api_version})"
                if obj.get("apiVersion") != kind.api_version
                else f'{obj.get("kind")} in version "{kind.version}" cannot be handled '
                f"as a {kind.kind}"
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(404, "the server could not find the requested resource")
            if self.read_object(_KINDS_BY_PLURAL["namespaces"], None, namespace) is None:
                raise not_found(_KINDS_BY_PLURAL["namespaces"], namespace)
            ns_obj = self.read_object(_KINDS_BY_PLURAL["namespaces"], None, namespace)
            if ns_obj and ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    f'{kind.plural} "{meta.get("name", "")}" is forbidden: '
                    "unable to create new content "
                    f"in namespace {namespace} because it is being terminated",
                    "Forbidden",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix()
            else:
                raise invalid(
                    kind,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
        name = meta["name"]
        causes = _check_name(kind, name) + _check_labels(meta)
        if causes:
            raise invalid(kind, name, causes)
        if self.read_object(kind, namespace, name) is not None:
            raise already_exists(kind, name)
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        self._default(kind, obj)
        self._validate(kind, obj)
        if dry_run:
            return obj
        return self._commit(kind, "ADDED", obj, None)

    def _default(self, kind: Kind, obj: Obj) -> None:
        if kind.plural == "jobs":
            _check_quantities(kind, obj)
            _default_job(obj)
            obj["status"] = {}
        elif kind.plural == "pods":
            _check_quantities(kind, obj)
            spec = obj.setdefault("spec", {})
            _default_pod_spec(spec)
            spec.setdefault("serviceAccountName", "default")
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif kind.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif kind.plural == "secrets":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")

    def _validate(self, kind: Kind, obj: Obj) -> None:
        if kind.plural == "jobs":
            causes = _validate_job(obj)
        elif kind.plural == "pods":
            causes = _validate_pod_spec(obj.get("spec"), "spec", job=False)
        else:
            causes = []
        if causes:
            raise invalid(kind, obj["metadata"]["name"], causes)

    def _apply_patch(self, kind: Kind, current: Obj, patch: Any, content_type: str) -> Obj:
        media = content_type.split(";")[0].strip()
        if media == "application/json-patch+json":
            return json_patch(copy.deepcopy(current), patch)
        if media == "application/merge-patch+json":
            merged: Obj = merge_patch(current, patch)
            return merged
        if media == "application/strategic-merge-patch+json":
            result = strategic_merge_patch(current, patch)
            assert isinstance(result, dict)
            return result
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            f"application/strategic-merge-patch+json (the emulator does not do {media or 'that'})",
            "UnsupportedMediaType",
        )

    def _update(
        self, kind: Kind, current: Obj, data: Any, subresource: str | None, dry_run: bool = False
    ) -> Obj:
        if not isinstance(data, dict):
            raise bad_request("the body of the request was in an unknown format")
        meta = data.get("metadata") or {}
        name = current["metadata"]["name"]
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
            raise conflict(kind, name)
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(data.get("status") or {})
        else:
            new = copy.deepcopy(data)
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            new_meta = new.setdefault("metadata", {})
            for field in (
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "generation",
            ):
                if field in current["metadata"]:
                    new_meta[field] = current["metadata"][field]
                else:
                    new_meta.pop(field, None)
            new_meta["name"] = name
            if "status" in current or "status" in new:
                new["status"] = copy.deepcopy(current.get("status", {}))
            causes = _check_labels(new_meta)
            if causes:
                raise invalid(kind, name, causes)
            if kind.plural == "jobs":
                self._check_job_update(kind, current, new)
            if new.get("spec") != current.get("spec"):
                new_meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return current  # a no-op update neither bumps the resourceVersion nor sends an event
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._commit(kind, "DELETED", new, current)
            return new
        self._commit(kind, "MODIFIED", new, current)
        if new["metadata"].get("deletionTimestamp"):
            self._schedule_gc()
        return new

    @staticmethod
    def _check_job_update(kind: Kind, current: Obj, new: Obj) -> None:
        old_spec, new_spec = current.get("spec") or {}, new.get("spec") or {}
        name = current["metadata"]["name"]
        new_template = copy.deepcopy(new_spec.get("template") or {})
        if isinstance(new_template.get("spec"), dict):
            _default_pod_spec(new_template["spec"])
        causes = []
        if new_spec.get("selector") != old_spec.get("selector"):
            causes.append(("spec.selector", "Invalid value: field is immutable"))
        if new_template != old_spec.get("template") and not old_spec.get("suspend"):
            causes.append(("spec.template", "Invalid value: field is immutable"))
        for field in ("completionMode", "backoffLimitPerIndex"):
            if new_spec.get(field) != old_spec.get(field):
                causes.append((f"spec.{field}", "Invalid value: field is immutable"))
        if causes:
            raise invalid(kind, name, causes)

    def _delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        options: Any,
        params: Mapping[str, str],
        dry_run: bool = False,
    ) -> tuple[int, Obj]:
        current = self.read_object(kind, namespace, name)
        if current is None:
            raise not_found(kind, name)
        options = options if isinstance(options, dict) else {}
        preconditions = options.get("preconditions") or {}
        meta = current["metadata"]
        if preconditions.get("uid") not in (None, meta["uid"]):
            raise conflict(
                kind,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if preconditions.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise conflict(
                kind,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy") or params.get("propagationPolicy")
        orphan = options.get("orphanDependents", params.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if truthy(str(orphan)) else "Background"
        if policy is None:
            # batch/v1 Jobs (and a few other legacy kinds) orphan their pods by default.
            policy = "Orphan" if kind.plural == "jobs" else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid(
                kind,
                name,
                [
                    (
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": supported values: '
                        '"Foreground", "Background", "Orphan"',
                    )
                ],
            )
        if dry_run:
            return 200, current
        if meta.get("deletionTimestamp"):
            return 202, current
        return self._remove(kind, current, policy)

    def _remove(self, kind: Kind, current: Obj, policy: str) -> tuple[int, Obj]:
        meta = current["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if kind.plural == "namespaces":
            finalizers = finalizers or ["kubernetes"]
        elif policy == "Orphan":
            finalizers.append("orphan")
        elif policy == "Foreground":
            finalizers.append("foregroundDeletion")
        if finalizers:
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["finalizers"] = finalizers
            if kind.plural == "namespaces":
                new["status"] = {"phase": "Terminating"}
            self._commit(kind, "MODIFIED", new, current)
            self._schedule_gc()
            return 202, new
        deleted = copy.deepcopy(current)
        self._commit(kind, "DELETED", deleted, current)
        if kind.plural == "pods":
            return 200, deleted  # the pod registry returns the deleted object
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": meta["name"],
                "group": kind.group,
                "kind": kind.plural,
                "uid": meta["uid"],
            },
        }

    def _delete_collection(
        self, kind: Kind, namespace: str | None, options: Any, params: Mapping[str, str]
    ) -> Obj:
        items = self._matching(kind, namespace, params)
        for obj in items:
            meta = obj["metadata"]
            self._delete(kind, meta.get("namespace"), meta["name"], options, params)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [_strip_list_item(obj) for obj in items],
        }

    # -- garbage collection -------------------------------------------------------------

    def _schedule_gc(self) -> None:
        if self._gc_handle is None:
            loop = asyncio.get_running_loop()
            self._gc_handle = loop.call_later(self.gc_delay, self._collect_garbage)

    def _collect_garbage(self) -> None:
        """One pass of the garbage collector and the namespace controller."""
        self._gc_handle = None
        try:
            for _ in range(100):
                if not self._collect_once():
                    break
        except Exception as error:  # pragma: no cover - a bug in the emulator
            log.exception("k8s emulator: garbage collector")
            self.internal_errors.append(f"garbage collector: {error!r}")

    def _dependents(self, uid: str) -> list[tuple[Kind, Obj]]:
        return [
            (_KINDS_BY_PLURAL[plural], obj)
            for (plural, _, _), obj in list(self._objects.items())
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _drop_finalizer(self, kind: Kind, obj: Obj, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
            self._commit(kind, "DELETED", new, obj)
        else:
            self._commit(kind, "MODIFIED", new, obj)

    def _collect_once(self) -> bool:
        for (plural, _namespace, _name), obj in list(self._objects.items()):
            kind = _KINDS_BY_PLURAL[plural]
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if meta.get("deletionTimestamp"):
                if kind.plural == "namespaces" and "kubernetes" in finalizers:
                    content = [
                        (k, o)
                        for (p, ns, _), o in self._objects.items()
                        if ns == meta["name"]
                        for k in [_KINDS_BY_PLURAL[p]]
                    ]
                    for content_kind, content_obj in content:
                        if not content_obj["metadata"].get("deletionTimestamp"):
                            self._remove(content_kind, content_obj, "Background")
                    if not content:
                        self._drop_finalizer(kind, obj, "kubernetes")
                    return True
                if "orphan" in finalizers:
                    for dep_kind, dep in self._dependents(meta["uid"]):
                        new = copy.deepcopy(dep)
                        refs = [
                            r
                            for r in dep["metadata"]["ownerReferences"]
                            if r.get("uid") != meta["uid"]
                        ]
                        if refs:
                            new["metadata"]["ownerReferences"] = refs
                        else:
                            del new["metadata"]["ownerReferences"]
                        self._commit(dep_kind, "MODIFIED", new, dep)
                    self._drop_finalizer(kind, obj, "orphan")
                    return True
                if "foregroundDeletion" in finalizers:
                    dependents = self._dependents(meta["uid"])
                    for dep_kind, dep in dependents:
                        if not dep["metadata"].get("deletionTimestamp"):
                            self._remove(dep_kind, dep, "Foreground")
                    if not self._dependents(meta["uid"]):
                        self._drop_finalizer(kind, obj, "foregroundDeletion")
                        return True
            refs = meta.get("ownerReferences") or []
            if (
                refs
                and all(ref.get("uid") not in self._uids for ref in refs)
                and not meta.get("deletionTimestamp")
            ):
                self._remove(kind, obj, "Background")
                return True
        return False

    # -- watch --------------------------------------------------------------------

    def _visible(
        self,
        event: _Event,
        kind: Kind,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[tuple[str, bool, str]],
    ) -> tuple[str, Obj] | None:
        if event.plural != kind.plural:
            return None

        def matches(obj: Obj | None) -> bool:
            return (
                obj is not None
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and labels_match(labels, obj["metadata"].get("labels"))
                and fields_match(fields, obj)
            )

        now, before = matches(event.obj), matches(event.old)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if before or now else None
        if now and before:
            return "MODIFIED", event.obj
        if now:
            return "ADDED", event.obj
        if before:
            return "DELETED", event.obj
        return None

    async def _watch(
        self,
        raw_request: aiohttp.web.BaseRequest,
        kind: Kind,
        route: _Route,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        if route.name:  # GET .../jobs/NAME?watch=true (deprecated): a field selector on the name
            selector = ",".join(
                filter(None, [params.get("fieldSelector"), f"metadata.name={route.name}"])
            )
            params = {**params, "fieldSelector": selector}
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(kind, params.get("fieldSelector"))
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bookmarks = truthy(params.get("allowWatchBookmarks"))
        since = params.get("resourceVersion") or ""
        lines: list[Obj] = []
        if since in ("", "0"):
            cursor = self._rv
            for obj in self._matching(kind, route.namespace, params):
                lines.append({"type": "ADDED", "object": obj})
        else:
            try:
                cursor = int(since)
            except ValueError as error:
                raise bad_request(f'invalid resource version: "{since}"') from error
            if cursor < self._compacted_rv:
                expired = ApiError(
                    410, f"too old resource version: {cursor} ({self._compacted_rv})", "Expired"
                )
                lines.append({"type": "ERROR", "object": expired.status()})
                cursor = -1
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        response.enable_chunked_encoding()
        drops = self._drops  # before the client can see the stream
        await response.prepare(raw_request)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            for line in lines:
                await response.write(json.dumps(line).encode() + b"\n")
            while cursor >= 0:
                changed = self._changed_event()
                start = bisect.bisect_right(self._event_rvs, cursor)
                for event in self._events[start:]:
                    cursor = event.rv
                    visible = self._visible(event, kind, route.namespace, labels, fields)
                    if visible is not None:
                        line = {"type": visible[0], "object": visible[1]}
                        await response.write(json.dumps(line).encode() + b"\n")
                if self._drops != drops:
                    if self._abort_drops and raw_request.transport is not None:
                        raw_request.transport.abort()
                        return response
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    if bookmarks:
                        mark = {
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(self._rv)},
                        }
                        await response.write(
                            json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n"
                        )
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):  # the client went away
            pass
        return response

    # -- logs ---------------------------------------------------------------------

    async def _serve_log(
        self,
        raw_request: aiohttp.web.BaseRequest,
        kind: Kind,
        route: _Route,
        params: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        name, namespace = str(route.name), str(route.namespace)
        pod = self.read_object(kind, namespace, name)
        if pod is None:
            raise not_found(kind, name)
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers") or []]
        others = [
            c["name"]
            for c in (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])
        ]
        container = params.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers + others:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if truthy(params.get("previous")):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        buffer = self._logs.get((namespace, name, container))
        if buffer is None:
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{_waiting_reason(pod, container)}"
            )
        tail = int(params["tailLines"]) if params.get("tailLines") else None
        timestamps = truthy(params.get("timestamps"))
        limit = int(params["limitBytes"]) if params.get("limitBytes") else None
        follow = truthy(params.get("follow"))

        def render(lines: list[tuple[str, bytes]]) -> bytes:
            return b"".join(
                (ts.encode() + b" " if timestamps else b"") + line for ts, line in lines
            )

        start = 0 if tail is None else max(0, len(buffer.lines) - tail)
        if not follow:
            lines = list(buffer.lines[start:])
            if buffer.partial:
                lines.append((buffer.partial_ts, buffer.partial))
            data = render(lines)
            return aiohttp.web.Response(
                body=data[:limit] if limit is not None else data, content_type="text/plain"
            )
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        drops, sent = self._drops, 0
        await response.prepare(raw_request)
        try:
            while True:
                changed = self._changed_event()
                current = self._logs.get((namespace, name, container))
                if current is not buffer:  # the pod was deleted (or re-created)
                    break
                chunk = render(buffer.lines[start:])
                start = len(buffer.lines)
                if limit is not None:
                    chunk = chunk[: max(0, limit - sent)]
                if chunk:
                    await response.write(chunk)
                    sent += len(chunk)
                if buffer.closed or (limit is not None and sent >= limit):
                    break
                if self._drops != drops:
                    if self._abort_drops and raw_request.transport is not None:
                        raw_request.transport.abort()
                        return response
                    break
                await changed.wait()
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response


def _waiting_reason(pod: Obj, container: str) -> str:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason == "ErrImagePull":
                return "image can't be pulled"
            if reason == "ImagePullBackOff":
                return "trying and failing to pull image"
            if reason:
                return str(reason)
    return "ContainerCreating"


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res) is not None
        and (r.get("requests") or {}).get(res, (r.get("limits") or {}).get(res))
        == (r.get("limits") or {}).get(res)
        for r in resources
        for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


# -- the facade tests use -----------------------------------------------------------------


class K8sEmulator:
    """The test-facing handle of the emulated API server (safe to call from any thread)."""

    namespace = TEST_NAMESPACE

    def __init__(self, server: ApiServer, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.server = server
        self.loop = loop
        self.url = url

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's event loop (where its state lives) and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    # -- clients ------------------------------------------------------------------

    def configuration(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        configuration.connection_pool_maxsize = 32
        if self.server.token:
            configuration.api_key = {"authorization": f"Bearer {self.server.token}"}
        return configuration

    def api_client(self, user_agent: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (close it when done)."""
        from kubernetes import client

        api = client.ApiClient(self.configuration())
        if user_agent:
            api.user_agent = user_agent
        return api

    def kubeconfig(self, path: Path, namespace: str = TEST_NAMESPACE) -> Path:
        """Write a kubeconfig for this server (context ``emulator``) to ``path``."""
        user: Obj = {"token": self.server.token} if self.server.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": user}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    # -- state --------------------------------------------------------------------

    def reset(self) -> None:
        self.call(self.server.reset)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (a deep copy), or None."""
        obj = self.call(self.server.read_object, find_kind(resource), namespace, name)
        return copy.deepcopy(obj)

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return copy.deepcopy(self.call(self.server.objects_of, find_kind(resource), namespace))

    def history(self, resource: str, namespace: str | None, name: str) -> list[tuple[str, Obj]]:
        """Every event of one object since the last reset: (ADDED|MODIFIED|DELETED, object)."""
        return copy.deepcopy(self.call(self.server.history, find_kind(resource), namespace, name))

    def put(self, obj: Obj) -> Obj:
        """Create an object behind the API's back (no request is logged)."""
        return copy.deepcopy(self.call(self.server.put_object, obj))

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str | None:
        """A container's log so far; None before it started."""
        if container is None:
            obj = self.get("pods", namespace, pod)
            if obj is None:
                return None
            container = obj["spec"]["containers"][0]["name"]
        return self.call(self.server.log_text, namespace, pod, container)

    # -- request log ----------------------------------------------------------------

    def requests(
        self,
        verb: str | None = None,
        resource: str | None = None,
        *,
        include_controller: bool = False,
    ) -> list[ApiRequest]:
        """API requests answered since the reset, oldest first, without the controller's own."""
        answered: list[ApiRequest] = self.call(list, self.server.api_requests)
        return [
            r
            for r in answered
            if (include_controller or not r.from_controller)
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
        ]

    def clear_requests(self) -> None:
        self.call(self.server.api_requests.clear)

    # -- hooks --------------------------------------------------------------------

    def drop_watches(self, abort: bool = False) -> None:
        """End every open watch and ``follow`` log stream: cleanly (the API server's
        own timeout) or, with ``abort``, by resetting the TCP connection."""
        self.call(self.server.drop_streams, abort)

    def compact(self) -> None:
        """Forget the watch history (etcd compaction): resuming from an older
        resourceVersion answers an ERROR event with 410 Expired."""
        self.call(self.server.compact)

    def fail(
        self,
        verb: str | None,
        resource: str | None,
        code: int = 500,
        message: str | None = None,
        *,
        namespace: str | None = None,
        name: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next ``times`` matching requests (None: all) with an error ``Status``.

        ``verb`` is an RBAC verb (create, get, list, watch, update, patch, delete,
        deletecollection), ``resource`` a resource as RBAC names it (``jobs``,
        ``pods/log``); None matches any. Requests of the controller are never failed.
        403 gets the RBAC wording by default, 409 ``AlreadyExists``.
        """
        kind = find_kind(resource) if resource else _KINDS_BY_PLURAL["jobs"]
        if message is None and code == 403:
            error = forbidden(
                self.server.user, verb or "get", kind, resource or kind.plural, namespace, name
            )
        elif message is None and code == 409:
            error = already_exists(kind, name or "")
        elif message is None and code == 404:
            error = not_found(kind, name or "")
        else:
            error = ApiError(
                code, message or _REASONS.get(code, "error"), details=_details(kind, name)
            )
        self.call(self.server.add_fault, _Fault(verb, resource, namespace, name, error, times))

    def require_token(self, token: str | None) -> None:
        """Answer 401 to requests without ``Authorization: Bearer <token>`` (None: open)."""
        self.call(setattr, self.server, "token", token)

    def enforce_role(self, rules: list[Obj] | None) -> None:
        """Answer 403 (RBAC wording) to requests outside these Role ``rules`` (None: allow all)."""
        self.call(setattr, self.server, "role_rules", copy.deepcopy(rules))

    def set_version(self, major: str, minor: str) -> None:
        """What ``/version`` answers (default 1.33; reset() does not change it)."""
        self.call(setattr, self.server, "server_version", (major, minor))

    def take_errors(self) -> list[str]:
        """Internal errors of the server since the last call (a bug in the emulator)."""

        def take() -> list[str]:
            errors = list(self.server.internal_errors)
            self.server.internal_errors.clear()
            return errors

        return self.call(take)


class _ServerThread:
    """The session's server: an asyncio loop in a daemon thread serving :class:`ApiServer`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.emulator: K8sEmulator | None = None
        self.thread = threading.Thread(target=self._main, name="k8s-emulator", daemon=True)

    def start(self) -> K8sEmulator:
        self.thread.start()
        if not self._ready.wait(30) or self.emulator is None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._failure!r}")
        return self.emulator

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # reported by start()
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApiServer() as handler, kmock.Server(handler, user_agent="") as server:
            self.emulator = K8sEmulator(handler, self.loop, str(server.url).rstrip("/"))
            self._ready.set()
            await self._stop.wait()
            handler.drop_streams()
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        if not self.thread.is_alive():
            self.loop.close()


# -- the Job controller and kubelet ---------------------------------------------------------

FAULTS = ("oom", "image_pull", "unschedulable", "evict", "preempt", "pending", "config_error")


@dataclasses.dataclass
class SimulatedFault:
    """A failure :class:`JobController` imposes on the next matching pods.

    kind:
        ``oom``: the container is killed after ``after`` s: terminated reason
        OOMKilled, exit code 137, pod Failed.
        ``image_pull``: the pod stays Pending, its container waiting with reason
        ErrImagePull and then ImagePullBackOff (with the registry's message).
        ``unschedulable``: the pod stays Pending with condition PodScheduled=False,
        reason Unschedulable and the scheduler's message.
        ``evict``: killed after ``after`` s by the kubelet: pod Failed, reason
        Evicted, condition DisruptionTarget (TerminationByKubelet).
        ``preempt``: killed after ``after`` s by the scheduler: pod Failed with
        condition DisruptionTarget (PreemptionByScheduler), then deleted.
        ``pending``: the pod waits ``after`` s in ContainerCreating, then runs.
        ``config_error``: the pod stays Pending with CreateContainerConfigError.
    job: a glob the Job's name must match (None: any Job).
    index: the completion index the pod must have (None: any).
    times: how many pods it applies to (None: every matching pod).
    message: replaces the default message.
    """

    kind: str
    job: str | None = None
    index: int | None = None
    times: int | None = 1
    after: float = 0.0
    message: str | None = None

    def matches(self, job_name: str, index: int | None) -> bool:
        return (self.job is None or fnmatch.fnmatchcase(job_name, self.job)) and (
            self.index is None or self.index == index
        )


_DEFAULT_MESSAGES = {
    "oom": "",
    "image_pull": 'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
    'failed to resolve reference "{image}": not found',
    "unschedulable": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: "
    "0/1 nodes are available: 1 No preemption victims found for incoming pod.",
    "evict": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi.",
    "preempt": "{pod} preempted by a higher-priority pod",
    "config_error": 'secret "missing" not found',
}


class _ContainerConfigError(Exception):
    """The kubelet cannot build the container's environment (missing Secret, key...)."""


@dataclasses.dataclass
class _PodRun:
    namespace: str
    name: str
    job_uid: str
    index: int | None
    fault: SimulatedFault | None
    kill: threading.Event = dataclasses.field(default_factory=threading.Event)
    kill_reason: str = ""  # "deleted", "deadline", "stop"
    done: bool = False
    succeeded: bool = False
    accounted: bool = False
    running: bool = False
    processes: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    created_rv: int = 0


@dataclasses.dataclass
class _JobRun:
    uid: str
    namespace: str
    name: str
    started: float
    start_time: str
    pods: dict[str, _PodRun] = dataclasses.field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    succeeded_indexes: set[int] = dataclasses.field(default_factory=set)
    failed_indexes: set[int] = dataclasses.field(default_factory=set)
    index_failures: Counter[int] = dataclasses.field(default_factory=Counter)
    finished: str | None = None  # "Complete", "Failed", or "Deleted"
    failure: tuple[str, str] = ("", "")  # reason, message
    last_status: str | None = None


def _ranges(indexes: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5", as in Job status completedIndexes."""
    result: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        result.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(result)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, value)


class JobController:
    """Runs batch/v1 Jobs of the emulator as local processes (see the module docstring).

    Honoured: ``completions``, ``parallelism``, ``completionMode: Indexed`` (pods
    named ``<job>-<index>-<suffix>``, label/annotation
    ``batch.kubernetes.io/job-completion-index``, env ``JOB_COMPLETION_INDEX``),
    ``backoffLimit`` (failed pods are replaced until it is exceeded),
    ``backoffLimitPerIndex`` / ``maxFailedIndexes``, ``activeDeadlineSeconds``
    (active pods killed and deleted, Job Failed/DeadlineExceeded), the pod spec's
    ``activeDeadlineSeconds`` (the kubelet kills the pod: Failed/DeadlineExceeded), ``suspend``
    (no new pods), pod deletion (the process gets SIGTERM, then SIGKILL after
    ``min(terminationGracePeriodSeconds, max_grace)``; a deleted pod of a running
    Job counts as failed and is replaced, as with podReplacementPolicy
    TerminatingOrFailed). Not emulated: retry back-off delays, podFailurePolicy,
    successPolicy, init/sidecar containers, restartPolicy OnFailure restarts in
    place (a failed container fails its pod), ttlSecondsAfterFinished.
    """

    def __init__(
        self,
        emulator: K8sEmulator,
        workdir: Path,
        *,
        max_grace: float = 1.0,
        passthrough_env: Iterable[str] = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR"),
        executables: Mapping[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        self.workdir = workdir
        self.max_grace = max_grace
        self.passthrough_env = tuple(passthrough_env)
        self.executables = dict(executables or {})
        self.errors: list[str] = []
        self.pods_started = 0
        self._faults: list[SimulatedFault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._queue: queue.Queue[str] = queue.Queue()
        self._jobs: dict[str, Obj] = {}  # uid -> latest Job seen by the watch
        self._runs: dict[str, _JobRun] = {}
        self._pods: dict[tuple[str, str], _PodRun] = {}
        self._threads: list[threading.Thread] = []
        self._responses: dict[str, Any] = {}
        self._api = emulator.api_client(user_agent=CONTROLLER_AGENT)
        self._pod_ips = iter(range(2, 250))

    def _core(self) -> Any:  # Any: bodies are plain dicts, as with every client version
        from kubernetes import client

        return client.CoreV1Api(self._api)

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self._api)

    # -- public -------------------------------------------------------------------

    def simulate(
        self,
        kind: str,
        *,
        job: str | None = None,
        index: int | None = None,
        times: int | None = 1,
        after: float = 0.0,
        message: str | None = None,
    ) -> SimulatedFault:
        """Impose a failure on the next pods that match (see :class:`SimulatedFault`)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: choose one of {', '.join(FAULTS)}")
        fault = SimulatedFault(kind, job, index, times, after, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def start(self) -> JobController:

        batch, core = self._batch(), self._core()
        for name, target in (
            (
                "jobs",
                lambda: self._list_watch(
                    "jobs", batch.list_job_for_all_namespaces, {}, self._on_jobs
                ),
            ),
            (
                "pods",
                lambda: self._list_watch(
                    "pods",
                    core.list_pod_for_all_namespaces,
                    {"label_selector": "batch.kubernetes.io/controller-uid"},
                    self._on_pods,
                ),
            ),
            ("reconcile", self._reconcile_loop),
        ):
            thread = threading.Thread(
                target=self._guard(target), name=f"k8s-controller-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop watching, kill every process it started, and wait for its threads."""
        self._stopping.set()
        for response in list(self._responses.values()):
            _shutdown(response)
        for thread in self._threads[:3]:  # the watches and the reconciler: no new pods after this
            thread.join(10)
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            pod.kill_reason = pod.kill_reason or "stop"
            pod.kill.set()
        for thread in list(self._threads):
            thread.join(10)
        self._api.close()

    def running_processes(self) -> list[int]:
        """Pids of the pod processes alive now."""
        with self._lock:
            pods = list(self._pods.values())
        return [p.pid for pod in pods for p in pod.processes if p.poll() is None]

    # -- watching -------------------------------------------------------------------

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:
                if not self._stopping.is_set():
                    log.exception("k8s controller")
                    self.errors.append(f"{threading.current_thread().name}: {error!r}")

        return run

    def _list_watch(
        self,
        name: str,
        list_fn: Callable[..., Any],
        selector: Mapping[str, str],
        handle: Callable[[str, Obj], None],  # ("SYNC", the list) or (event type, object)
    ) -> None:
        """List, then watch from the list's resourceVersion; resume after drops; re-list on 410."""
        from kubernetes.client.exceptions import ApiException

        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    listed = list_fn(_preload_content=False, **selector)
                    data = json.loads(listed.data)
                    resource_version = data["metadata"]["resourceVersion"]
                    handle("SYNC", data)
                response = list_fn(
                    watch=True,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=300,
                    _preload_content=False,
                    **selector,
                )
                self._responses[name] = response
                try:
                    for line in _stream_lines(response):
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410 Expired, or worse: list again
                            log.warning("k8s controller: watch %s: %s", name, event["object"])
                            resource_version = None
                            break
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            handle(event["type"], event["object"])
                finally:
                    self._responses.pop(name, None)
                    response.release_conn()
            except (ApiException, OSError, ValueError) as error:
                if self._stopping.is_set():
                    return
                log.debug("k8s controller: watch %s interrupted: %r", name, error)
                time.sleep(0.05)
            except Exception as error:
                if self._stopping.is_set():
                    return
                # urllib3 raises ProtocolError when the connection is reset mid-stream.
                if type(error).__module__.startswith("urllib3"):
                    time.sleep(0.05)
                    continue
                raise

    def _on_jobs(self, event: str, payload: Obj) -> None:
        with self._lock:
            if event == "SYNC":
                seen = {job["metadata"]["uid"]: job for job in payload["items"]}
                gone = set(self._jobs) - set(seen)
                self._jobs = seen
                uids = set(seen) | gone
            else:
                uid = payload["metadata"]["uid"]
                if event == "DELETED":
                    self._jobs.pop(uid, None)
                else:
                    self._jobs[uid] = payload
                uids = {uid}
        for uid in uids:
            self._queue.put(uid)

    def _on_pods(self, event: str, payload: Obj) -> None:
        """Kill the process of a pod that was deleted (or is being deleted)."""
        meta = payload["metadata"]
        if event == "SYNC":
            alive = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in payload["items"]}
            listed = int(meta["resourceVersion"])
            with self._lock:  # pods created after the list was taken are not missing from it
                vanished = [
                    run
                    for key, run in self._pods.items()
                    if key not in alive and not run.done and run.created_rv <= listed
                ]
            for run in vanished:
                self._kill(run, "deleted")
            return
        with self._lock:
            pod_run = self._pods.get((meta["namespace"], meta["name"]))
        if pod_run is not None and (event == "DELETED" or meta.get("deletionTimestamp")):
            self._kill(pod_run, "deleted")

    def _kill(self, run: _PodRun, reason: str) -> None:
        if not run.kill.is_set():
            run.kill_reason = reason
            run.kill.set()
        self._queue.put(run.job_uid)

    # -- reconciling ----------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            due: set[str] = set()
            with contextlib.suppress(queue.Empty):
                due.add(self._queue.get(timeout=0.05))
            while True:
                try:
                    due.add(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                # Jobs with a deadline are looked at on every tick.
                due |= {
                    uid
                    for uid, run in self._runs.items()
                    if not run.finished
                    and (self._jobs.get(uid) or {}).get("spec", {}).get("activeDeadlineSeconds")
                }
            for uid in sorted(due):
                if self._stopping.is_set():
                    return
                try:
                    self._reconcile(uid)
                except Exception as error:
                    if self._stopping.is_set():
                        return
                    if _api_status(error) in (404, 409):
                        continue  # the Job went away under us
                    log.exception("k8s controller: reconcile %s", uid)
                    self.errors.append(f"reconcile {uid}: {error!r}")

    def _reconcile(self, uid: str) -> None:
        with self._lock:
            job = self._jobs.get(uid)
            run = self._runs.get(uid)
        if job is None or job["metadata"].get("deletionTimestamp"):
            if run is not None:
                run.finished = run.finished or "Deleted"
            return
        meta, spec = job["metadata"], job.get("spec") or {}
        if run is None:
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in conditions
            ):
                return  # finished before this controller started
            run = _JobRun(uid, meta["namespace"], meta["name"], time.monotonic(), now_rfc3339())
            with self._lock:
                self._runs[uid] = run
        if run.finished:
            return
        indexed = spec.get("completionMode") == "Indexed"
        per_index = spec.get("backoffLimitPerIndex")
        for pod in run.pods.values():
            if pod.done and not pod.accounted:
                pod.accounted = True
                if pod.succeeded:
                    run.succeeded += 1
                    if pod.index is not None:
                        run.succeeded_indexes.add(pod.index)
                else:
                    run.failed += 1
                    if pod.index is not None:
                        run.index_failures[pod.index] += 1
                        if per_index is not None and run.index_failures[pod.index] > per_index:
                            run.failed_indexes.add(pod.index)
        active = [pod for pod in run.pods.values() if not pod.done]
        deadline = spec.get("activeDeadlineSeconds")
        completions = int(spec.get("completions") or 0)
        if indexed:
            complete = len(run.succeeded_indexes) >= completions
        elif spec.get("completions") is not None:
            complete = run.succeeded >= completions
        else:  # a work queue: done when one pod succeeded and none is left
            complete = run.succeeded > 0 and not active
        if deadline is not None and time.monotonic() - run.started >= deadline:
            self._fail(
                run, active, "DeadlineExceeded", "Job was active longer than specified deadline"
            )
        elif per_index is None and run.failed > int(spec.get("backoffLimit", 6)):
            self._fail(
                run, active, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            )
        elif (
            indexed
            and per_index is not None
            and spec.get("maxFailedIndexes") is not None
            and len(run.failed_indexes) > int(spec["maxFailedIndexes"])
        ):
            self._fail(
                run,
                active,
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        elif complete:
            run.finished = "Complete"
        elif (
            indexed
            and run.failed_indexes
            and len(run.succeeded_indexes | run.failed_indexes) >= completions
            and not active
        ):
            self._fail(run, active, "FailedIndexes", "Job has failed indexes")
        elif not spec.get("suspend"):
            self._start_pods(run, job, active)
        self._update_status(run, job)

    def _start_pods(self, run: _JobRun, job: Obj, active: list[_PodRun]) -> None:
        spec = job["spec"]
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if spec.get("completionMode") == "Indexed":
            busy = {pod.index for pod in active}
            todo = [
                i
                for i in range(int(completions))
                if i not in run.succeeded_indexes and i not in run.failed_indexes and i not in busy
            ]
            indexes: list[int | None] = list(todo[: max(0, parallelism - len(active))])
        else:
            remaining = (
                (int(completions) - run.succeeded)
                if completions is not None
                else (0 if run.succeeded else parallelism)
            )
            indexes = [None] * max(0, min(parallelism, remaining) - len(active))
        for index in indexes:
            if self._stopping.is_set():
                return
            self._create_pod(run, job, index)

    def _take_fault(self, job_name: str, index: int | None) -> SimulatedFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(job_name, index):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _create_pod(self, run: _JobRun, job: Obj, index: int | None) -> None:

        template = copy.deepcopy(job["spec"].get("template") or {})
        pod_meta = template.get("metadata") or {}
        labels = dict(pod_meta.get("labels") or {})
        annotations = dict(pod_meta.get("annotations") or {})
        pod_spec = template.get("spec") or {}
        name = (
            f"{run.name}-{index}-{random_suffix()}"
            if index is not None
            else f"{run.name}-{random_suffix()}"
        )
        if index is not None:
            labels[INDEX_LABEL] = str(index)
            annotations[INDEX_LABEL] = str(index)
            for container in pod_spec.get("containers") or []:
                container.setdefault("env", []).append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "apiVersion": "v1",
                                "fieldPath": f"metadata.labels['{INDEX_LABEL}']",
                            }
                        },
                    }
                )
        fault = self._take_fault(run.name, index)
        if fault is None or fault.kind != "unschedulable":
            pod_spec["nodeName"] = NODE_NAME  # the controller schedules, too
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": run.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": run.name,
                        "uid": run.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        created = self._core().create_namespaced_pod(run.namespace, pod, _preload_content=False)
        pod = json.loads(created.data)
        pod_run = _PodRun(run.namespace, name, run.uid, index, fault)
        pod_run.created_rv = int(pod["metadata"]["resourceVersion"])
        run.pods[name] = pod_run
        with self._lock:
            self._pods[(run.namespace, name)] = pod_run
            self.pods_started += 1
        thread = threading.Thread(
            target=self._guard(lambda: self._run_pod(pod_run, pod)),
            name=f"k8s-pod-{name}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _fail(self, run: _JobRun, active: list[_PodRun], reason: str, message: str) -> None:

        run.finished = "Failed"
        run.failure = (reason, message)
        with self._lock:
            per_index = ((self._jobs.get(run.uid) or {}).get("spec") or {}).get(
                "backoffLimitPerIndex"
            )
        core = self._core()
        for pod in active:
            pod.accounted = True
            run.failed += 1
            if pod.index is not None and per_index is not None:
                run.failed_indexes.add(pod.index)
            pod.kill_reason = "deadline" if reason == "DeadlineExceeded" else "failed"
            pod.kill.set()
            with contextlib.suppress(Exception):
                core.delete_namespaced_pod(
                    pod.name, pod.namespace, propagation_policy="Background", _preload_content=False
                )

    def _update_status(self, run: _JobRun, job: Obj) -> None:

        spec = job.get("spec") or {}
        active = [pod for pod in run.pods.values() if not pod.done and not pod.kill.is_set()]
        now = now_rfc3339()
        status: Obj = {
            "startTime": run.start_time,
            "active": len(active) or None,
            "ready": sum(1 for pod in active if pod.running),
            "succeeded": run.succeeded or None,
            "failed": run.failed or None,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
        if spec.get("completionMode") == "Indexed":
            status["completedIndexes"] = _ranges(run.succeeded_indexes) or None
            if spec.get("backoffLimitPerIndex") is not None:
                status["failedIndexes"] = _ranges(run.failed_indexes) or None
        if run.finished == "Complete":
            status["completionTime"] = now
            status["active"] = None
            status["conditions"] = [
                _condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
                _condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            ]
        elif run.finished == "Failed":
            reason, message = run.failure
            status["active"] = None
            status["conditions"] = [
                _condition("FailureTarget", reason, message, now),
                _condition("Failed", reason, message, now),
            ]
        timeless = {k: v for k, v in status.items() if k not in ("conditions", "completionTime")}
        signature = json.dumps([timeless, run.finished], sort_keys=True)
        if signature == run.last_status:
            return
        self._batch().patch_namespaced_job_status(
            run.name, run.namespace, {"status": status}, _preload_content=False
        )
        run.last_status = signature

    # -- the kubelet part -------------------------------------------------------------

    def _patch_pod(self, run: _PodRun, status: Obj) -> bool:
        """Patch the pod's status; False when the pod is gone."""

        try:
            self._core().patch_namespaced_pod_status(
                run.name, run.namespace, {"status": status}, _preload_content=False
            )
        except Exception as error:
            if _api_status(error) == 404:
                return False
            raise
        return True

    def _event(self, run: _PodRun, event_type: str, reason: str, message: str) -> None:

        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{run.name}.", "namespace": run.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": run.name,
                "namespace": run.namespace,
            },
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {
                "component": "kubelet" if reason != "FailedScheduling" else "default-scheduler"
            },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(Exception):
            self._core().create_namespaced_event(run.namespace, body, _preload_content=False)

    def _hold(self, run: _PodRun, seconds: float | None = None) -> None:
        """Block until the pod is killed (or ``seconds`` pass)."""
        run.kill.wait(seconds)

    def _run_pod(self, run: _PodRun, pod: Obj) -> None:
        try:
            self._run_pod_inner(run, pod)
        finally:
            run.done = True
            self._queue.put(run.job_uid)

    def _run_pod_inner(self, run: _PodRun, pod: Obj) -> None:
        spec = pod["spec"]
        containers: list[Obj] = spec.get("containers") or []
        fault = run.fault
        now = now_rfc3339()
        pod_ip = f"10.244.0.{next(self._pod_ips, 250)}"
        if fault is not None and fault.kind == "unschedulable":
            message = fault.message or _DEFAULT_MESSAGES["unschedulable"]
            self._patch_pod(
                run,
                {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": message,
                            "lastTransitionTime": now,
                        }
                    ]
                },
            )
            self._event(run, "Warning", "FailedScheduling", message)
            self._hold(run)
            return
        scheduled = {
            "phase": "Pending",
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ContainersNotReady",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                _container_status(c, {"waiting": {"reason": "ContainerCreating"}}, ready=False)
                for c in containers
            ],
        }
        if not self._patch_pod(run, scheduled):
            return
        if fault is not None and fault.kind in ("image_pull", "config_error"):
            image = containers[0].get("image", "")
            if fault.kind == "image_pull":
                message = fault.message or _DEFAULT_MESSAGES["image_pull"].format(image=image)
                waiting = [
                    ("ErrImagePull", message),
                    ("ImagePullBackOff", f'Back-off pulling image "{image}"'),
                ]
            else:
                message = fault.message or _DEFAULT_MESSAGES["config_error"]
                waiting = [("CreateContainerConfigError", message)]
            for reason, text in waiting:
                state = {"waiting": {"reason": reason, "message": text}}
                self._patch_pod(
                    run,
                    {"containerStatuses": [_container_status(containers[0], state, ready=False)]},
                )
                self._event(
                    run,
                    "Warning",
                    "Failed",
                    text if reason != "ImagePullBackOff" else f"Error: {reason}",
                )
                if self._hold_or_killed(run, 0.1):
                    return
            self._hold(run)
            return
        if fault is not None and fault.kind == "pending" and self._hold_or_killed(run, fault.after):
            return
        try:
            environments = [self._container_env(pod, container) for container in containers]
        except _ContainerConfigError as error:
            state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            self._patch_pod(
                run, {"containerStatuses": [_container_status(containers[0], state, ready=False)]}
            )
            self._event(run, "Warning", "Failed", f"Error: {error}")
            self._hold(run)
            return
        if self._stopping.is_set():
            return
        cwd = Path(tempfile.mkdtemp(prefix=f"{run.name}-", dir=self.workdir))
        readers: list[threading.Thread] = []
        started: list[Obj] = []
        started_at = now_rfc3339()
        terminated: dict[str, Obj] = {}
        for container, env in zip(containers, environments, strict=True):
            argv = [
                _expand(str(a), env)
                for a in (container.get("command") or []) + (container.get("args") or [])
            ]
            self.emulator.call(
                self.emulator.server.open_log, run.namespace, run.name, container["name"]
            )
            if not argv:
                terminated[container["name"]] = {
                    "exitCode": 128,
                    "reason": "ContainerCannotRun",
                    "message": "the emulator cannot run an image's entrypoint: "
                    "give the container a command",
                }
                continue
            argv[0] = self._executable(argv[0])
            if shutil.which(argv[0], path=env.get("PATH", os.defpath)):
                # A container starts with default signal dispositions, whatever
                # the caller of pytest ignored (so SIGTERM below means SIGTERM).
                # A missing program stays unwrapped: Popen's OSError is StartError.
                argv = with_default_signals(argv)
            workdir = container.get("workingDir")
            try:
                process = subprocess.Popen(
                    argv,
                    env={**env, "HOME": str(cwd)},
                    cwd=workdir if workdir and os.path.isdir(workdir) else cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                terminated[container["name"]] = {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": "failed to create containerd task: "
                    f'exec: "{argv[0]}": {error.strerror}',
                }
                continue
            run.processes.append(process)
            started.append(container)
            reader = threading.Thread(
                target=self._pump,
                args=(run, container["name"], process),
                name=f"k8s-log-{run.name}",
                daemon=True,
            )
            reader.start()
            readers.append(reader)
        run.running = bool(started)
        if run.kill.is_set():  # deleted while starting
            for process in run.processes:
                _kill_group(process, signal.SIGKILL)
        running_status = {
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "conditions": [
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": started_at},
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": None,
                    "lastTransitionTime": started_at,
                },
            ],
            "containerStatuses": [
                _container_status(
                    c,
                    {"running": {"startedAt": started_at}, "waiting": None},
                    ready=True,
                    started=True,
                )
                for c in started
            ],
        }
        if started:
            self._patch_pod(run, running_status)
            self._queue.put(run.job_uid)
        killed_by = self._wait(run, spec, fault)
        for reader in readers:
            reader.join(10)
        for container in containers:
            self.emulator.call(
                self.emulator.server.close_log, run.namespace, run.name, container["name"]
            )
        shutil.rmtree(cwd, ignore_errors=True)
        if run.kill_reason in ("deleted", "stop", "deadline", "failed"):
            run.succeeded = False
            return  # the pod is gone (or going): nobody reports its end
        finished_at = now_rfc3339()
        for container, process in zip(started, run.processes, strict=True):
            code = process.returncode if process.returncode is not None else 137
            code = 128 - code if code < 0 else code
            ended: Obj = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
            if killed_by == "oom" and container is started[0]:
                ended = {"exitCode": 137, "reason": "OOMKilled"}
            elif killed_by in ("evict", "preempt") and container is started[0]:
                ended = {"exitCode": 137, "reason": "Error"}
            if (
                ended["exitCode"] != 0
                and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
            ):
                text = self.emulator.logs(run.namespace, run.name, container["name"]) or ""
                ended["message"] = "".join(text.splitlines(keepends=True)[-80:])[-2048:]
            terminated[container["name"]] = ended
        success = all(state["exitCode"] == 0 for state in terminated.values())
        statuses = []
        for container in containers:
            final_state: Obj = {
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": f"emulated://{run.name}/{container['name']}",
                **terminated[container["name"]],
            }
            statuses.append(
                _container_status(
                    container,
                    {"terminated": final_state, "running": None, "waiting": None},
                    ready=False,
                    started=False,
                )
            )
        final: Obj = {
            "phase": "Succeeded" if success else "Failed",
            "conditions": [
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished_at,
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished_at,
                },
            ],
            "containerStatuses": statuses,
        }
        if killed_by == "pod_deadline":
            final.update(
                {
                    "reason": "DeadlineExceeded",
                    "message": "Pod was active on the node longer than the specified deadline",
                }
            )
        elif killed_by == "evict":
            message = fault.message if fault and fault.message else _DEFAULT_MESSAGES["evict"]
            final.update({"reason": "Evicted", "message": message})
            final["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": message,
                    "lastTransitionTime": finished_at,
                }
            )
        elif killed_by == "preempt":
            default = _DEFAULT_MESSAGES["preempt"].format(pod=run.name)
            message = fault.message if fault and fault.message else default
            final["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": message,
                    "lastTransitionTime": finished_at,
                }
            )
        run.succeeded = success
        run.running = False
        if not self._patch_pod(run, final):
            return
        if killed_by == "preempt":
            with contextlib.suppress(Exception):
                self._core().delete_namespaced_pod(
                    run.name, run.namespace, propagation_policy="Background", _preload_content=False
                )

    def _hold_or_killed(self, run: _PodRun, seconds: float) -> bool:
        return run.kill.wait(seconds)

    def _wait(self, run: _PodRun, spec: Obj, fault: SimulatedFault | None) -> str | None:
        """Wait for the processes; kill them on deletion, deadline or a simulated fault."""
        disruptive = fault is not None and fault.kind in ("oom", "evict", "preempt")
        fault_at = time.monotonic() + (fault.after if fault else 0.0)
        # The kubelet's own limit: the pod's activeDeadlineSeconds (not the Job's).
        pod_deadline = spec.get("activeDeadlineSeconds")
        deadline_at = None if pod_deadline is None else time.monotonic() + float(pod_deadline)
        while any(p.poll() is None for p in run.processes):
            if deadline_at is not None and time.monotonic() >= deadline_at:
                for process in run.processes:
                    _kill_group(process, signal.SIGKILL)
                for process in run.processes:
                    process.wait()
                return "pod_deadline"
            if disruptive and time.monotonic() >= fault_at:
                for process in run.processes[:1]:
                    _kill_group(process, signal.SIGKILL)
                for process in run.processes:
                    process.wait()
                assert fault is not None
                return fault.kind
            if run.kill.wait(0.02):
                grace = min(float(spec.get("terminationGracePeriodSeconds", 30)), self.max_grace)
                grace = 0.0 if run.kill_reason == "stop" else grace
                for process in run.processes:
                    _kill_group(process, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while any(p.poll() is None for p in run.processes) and time.monotonic() < deadline:
                    time.sleep(0.02)
                for process in run.processes:
                    _kill_group(process, signal.SIGKILL)
                    process.wait()
                return run.kill_reason
        return fault.kind if disruptive and fault is not None and fault.after <= 0 else None

    def _pump(self, run: _PodRun, container: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.emulator.call(
                self.emulator.server.append_log, run.namespace, run.name, container, data
            )
        process.stdout.close()

    def _executable(self, program: str) -> str:
        if program in self.executables:
            return self.executables[program]
        if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", program):
            return sys.executable  # the image's Python is this interpreter here
        return program

    def _container_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        """The environment kubelet would give the container (raises _ContainerConfigError)."""

        core = self._core()
        meta = pod["metadata"]
        namespace = meta["namespace"]
        env: dict[str, str] = {k: os.environ[k] for k in self.passthrough_env if k in os.environ}
        env["HOSTNAME"] = meta["name"]
        cache: dict[tuple[str, str], Obj | None] = {}

        def source(kind: str, name: str, optional: bool) -> Obj | None:
            if (kind, name) not in cache:
                reader = (
                    core.read_namespaced_secret
                    if kind == "secret"
                    else core.read_namespaced_config_map
                )
                try:
                    cache[(kind, name)] = json.loads(
                        reader(name, namespace, _preload_content=False).data
                    )
                except Exception as error:
                    if _api_status(error) != 404:
                        raise
                    cache[(kind, name)] = None
            found = cache[(kind, name)]
            if found is None and not optional:
                raise _ContainerConfigError(f'{kind} "{name}" not found')
            return found

        def value_of(kind: str, ref: Obj) -> str | None:
            found = source(kind, ref.get("name", ""), bool(ref.get("optional")))
            if found is None:
                return None
            data = found.get("data") or {}
            key = ref.get("key", "")
            if key not in data:
                if ref.get("optional"):
                    return None
                label = "Secret" if kind == "secret" else "ConfigMap"
                raise _ContainerConfigError(
                    f"couldn't find key {key} in {label} {namespace}/{ref.get('name')}"
                )
            raw = data[key]
            return base64.b64decode(raw).decode() if kind == "secret" else str(raw)

        for env_from in container.get("envFrom") or []:
            prefix = env_from.get("prefix", "")
            for kind, field in (("secret", "secretRef"), ("configmap", "configMapRef")):
                ref = env_from.get(field)
                if ref:
                    found = source(kind, ref.get("name", ""), bool(ref.get("optional")))
                    for key, raw in ((found or {}).get("data") or {}).items():
                        env[prefix + key] = (
                            base64.b64decode(raw).decode() if kind == "secret" else str(raw)
                        )
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var or "valueFrom" not in var:
                env[name] = _expand(str(var.get("value", "")), env)
                continue
            ref = var["valueFrom"]
            value: str | None
            if "secretKeyRef" in ref:
                value = value_of("secret", ref["secretKeyRef"])
            elif "configMapKeyRef" in ref:
                value = value_of("configmap", ref["configMapKeyRef"])
            elif "fieldRef" in ref:
                value = _field_ref(pod, ref["fieldRef"]["fieldPath"])
            else:
                value = ""  # resourceFieldRef: not emulated
            if value is not None:
                env[name] = value
        return env


def _field_ref(pod: Obj, path: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": "10.0.0.1",
        "status.podIP": "",
    }
    return str(values.get(path, ""))


def _container_status(container: Obj, state: Obj, *, ready: bool, started: bool = False) -> Obj:
    image = str(container.get("image", ""))
    return {
        "name": container["name"],
        "image": image,
        "imageID": f"{image}@sha256:{'0' * 64}",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    }


def _condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _api_status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def _stream_lines(response: Any) -> Iterator[str]:
    """Lines of a streaming urllib3 response (a watch)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()


def _shutdown(response: Any) -> None:
    """Unblock a thread reading a streaming urllib3 response (as Watch.stop does)."""
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def k8s_api_server() -> Iterator[K8sEmulator]:
    """The emulated API server of the session (not reset: use ``k8s_emulator``)."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = _ServerThread()
    emulator = server.start()
    try:
        yield emulator
    finally:
        server.stop()


@pytest.fixture
def k8s_emulator(k8s_api_server: K8sEmulator) -> Iterator[K8sEmulator]:
    """An empty cluster (namespaces ``default`` and ``jobkit``) served over HTTP."""
    k8s_api_server.reset()
    yield k8s_api_server
    k8s_api_server.drop_watches()
    errors = k8s_api_server.take_errors()
    if errors:
        pytest.fail("the Kubernetes API emulator failed:\n" + "\n".join(errors))


@pytest.fixture
def k8s_client(k8s_emulator: K8sEmulator) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the emulator (no kubeconfig involved)."""
    api = k8s_emulator.api_client()
    yield api
    api.close()


@pytest.fixture
def k8s_kubeconfig(
    k8s_emulator: K8sEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A kubeconfig for the emulator (namespace ``jobkit``), exported as ``KUBECONFIG``."""
    path = k8s_emulator.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def k8s_controller(
    k8s_emulator: K8sEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobController]:
    """A running :class:`JobController`; its processes are killed after the test."""
    controller = JobController(k8s_emulator, tmp_path_factory.mktemp("pods")).start()
    try:
        yield controller
    finally:
        controller.stop()
    if controller.errors:
        pytest.fail("the test Job controller failed:\n" + "\n".join(controller.errors))
