"""Which namespace jobs go to, as kubectl would choose it, through the emulated API.

config > the kubeconfig context's namespace > the in-cluster ServiceAccount
namespace file > ``default``.  Each source is proved by a Job the emulator
receives in that namespace and that completes, or by what ``jobkit plan`` and
``jobkit backends`` say in a fresh process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helpers
import pytest

import jobkit
from jobkit_testing.k8s_emulator.clients import kubernetes_client, put_store_secret

pytest_plugins = ["s3_fixtures", "jobkit_testing.k8s_emulator.fixtures"]

T = 60


def job_namespaces(emulator: Any, job_id: str) -> list[str]:
    return [
        j["metadata"]["namespace"]
        for j in emulator.objects("jobs")
        if j["metadata"]["labels"].get("jobkit.dev/job-id") == job_id
    ]


@pytest.fixture
def store(s3_bucket: str, s3_endpoint: str) -> str:
    return f"s3://{s3_bucket}/ns"


@pytest.fixture
def kubeconfig(k8s_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig whose current context names namespace ``team-a``, as KUBECONFIG."""
    path = k8s_emulator.kubeconfig(tmp_path / "kubeconfig", namespace="team-a")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_jobs_go_to_the_kubeconfig_contexts_namespace(
    k8s_emulator: Any, k8s_controller: Any, kubeconfig: Path, store: str, tmp_path: Path
) -> None:
    with kubernetes_client(store, namespace_file=str(tmp_path / "no-sa")) as client:
        put_store_secret(k8s_emulator, "team-a", client.key)
        job = jobkit.submit(helpers.square, 7)
        assert job.result(timeout=T) == 49
        assert job_namespaces(k8s_emulator, job.id) == ["team-a"]
        assert job.info.extra["namespace"] == "team-a"
        assert jobkit.get(job.id).logs() is not None  # pod logs are read from team-a too


def test_the_configured_namespace_overrides_the_context(
    k8s_emulator: Any, k8s_controller: Any, kubeconfig: Path, store: str
) -> None:
    with kubernetes_client(store, namespace="jobkit") as client:
        put_store_secret(k8s_emulator, "jobkit", client.key)
        job = jobkit.submit(helpers.square, 8)
        assert job.result(timeout=T) == 64
        assert job_namespaces(k8s_emulator, job.id) == ["jobkit"]


def test_the_service_account_namespace_when_no_context_names_one(
    k8s_emulator: Any, k8s_controller: Any, store: str, tmp_path: Path
) -> None:
    sa_file = tmp_path / "namespace"
    sa_file.write_text("team-b\n")
    with kubernetes_client(
        store, api_server=k8s_emulator.url, namespace_file=str(sa_file)
    ) as client:
        put_store_secret(k8s_emulator, "team-b", client.key)
        job = jobkit.submit(helpers.square, 9)
        assert job.result(timeout=T) == 81
        assert job_namespaces(k8s_emulator, job.id) == ["team-b"]


def test_default_when_nothing_names_a_namespace(
    k8s_emulator: Any, k8s_controller: Any, store: str, tmp_path: Path
) -> None:
    with kubernetes_client(
        store, api_server=k8s_emulator.url, namespace_file=str(tmp_path / "absent")
    ) as client:
        put_store_secret(k8s_emulator, "default", client.key)
        job = jobkit.submit(helpers.square, 10)
        assert job.result(timeout=T) == 100
        assert job_namespaces(k8s_emulator, job.id) == ["default"]


@pytest.mark.parametrize(
    ("toml", "kubeconfig_namespace", "sa_namespace", "namespace", "source"),
    [
        ('namespace = "ml"\n', "team-a", "team-b", "ml", "[kubernetes] namespace"),
        ("", "team-a", "team-b", "team-a", "kubeconfig context 'emulator'"),
        ("", None, "team-b", "team-b", "the in-cluster ServiceAccount"),
        ("", None, None, "default", "Kubernetes' default"),
    ],
)
def test_plan_and_backends_name_the_namespace_and_its_source(
    k8s_emulator: Any,
    tmp_path: Path,
    toml: str,
    kubeconfig_namespace: str | None,
    sa_namespace: str | None,
    namespace: str,
    source: str,
) -> None:
    (tmp_path / "trainmod.py").write_text(
        "import jobkit\n@jobkit.remote(image='reg/train:1')\ndef train():\n    return 1\n"
    )
    sa_file = tmp_path / "sa-namespace"
    if sa_namespace:
        sa_file.write_text(sa_namespace)
    (tmp_path / "jobkit.toml").write_text(
        f'store = "s3://bucket/jobs"\n[kubernetes]\nnamespace_file = "{sa_file}"\n{toml}'
    )
    kubeconfig = tmp_path / "kubeconfig"
    if kubeconfig_namespace:
        k8s_emulator.kubeconfig(kubeconfig, namespace=kubeconfig_namespace)
    else:  # a context naming no namespace: the chain goes on
        kubeconfig.write_text(
            json.dumps(
                {
                    "clusters": [{"name": "c", "cluster": {"server": k8s_emulator.url}}],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "emulator", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "emulator",
                }
            )
        )

    shown = helpers.jobkit_cli(
        tmp_path, "backends", "--json", without="KUBECONFIG", KUBECONFIG=str(kubeconfig)
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = [r for r in json.loads(shown.stdout) if r["name"] == "kubernetes"]
    assert f"namespace {namespace} (from {source}" in row["detail"], row

    plan = helpers.jobkit_cli(
        tmp_path,
        "plan",
        "trainmod:train",
        "--backend",
        "kubernetes",
        without="KUBECONFIG",
        KUBECONFIG=str(kubeconfig),
    )
    assert plan.returncode == 0, plan.stderr
    first, _, manifest = plan.stdout.partition("\n")
    assert first.startswith(f"# namespace {namespace}: from {source}"), first
    import yaml  # type: ignore[import-untyped]

    parsed = yaml.safe_load(manifest)
    assert parsed["metadata"]["namespace"] == namespace
    assert parsed["metadata"]["labels"]["jobkit.dev/name"] == "train"
