"""jobkit resources -> one batch/v1 Job manifest: the only translation there is.

Every Kubernetes field jobkit writes is chosen here, as plain dicts (the
shape the API serves and ``kubernetes-validate`` checks), so ``jobkit plan``
prints exactly what ``submit`` sends::

    cpus, mem        -> requests and limits (cpu, memory)
    gpus (whole)     -> limits[<gpu_resource>] (nvidia.com/gpu), GPU tolerations
    gpus (fraction)  -> a MIG profile or a shared-memory resource (gpu_sharing), else refused
    gpu_type         -> nodeSelector[<gpu_type_label>]
    time             -> the POD's activeDeadlineSeconds: a limit per item of a map,
                        not for the whole map (a Job-level deadline would be)
    retries          -> backoffLimit (single) / backoffLimitPerIndex (map, where supported)
    priority         -> priorityClassName (priority_classes)
    queue            -> the Kueue queue label on the Job
    depends_on (unfinished) -> spec.suspend: true, label jobkit.dev/held, annotation
                        jobkit.dev/waits-on (hold); released by a merge patch (RELEASE);
                        an item-wise map: one such Job per item (as_item)
    map over N items -> ONE Indexed Job: completions N, parallelism = the cap
    rerun of items   -> ONE Indexed Job named <array>-r<random> over just those items:
                        pod i runs item ITEMS[i] (annotation and $JOBKIT_ARRAY_ITEMS)

Each pod runs ``python -m jobkit.worker``, which reads the payload from the
store and writes the outcome there; a map's pods find their item from
``JOB_COMPLETION_INDEX``.  ``kubernetes={...}`` on a call adds node
selectors, tolerations, volumes, annotations, labels and, last, a pod-spec
patch merged over everything (:data:`EXTRAS`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jobkit.errors import ConfigError

from .settings import KubernetesSettings

MANAGED_BY = "app.kubernetes.io/managed-by"
JOB_ID = "jobkit.dev/job-id"
"""On a single job's Job and pod: its jobkit id."""
ARRAY_ID = "jobkit.dev/array-id"
"""On a map's Job and pods: the array id (a pod's item is its completion index)."""
NAME = "jobkit.dev/name"
SELECTOR = f"{MANAGED_BY}=jobkit"
"""The label selector of the one watch that follows every jobkit pod."""
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
ITEMS_ANNOTATION = "jobkit.dev/items"
"""On a rerun's pods: the item indices its completion indices stand for
(``3,7,12``: completion index 1 runs item 7); absent, the index is the item."""
ITEMS_ENV = "JOBKIT_ARRAY_ITEMS"
"""The same list, for the worker (:func:`jobkit.worker.array_item`)."""
HELD = "jobkit.dev/held"
"""Label on a Job created suspended until its dependencies succeed (removed on release)."""
WAITS_ON = "jobkit.dev/waits-on"
"""Annotation on a held Job: the ids of the jobs or arrays it waits for."""
RELEASE: dict[str, Any] = {"metadata": {"labels": {HELD: None}}, "spec": {"suspend": False}}
"""The merge patch that lets a held Job start its pods (and says it is no longer held)."""
CONTAINER = "job"
MAX_INDEXED_COMPLETIONS = 100_000
"""Kubernetes' cap on ``completions`` of an Indexed Job with ``backoffLimitPerIndex``."""

