"""Unit tests of support.rbac_allows: hand-written RBAC objects, each case as Kubernetes decides it."""

from __future__ import annotations

from typing import Any

import pytest

from .support import rbac_allows

SA, SA_NS = "op", "ops"
API = "rbac.authorization.k8s.io/v1"


def rule(groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names is not None:
        out["resourceNames"] = names
    return out


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def role(namespace: str, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": list(rules),
    }


def sa_subject(name: str = SA, namespace: str | None = SA_NS) -> dict[str, Any]:
    subject = {"kind": "ServiceAccount", "name": name}
    if namespace is not None:
        subject["namespace"] = namespace
    return subject


def cluster_binding(role_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{role_name}-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": list(subjects or [sa_subject()]),
    }


def binding(namespace: str, kind: str, role_name: str, *subjects: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "RoleBinding",
        "metadata": {"name": f"{role_name}-binding", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
        "subjects": list(subjects or [sa_subject()]),
    }


def allows(docs: list[dict[str, Any]], verb: str, group: str, resource: str, namespace: str, **kw: Any) -> bool:
    return rbac_allows(docs, SA, SA_NS, verb, group, resource, namespace, **kw)


SECRETS_READ = rule([""], ["secrets"], ["get", "list", "watch"])


def test_cluster_role_binding_applies_in_every_namespace_and_at_cluster_scope() -> None:
    docs = [cluster_role("r", SECRETS_READ), cluster_binding("r")]
    for namespace in ("a", "b", SA_NS, ""):
        assert allows(docs, "list", "", "secrets", namespace)
    assert not allows(docs, "create", "", "secrets", "a")
    assert not allows(docs, "list", "", "configmaps", "a")
    assert not allows(docs, "list", "apps", "secrets", "a"), "the API group must match too"


def test_role_binding_applies_only_in_its_namespace() -> None:
    docs = [role("a", "r", SECRETS_READ), binding("a", "Role", "r")]
    assert allows(docs, "get", "", "secrets", "a")
    assert not allows(docs, "get", "", "secrets", "b")
    assert not allows(docs, "list", "", "secrets", ""), "a cluster-wide list needs a ClusterRoleBinding"


def test_role_binding_to_a_cluster_role_is_limited_to_the_binding_namespace() -> None:
    docs = [cluster_role("r", SECRETS_READ), binding("a", "ClusterRole", "r")]
    assert allows(docs, "watch", "", "secrets", "a")
    assert not allows(docs, "watch", "", "secrets", "b")
    assert not allows(docs, "watch", "", "secrets", "")


def test_a_role_binding_only_sees_the_role_in_its_own_namespace() -> None:
    docs = [role("b", "r", SECRETS_READ), binding("a", "Role", "r")]
    assert not allows(docs, "get", "", "secrets", "a")
    assert not allows(docs, "get", "", "secrets", "b")


def test_a_role_without_a_binding_or_a_binding_without_its_role_grants_nothing() -> None:
    assert not allows([cluster_role("r", SECRETS_READ), role("a", "r", SECRETS_READ)], "get", "", "secrets", "a")
    assert not allows([cluster_binding("r"), binding("a", "Role", "r")], "get", "", "secrets", "a")


def test_a_cluster_role_binding_cannot_refer_to_a_role() -> None:
    crb = cluster_binding("r")
    crb["roleRef"]["kind"] = "Role"
    assert not allows([role("a", "r", SECRETS_READ), crb], "get", "", "secrets", "a")


def test_subjects_must_be_this_service_account() -> None:
    other = [cluster_role("r", SECRETS_READ), cluster_binding("r", sa_subject(name="other"))]
    assert not allows(other, "get", "", "secrets", "a")
    elsewhere = [cluster_role("r", SECRETS_READ), cluster_binding("r", sa_subject(namespace="default"))]
    assert not allows(elsewhere, "get", "", "secrets", "a")


def test_a_service_account_subject_without_namespace_means_the_binding_namespace() -> None:
    docs = [role(SA_NS, "r", SECRETS_READ), binding(SA_NS, "Role", "r", sa_subject(namespace=None))]
    assert allows(docs, "get", "", "secrets", SA_NS)
    docs = [role("a", "r", SECRETS_READ), binding("a", "Role", "r", sa_subject(namespace=None))]
    assert not allows(docs, "get", "", "secrets", "a"), "that is the ServiceAccount op in namespace a"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ({"kind": "User", "name": f"system:serviceaccount:{SA_NS}:{SA}"}, True),
        ({"kind": "User", "name": SA}, False),
        ({"kind": "Group", "name": "system:serviceaccounts"}, True),
        ({"kind": "Group", "name": f"system:serviceaccounts:{SA_NS}"}, True),
        ({"kind": "Group", "name": "system:serviceaccounts:default"}, False),
        ({"kind": "Group", "name": "system:authenticated"}, True),
        ({"kind": "Group", "name": "system:masters"}, False),
    ],
)
def test_user_and_group_subjects_that_name_a_service_account(subject: dict[str, Any], expected: bool) -> None:
    subject = {**subject, "apiGroup": "rbac.authorization.k8s.io"}
    docs = [cluster_role("r", SECRETS_READ), cluster_binding("r", subject)]
    assert allows(docs, "get", "", "secrets", "a") is expected


