"""Defaulting and validation of Jobs and pods.

The 422s a backend trips over, worded as the API server words them.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import bad_request
from .kinds import (
    _DNS1123_LABEL,
    _DNS1123_SUBDOMAIN,
    _LABEL_HELP,
    _LABEL_NAME,
    _LABEL_VALUE,
    _QUANTITY,
    _SUBDOMAIN_HELP,
    MAX_INDEXED_COMPLETIONS,
    Kind,
    Obj,
)

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
