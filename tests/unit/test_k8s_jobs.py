"""The Job manifests the kubernetes backend sends: valid for every Kubernetes version
kubernetes-validate ships (strict: a misspelt field is an error), equal to golden
files, and every bad request refused with one line before anything is sent.

Regenerate the golden files with ``JOBKIT_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobkit.backends.kubernetes.manifest import (
    as_item,
    build_job,
    cpu_quantity,
    hold,
    memory_quantity,
    merge,
    to_yaml,
)
from jobkit.backends.kubernetes.settings import KubernetesSettings
from jobkit.errors import ConfigError
from jobkit.resources import Resources

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is in the dev extra: pip install -e '.[dev]'"
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kubernetes"
STORE = "s3://team-bucket/jobs"
SETTINGS = KubernetesSettings.from_config(
    {
        "namespace": "ml",
        "image": "registry.example/team/train:1.4",
        "secret": "jobkit-store",
        "image_pull_secrets": ["regcred"],
        "service_account": "jobkit-runner",
        "gpu_types": {"a100": "NVIDIA-A100-SXM4-80GB"},
        "gpu_sharing": {"mode": "mig", "profiles": {"0.5": "nvidia.com/mig-3g.40gb"}},
    }
)


def versions() -> list[str]:
    from kubernetes_validate.utils import all_versions

    minor = {".".join(v.split(".")[:2]) for v in all_versions()}
    return sorted(minor, key=lambda v: int(v.split(".")[1]))


CASES: dict[str, dict[str, Any]] = {
    "single": {"resources": {"cpus": 2, "mem": 8 << 30, "time": timedelta(hours=4)}},
    "indexed": {"resources": {"cpus": 0.5, "retries": 2}, "count": 100},
    "gpu": {
        "resources": {"gpus": 2, "gpu_type": "a100", "priority": "high", "queue": "team-a"},
    },
    "fractional": {"resources": {"gpus": 0.5, "mem": 20 << 30}},
    # Dependencies not yet succeeded: created suspended (no pods), released by a patch.
    "held": {"resources": {"cpus": 1}, "hold": ["jk-1m7zprepprepre", "jk-1m7zsweepsweep"]},
    "held_item": {
        "resources": {"cpus": 1},
        "hold": ["jk-1m7zsweepsweep.3"],
        "item": ("jk-1m7zevalevalev", 3),
    },
    "extras": {
        "resources": {
            "env": {"WANDB_PROJECT": "sweep"},
            "labels": {"team": "vision"},
            "kubernetes": {
                "node_selector": {"cloud.google.com/gke-spot": "true"},
                "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "imagenet"}}],
                "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                "pod_spec": {"hostIPC": True, "terminationGracePeriodSeconds": 60},
            },
        }
    },
}


def manifest(case: str) -> dict[str, Any]:
    spec = CASES[case]
    count = spec.get("count")
    item = spec.get("item")
    built = build_job(
        job_id=f"{item[0]}-{item[1]}" if item else "jk-1m7zabcdefghij",
        name="train lr=0.1",
        resources=Resources(**spec["resources"]),
        settings=SETTINGS,
        store_url=STORE,
        count=count,
    )
    if item:
        as_item(built, array_id=item[0], index=item[1], item_id=f"{item[0]}.{item[1]}")
    if spec.get("hold"):
        hold(built, spec["hold"])
    return built


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_their_golden_files(case: str) -> None:
    text = to_yaml(manifest(case))
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("JOBKIT_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with JOBKIT_UPDATE_GOLDEN=1: {golden}"


@pytest.mark.parametrize("version", versions())
def test_every_manifest_is_valid_in_strict_mode(version: str) -> None:
    for case in CASES:
        try:
            kubernetes_validate.validate(manifest(case), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            if "backoffLimitPerIndex" in error.message and version < "1.28":
                continue  # the field arrived in 1.28; the backend asks the server first
            pytest.fail(f"{case} is invalid for Kubernetes {version}: {error.message}")


def test_the_translation_table() -> None:
    single = manifest("single")
    pod = single["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert container["command"] == [
        "python",
        "-m",
        "jobkit.worker",
        "--store",
        STORE,
        "jk-1m7zabcdefghij",
    ]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    assert pod["activeDeadlineSeconds"] == 4 * 3600  # per pod: per item of a map
    assert container["envFrom"] == [{"secretRef": {"name": "jobkit-store"}}]
    assert "JOBKIT_KEY" not in str(single)  # the key travels in the Secret only
    assert single["spec"]["backoffLimit"] == 0
    assert single["metadata"]["labels"]["jobkit.dev/job-id"] == "jk-1m7zabcdefghij"
    assert single["metadata"]["labels"]["jobkit.dev/name"] == "train-lr-0.1"

    indexed = manifest("indexed")["spec"]
    assert (indexed["completions"], indexed["parallelism"]) == (100, 100)
    assert indexed["completionMode"] == "Indexed" and indexed["backoffLimitPerIndex"] == 2
    command = indexed["template"]["spec"]["containers"][0]["command"]
    assert command[-4:] == ["--array", "jk-1m7zabcdefghij", "--offset", "0"]

    gpu = manifest("gpu")
    gpu_pod = gpu["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu_pod["priorityClassName"] == "jobkit-high"
    assert gpu["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert gpu["spec"]["suspend"] is True

    shared = manifest("fractional")["spec"]["template"]["spec"]["containers"][0]
    assert shared["resources"]["limits"]["nvidia.com/mig-3g.40gb"] == "1"

    extras = manifest("extras")["spec"]["template"]["spec"]
    assert extras["hostIPC"] is True and extras["nodeSelector"]["cloud.google.com/gke-spot"]


def test_parallelism_caps_a_map() -> None:
    spec = build_job(
        job_id="jk-x",
        name="m",
        resources=Resources(kubernetes={"parallelism": 8}),
        settings=SETTINGS,
        store_url=STORE,
        count=1000,
    )["spec"]
    assert (spec["completions"], spec["parallelism"]) == (1000, 8)
    old = build_job(
        job_id="jk-x",
        name="m",
        resources=Resources(retries=1),
        settings=SETTINGS,
        store_url=STORE,
        count=10,
        per_index_retries=False,
    )["spec"]
    assert "backoffLimitPerIndex" not in old and old["backoffLimit"] == 10


@pytest.mark.parametrize(
    ("resources", "settings", "message"),
    [
        ({"gpus": 0.5}, {"image": "i"}, "part of a GPU, and this cluster's way to share one"),
        ({"gpus": 1.5}, {"image": "i"}, "expected a whole number of GPUs"),
        ({"gpus": 0.9}, {"image": "i", "gpu_sharing": SETTINGS.gpu_sharing}, "largest MIG"),
        ({}, {}, "no container image for the kubernetes backend"),
        ({"kubernetes": {"nodeSelector": {}}}, {"image": "i"}, "unknown kubernetes option"),
        ({"kubernetes": {"tolerations": {"a": 1}}}, {"image": "i"}, "tolerations={'a': 1}"),
        ({"kubernetes": {"parallelism": 0}}, {"image": "i"}, "parallelism=0 must be >= 1"),
        ({"kubernetes": {"labels": {"t": "a b"}}}, {"image": "i"}, "not a valid Kubernetes label"),
        ({"cpus": 0.0001}, {"image": "i"}, "smallest unit"),
    ],
)
def test_bad_requests_are_refused_in_one_line(
    resources: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_job(
            job_id="jk-x",
            name="n",
            resources=Resources(**resources),
            settings=KubernetesSettings.from_config(settings),
            store_url=STORE,
        )
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"namespace": "ML_Jobs"}, "invalid [kubernetes] namespace 'ML_Jobs'"),
        ({"imagepullsecrets": []}, "unknown [kubernetes] setting 'imagepullsecrets'"),
        ({"per_index_retries": "maybe"}, "expected auto, on or off"),
        ({"pending_grace": "soon"}, "soon"),
        ({"gpu_sharing": {"mode": "mps"}}, "gpu_sharing mode 'mps'"),
        ({"gpu_sharing": {"mode": "mig", "profiles": {"2": "x"}}}, "is not a fraction"),
        ({"image_pull_secrets": "regcred"}, "expected a list"),
        ({"array_parallelism": 0}, "array_parallelism=0"),
    ],
)
def test_bad_settings_say_which_and_why(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        KubernetesSettings.from_config(table)
    assert message in str(info.value)


def test_quantities_and_helpers() -> None:
    assert [cpu_quantity(c) for c in (1, 0.5, 2.25, 16)] == ["1", "500m", "2250m", "16"]
    assert memory_quantity(16 << 30) == "16Gi" and memory_quantity(1536 << 20) == "1536Mi"
    assert memory_quantity(1000) == "1000"
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