def test_subresources_are_separate_resources() -> None:
    docs = [cluster_role("r", rule(["tokensync.io"], ["clientcredentials"], ["patch"])), cluster_binding("r")]
    assert allows(docs, "patch", "tokensync.io", "clientcredentials", "a")
    assert not allows(docs, "patch", "tokensync.io", "clientcredentials/status", "a")
    docs = [cluster_role("r", rule(["tokensync.io"], ["clientcredentials/status"], ["patch"])), cluster_binding("r")]
    assert allows(docs, "patch", "tokensync.io", "clientcredentials/status", "a")
    assert not allows(docs, "patch", "tokensync.io", "clientcredentials", "a")


@pytest.mark.parametrize(
    ("the_rule", "request_", "expected"),
    [
        (rule(["*"], ["secrets"], ["get"]), ("get", "", "secrets"), True),
        (rule(["*"], ["secrets"], ["get"]), ("get", "apps", "secrets"), True),
        (rule([""], ["*"], ["get"]), ("get", "", "configmaps"), True),
        (rule([""], ["*"], ["get"]), ("get", "", "pods/log"), True),
        (rule([""], ["secrets"], ["*"]), ("deletecollection", "", "secrets"), True),
        (rule([""], ["secrets"], ["*"]), ("get", "", "configmaps"), False),
        (rule(["x"], ["*/status"], ["patch"]), ("patch", "x", "things/status"), True),
        (rule(["x"], ["*/status"], ["patch"]), ("patch", "x", "things"), False),
        (rule(["x"], ["*/status"], ["patch"]), ("patch", "x", "things/scale"), False),
        (rule(["x"], ["things/*"], ["patch"]), ("patch", "x", "things/status"), False),
    ],
    ids=str,
)
def test_wildcards(the_rule: dict[str, Any], request_: tuple[str, str, str], expected: bool) -> None:
    docs = [cluster_role("r", the_rule), cluster_binding("r")]
    assert allows(docs, *request_, "a") is expected


def test_resource_names_limit_a_rule_to_named_objects() -> None:
    docs = [
        role(SA_NS, "r", rule(["coordination.k8s.io"], ["leases"], ["get", "update"], names=["lock"])),
        binding(SA_NS, "Role", "r"),
    ]
    assert allows(docs, "get", "coordination.k8s.io", "leases", SA_NS, name="lock")
    assert not allows(docs, "get", "coordination.k8s.io", "leases", SA_NS, name="other")
    assert not allows(docs, "get", "coordination.k8s.io", "leases", SA_NS), "a request without a name"


def test_permissions_add_up_over_several_bindings() -> None:
    docs = [
        cluster_role("read", SECRETS_READ),
        cluster_binding("read"),
        role("a", "write", rule([""], ["secrets"], ["create"])),
        binding("a", "Role", "write"),
    ]
    assert allows(docs, "create", "", "secrets", "a")
    assert not allows(docs, "create", "", "secrets", "b")
    assert allows(docs, "get", "", "secrets", "b")


def test_non_resource_rules_and_other_objects_are_ignored() -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA, "namespace": SA_NS}},
        {
            "apiVersion": API,
            "kind": "ClusterRole",
            "metadata": {"name": "r"},
            "rules": [{"nonResourceURLs": ["*"], "verbs": ["*"]}],
        },
        cluster_binding("r"),
    ]
    assert not allows(docs, "get", "", "secrets", "a")


def test_what_it_cannot_evaluate_is_an_error_not_a_guess() -> None:
    aggregated = cluster_role("r")
    aggregated["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}
    with pytest.raises(NotImplementedError):
        allows([aggregated, cluster_binding("r")], "get", "", "secrets", "a")
    unplaced = role("a", "r", SECRETS_READ)
    del unplaced["metadata"]["namespace"]
    with pytest.raises(ValueError, match="no namespace"):
        allows([unplaced], "get", "", "secrets", "a")