EXTRAS = {
    "node_selector": "nodeSelector entries (dict)",
    "tolerations": "tolerations (list of dicts)",
    "volumes": "pod volumes (list of dicts)",
    "volume_mounts": "the container's volumeMounts (list of dicts)",
    "annotations": "annotations on the Job and its pods (dict)",
    "labels": "more labels on the Job and its pods (dict)",
    "env_from": "more envFrom sources (list of dicts)",
    "parallelism": "pods of a map running at once (int)",
    "service_account": "the pods' ServiceAccount",
    "pod_spec": "a patch merged over the generated pod spec, last (dict)",
}
"""What ``kubernetes={...}`` accepts, and what each is."""

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def label_value(text: str) -> str:
    """``text`` made a valid label value (names are free text; labels are not)."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:63].strip("-_.")
    return cleaned


def job_name(job_id: str) -> str:
    """The Kubernetes name of a jobkit job or array id (jobkit ids are valid names)."""
    name = job_id.lower()
    if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", name):
        raise ConfigError(
            f"job id {job_id!r} cannot name a Kubernetes Job (lower-case letters, digits "
            "and '-', at most 63): let jobkit choose ids"
        )
    return name


def attempt_job_name(job_id: str, attempt: int) -> str:
    """The Job of a resubmitted attempt of ``job_id`` (a map's item too, as a Job
    of its own): ``jk-abc-a1``, ``jk-abc-3-a2``.  Attempt 0 is ``job_name(job_id)``."""
    return job_name(f"{job_id.replace('.', '-')}-a{attempt}")


def build_job(
    *,
    job_id: str,
    name: str,
    resources: Any,
    settings: KubernetesSettings,
    store_url: str,
    count: int | None = None,
    per_index_retries: bool = True,
    items: list[int] | None = None,
    kube_name: str | None = None,
) -> dict[str, Any]:
    """The Job for one jobkit job (``count`` None) or a map of ``count`` items (``job_id``
    is then the array id).  ``kube_name``: the Job's name, when not ``job_name(job_id)``
    (a rerun's or a resubmitted attempt's: the first attempt's Job may still
    exist); ``items``: for a map, run only these item indices."""
    check_extras(resources.kubernetes)
    extras: Mapping[str, Any] = resources.kubernetes
    image = resources.image or settings.image
    if not image:
        raise ConfigError(
            "no container image for the kubernetes backend: pass image='registry/app:tag' "
            "(or .options(image=...)), or set [kubernetes] image in jobkit.toml; the image "
            "needs jobkit and your code"
        )
    array = count is not None
    id_label = ARRAY_ID if array else JOB_ID
    labels = {
        MANAGED_BY: "jobkit",
        id_label: job_id,
        NAME: label_value(name) or "job",
        **_labels("labels", resources.labels),
        **_labels("kubernetes labels", extras.get("labels") or {}),
    }
    annotations = {str(k): str(v) for k, v in (extras.get("annotations") or {}).items()}
    pod_spec = _pod_spec(job_id, resources, settings, store_url, image, array, extras)
    template: dict[str, Any] = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    pod_annotations = dict(annotations)
    if array and items is not None:
        listed = ",".join(str(i) for i in items)
        pod_annotations[ITEMS_ANNOTATION] = listed
        pod_spec["containers"][0]["env"].append({"name": ITEMS_ENV, "value": listed})
        count = len(items)
    if pod_annotations:
        template["metadata"]["annotations"] = pod_annotations
    spec: dict[str, Any] = {"template": template}
    # A job whose memory grows on OOM is never rerun by Kubernetes (the pod
    # template cannot change): jobkit resubmits each retry as a new Job.
    retries = 0 if resources.mem_growth else int(resources.retries)
    if array:
        assert count is not None
        if count > MAX_INDEXED_COMPLETIONS:
            raise ConfigError(
                f"a map of {count} items is more than one Indexed Job takes "
                f"({MAX_INDEXED_COMPLETIONS}); split it"
            )
        parallelism = int(extras.get("parallelism") or settings.array_parallelism)
        spec.update(
            completions=count, parallelism=min(count, parallelism), completionMode="Indexed"
        )
        if per_index_retries:
            spec["backoffLimitPerIndex"] = retries
        else:
            spec["backoffLimit"] = retries * count
    else:
        spec.update(completions=1, parallelism=1, backoffLimit=retries)
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    job_labels = dict(labels)
    if resources.queue:
        job_labels[settings.queue_label] = resources.queue
        spec["suspend"] = True  # Kueue admits (unsuspends) it when the queue has room
    metadata: dict[str, Any] = {
        "name": kube_name or job_name(job_id),
        "namespace": settings.namespace,
        "labels": job_labels,
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def hold(manifest: dict[str, Any], waits_on: Sequence[str]) -> None:
    """Create the Job suspended: no pods, nothing requested from the cluster,
    until :data:`RELEASE` is patched in.  Not for Kueue-queued Jobs, whose
    ``suspend`` Kueue owns."""
    manifest["spec"]["suspend"] = True
    metadata = manifest["metadata"]
    metadata["labels"][HELD] = "true"
    metadata.setdefault("annotations", {})[WAITS_ON] = ",".join(waits_on)


def as_item(manifest: dict[str, Any], *, array_id: str, index: int, item_id: str) -> None:
    """Make a single-job manifest the Job of one map item: its pods carry the
    array's id label and the item's index (what an Indexed Job's pods carry),
    and run that item.  For item-wise held maps, whose items start one by one."""
    spec = manifest["spec"]
    for meta in (manifest["metadata"], spec["template"]["metadata"]):
        meta["labels"].pop(JOB_ID, None)
        meta["labels"][ARRAY_ID] = array_id
    spec["template"]["metadata"].setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
    spec["template"]["spec"]["containers"][0]["command"][-1] = item_id


def _pod_spec(
    job_id: str,
    resources: Any,
    settings: KubernetesSettings,
    store_url: str,
    image: str,
    array: bool,
    extras: Mapping[str, Any],
) -> dict[str, Any]:
    target = ["--array", job_id, "--offset", "0"] if array else [job_id]
    env: list[dict[str, Any]] = [
        {"name": "JOBKIT_STORE", "value": store_url},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # The host the worker records is its pod, so a pod's failure is matched to it.
        {"name": "JOBKIT_HOST", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    env += [{"name": str(k), "value": str(v)} for k, v in sorted(resources.env.items())]
    env_from = [{"secretRef": {"name": s}} for s in (settings.secret, *settings.env_secrets) if s]
    env_from += list(extras.get("env_from") or [])
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": [settings.python, "-m", "jobkit.worker", "--store", store_url, *target],
        "env": env,
        "resources": _container_resources(resources, settings),
    }
    if env_from:
        container["envFrom"] = env_from
    if extras.get("volume_mounts"):
        container["volumeMounts"] = list(extras["volume_mounts"])
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    account = extras.get("service_account") or settings.service_account
    if account:
        spec["serviceAccountName"] = account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    selector = dict(extras.get("node_selector") or {})
    if resources.gpu_type:
        selector[settings.gpu_type_label] = settings.gpu_types.get(
            resources.gpu_type, resources.gpu_type
        )
    if selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in selector.items()}
    tolerations = [dict(t) for t in settings.gpu_tolerations] if resources.gpus else []
    tolerations += [dict(t) for t in extras.get("tolerations") or []]
    if tolerations:
        spec["tolerations"] = tolerations
    if resources.time is not None:
        spec["activeDeadlineSeconds"] = max(1, int(resources.time.total_seconds()))
    priority_class = _priority_class(resources.priority_value, settings)
    if priority_class:
        spec["priorityClassName"] = priority_class
    if extras.get("volumes"):
        spec["volumes"] = list(extras["volumes"])
    if extras.get("pod_spec"):
        spec = merge(spec, extras["pod_spec"])
    return spec


def _container_resources(resources: Any, settings: KubernetesSettings) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": cpu_quantity(resources.cpus)}
    limits: dict[str, str] = {"cpu": cpu_quantity(resources.cpus)}
    if resources.mem:
        requests["memory"] = limits["memory"] = memory_quantity(int(resources.mem))
    gpus = float(resources.gpus or 0)
    if gpus >= 1:
        if gpus != int(gpus):
            raise ConfigError(
                f"gpus={resources.gpus!r}: ask for whole GPUs, or a fraction below 1 to share one"
            )
        limits[settings.gpu_resource] = str(int(gpus))
    elif gpus > 0:
        name, amount = shared_gpu(gpus, settings)
        limits[name] = amount
    return {"requests": requests, "limits": limits}


def shared_gpu(fraction: float, settings: KubernetesSettings) -> tuple[str, str]:
    """The extended resource (and amount) a fraction of a GPU is asked for as."""
    sharing = settings.gpu_sharing
    if sharing is None:
        raise ConfigError(
            f"gpus={fraction:g} asks for part of a GPU, and this cluster's way to share one is "
            "not configured: set [kubernetes] gpu_sharing to a MIG profile table "
            '({"mode": "mig", "profiles": {"0.5": "nvidia.com/mig-3g.40gb"}}) or a '
            'GPU-memory resource ({"mode": "memory", "resource": "aliyun.com/gpu-mem", '
            '"per_gpu": 80}), or ask for whole GPUs'
        )
    if sharing["mode"] == "mig":
        profiles = {float(k): str(v) for k, v in sharing["profiles"].items()}
        fitting = sorted(f for f in profiles if f >= fraction)
        if not fitting:
            raise ConfigError(
                f"gpus={fraction:g} is more than the largest MIG profile configured "
                f"({max(profiles):g}); ask for a whole GPU or add a profile"
            )
        return profiles[fitting[0]], "1"
    amount = max(1, round(fraction * float(sharing["per_gpu"])))
    return str(sharing["resource"]), str(amount)


def _priority_class(value: int, settings: KubernetesSettings) -> str | None:
    band = "low" if value < 0 else "high" if value > 0 else "normal"
    return settings.priority_classes.get(band)


def cpu_quantity(cpus: float) -> str:
    """``2`` -> ``"2"``, ``0.5`` -> ``"500m"`` (Kubernetes counts millicores)."""
    milli = round(float(cpus) * 1000)
    if milli < 1:
        raise ConfigError(f"cpus={cpus!r} is less than Kubernetes' smallest unit (0.001)")
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(size: int) -> str:
    """Bytes in the largest binary unit that divides them exactly (``16Gi``)."""
    for unit, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def check_extras(extras: Mapping[str, Any]) -> None:
    """Refuse unknown ``kubernetes={...}`` keys and values of the wrong shape."""
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in EXTRAS.items())
        raise ConfigError(f"unknown kubernetes option {unknown[0]!r}; valid options: {listing}")
    shapes: dict[str, type | tuple[type, ...]] = {
        "node_selector": Mapping,
        "tolerations": (list, tuple),
        "volumes": (list, tuple),
        "volume_mounts": (list, tuple),
        "annotations": Mapping,
        "labels": Mapping,
        "env_from": (list, tuple),
        "parallelism": int,
        "service_account": str,
        "pod_spec": Mapping,
    }
    for key, value in extras.items():
        if not isinstance(value, shapes[key]) or isinstance(value, bool):
            raise ConfigError(
                f"kubernetes option {key}={value!r} has the wrong type: expected {EXTRAS[key]}"
            )
        if isinstance(value, (list, tuple)) and not all(isinstance(v, Mapping) for v in value):
            raise ConfigError(f"kubernetes option {key} must be a list of dicts, not {value!r}")
    if "parallelism" in extras and extras["parallelism"] < 1:
        raise ConfigError(f"kubernetes option parallelism={extras['parallelism']!r} must be >= 1")


def _labels(what: str, labels: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in labels.items():
        text = str(value)
        if not _LABEL_VALUE.match(text):
            raise ConfigError(
                f"{what}: value {text!r} of {key!r} is not a valid Kubernetes label value "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)"
            )
        out[str(key)] = text
    return out


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` merged over ``base``: dicts recursively, anything else replaced
    (a JSON merge patch, RFC 7386, where ``None`` deletes a key)."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_yaml(manifest: Mapping[str, Any]) -> str:
    import importlib

    yaml: Any = importlib.import_module("yaml")  # a dependency of the kubernetes client
    text: str = yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)
    return text


def validate(manifest: Mapping[str, Any], version: tuple[int, int] | None = None) -> None:
    """Check ``manifest`` against the official schema (strict: an unknown field is an
    error) of ``version``, or the newest kubernetes-validate knows; ConfigError names
    the field.  What a ``pod_spec`` patch or a volume got wrong is said here, before
    anything is sent, instead of as a 422 from the API server."""
    import kubernetes_validate  # type: ignore[import-untyped]
    from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

    known = sorted(
        {tuple(int(n) for n in v.split(".")[:2]) for v in all_versions()}, key=lambda v: v
    )
    chosen = max((v for v in known if version is None or v <= version), default=known[0])
    target = f"{chosen[0]}.{chosen[1]}"
    try:
        kubernetes_validate.validate(dict(manifest), target, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path) or "the Job"
        raise ConfigError(
            f"the Job jobkit would send is invalid for Kubernetes {target}: at {where}: "
            f"{' '.join(str(error.message).split())}; fix the kubernetes={{...}} options "
            "(`jobkit plan` prints the manifest)"
        ) from None
