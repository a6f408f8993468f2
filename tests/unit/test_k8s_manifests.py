"""The manifests in backends/kubernetes/ are valid Kubernetes objects and grant no more than needed.

Each document is validated in strict mode (unknown fields are errors) against
the official schemas of every Kubernetes version kubernetes-validate ships
(1.25 to 1.37).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is in the dev extra: pip install -e '.[dev]'"
)
yaml = pytest.importorskip("yaml")

MANIFESTS = Path(__file__).resolve().parents[2] / "backends" / "kubernetes"
NAMESPACE = "jobkit"


def _versions() -> list[str]:
    from kubernetes_validate.utils import all_versions

    return sorted(
        {".".join(v.split(".")[:2]) for v in all_versions()}, key=lambda v: int(v.split(".")[1])
    )


def _documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents


DOCUMENTS = _documents()
BY_KIND: dict[str, list[dict[str, Any]]] = {}
for _, _document in DOCUMENTS:
    BY_KIND.setdefault(_document["kind"], []).append(_document)


def test_the_manifests_are_the_expected_set() -> None:
    names = {path.name for path in MANIFESTS.glob("*.yaml")}
    assert names == {
        "namespace.yaml",
        "serviceaccount.yaml",
        "role.yaml",
        "rolebinding.yaml",
        "priority-classes.yaml",
    }
    assert sorted(BY_KIND) == [
        "Namespace",
        "PriorityClass",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    assert len(_versions()) >= 13  # 1.25 .. 1.37


@pytest.mark.parametrize("version", _versions())
def test_every_document_is_valid_in_strict_mode(version: str) -> None:
    for filename, document in DOCUMENTS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = f"{filename} ({document['kind']})"
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {error.message}")


def test_strict_mode_catches_a_typo() -> None:
    role = dict(BY_KIND["Role"][0])
    role["rule"] = role.pop("rules")
    with pytest.raises(kubernetes_validate.ValidationError, match="'rule' was unexpected"):
        kubernetes_validate.validate(role, "1.33", strict=True)


def test_everything_lives_in_the_jobkit_namespace() -> None:
    (namespace,) = BY_KIND["Namespace"]
    assert namespace["metadata"]["name"] == NAMESPACE
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        for document in BY_KIND[kind]:
            assert document["metadata"]["namespace"] == NAMESPACE, document["metadata"]["name"]


def test_the_role_grants_exactly_what_a_client_needs() -> None:
    (role,) = BY_KIND["Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    verbs = ("create", "get", "list", "watch", "delete", "patch")  # patch: release a held Job
    expected = {("batch", "jobs", verb) for verb in verbs}
    expected |= {("", "pods", verb) for verb in ("get", "list", "watch", "delete")}
    expected |= {("", "pods/log", "get")}
    assert granted == expected
    assert not any("*" in str(rule) for rule in role["rules"])
    assert all("resourceNames" not in rule for rule in role["rules"])


def test_the_binding_ties_the_role_to_the_submitting_service_account() -> None:
    (binding,) = BY_KIND["RoleBinding"]
    (role,) = BY_KIND["Role"]
    accounts = {sa["metadata"]["name"]: sa for sa in BY_KIND["ServiceAccount"]}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jobkit", "namespace": NAMESPACE}
    ]
    assert set(accounts) == {"jobkit", "jobkit-worker"}
    # The pods' identity never talks to the API: no token is mounted into them.
    assert accounts["jobkit-worker"]["automountServiceAccountToken"] is False


def test_the_priority_classes_are_the_ones_jobkit_names_by_default() -> None:
    from jobkit.backends.kubernetes.settings import KubernetesSettings

    defaults = {v for v in KubernetesSettings().priority_classes.values() if v}
    assert {pc["metadata"]["name"] for pc in BY_KIND["PriorityClass"]} == defaults
