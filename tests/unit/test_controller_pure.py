"""The controller's pure functions: what the caches keep, what a resource depends on, what is news."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tokensync.controller import (
    KEPT_ANNOTATIONS,
    LEGACY_ANNOTATIONS,
    LEGACY_FINALIZER,
    compact_resource,
    compact_secret,
    dependencies,
    has_leftovers,
    news_key,
    renewal_order,
)
from tokensync.reconciler import REFRESH_ANNOTATION

MANAGED_FIELDS = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def resource(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tokensync.io/v1alpha1",
        "kind": "ClientCredential",
        "metadata": {
            "name": "cc",
            "namespace": "ns",
            "uid": "uid-1",
            "generation": 3,
            "resourceVersion": "77",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"team": "a"},
            "managedFields": MANAGED_FIELDS,
            **meta,
        },
        "spec": {"tokenURL": "https://tokens.example/oauth/token", "credentialsRef": {"name": "creds"}},
        "status": {"phase": "Ready"},
    }


# compact_resource ------------------------------------------------------------------------------


def test_compact_resource_keeps_only_what_a_round_reads() -> None:
    obj = resource(annotations={LAST_APPLIED: "{...huge...}", "other.tool/x": "y"})
    original = copy.deepcopy(obj)
    compact = compact_resource(obj)
    assert compact == {
        "metadata": {"name": "cc", "namespace": "ns", "uid": "uid-1", "generation": 3, "resourceVersion": "77"},
        "spec": original["spec"],
        "status": original["status"],
    }
    assert obj == original  # the input is not modified


def test_compact_resource_without_the_status() -> None:
    compact = compact_resource(resource(), keep_status=False)
    assert "status" not in compact
    assert compact["spec"] == resource()["spec"]
    assert compact["metadata"] == compact_resource(resource())["metadata"]


def test_compact_resource_keeps_the_refresh_and_legacy_annotations() -> None:
    annotations = {
        REFRESH_ANNOTATION: "2025-01-01T00:00:00Z",
        LAST_APPLIED: "{...}",
        **{key: "x" for key in LEGACY_ANNOTATIONS},
    }
    compact = compact_resource(resource(annotations=annotations))
    assert compact["metadata"]["annotations"] == {
        REFRESH_ANNOTATION: "2025-01-01T00:00:00Z",
        **{key: "x" for key in LEGACY_ANNOTATIONS},
    }
    assert set(KEPT_ANNOTATIONS) == {REFRESH_ANNOTATION, *LEGACY_ANNOTATIONS}


def test_compact_resource_keeps_the_legacy_finalizer_with_the_others() -> None:
    finalizers = ["example.com/other", LEGACY_FINALIZER]
    compact = compact_resource(resource(finalizers=finalizers))
    assert compact["metadata"]["finalizers"] == finalizers  # all: the patch that removes ours keeps the others


def test_compact_resource_drops_finalizers_that_are_not_ours() -> None:
    compact = compact_resource(resource(finalizers=["example.com/other"]))
    assert "finalizers" not in compact["metadata"]


def test_compact_resource_keeps_the_deletion_timestamp() -> None:
    compact = compact_resource(resource(deletionTimestamp="2025-01-02T00:00:00Z"))
    assert compact["metadata"]["deletionTimestamp"] == "2025-01-02T00:00:00Z"


def test_compact_resource_of_a_bare_object() -> None:
    assert compact_resource({"metadata": {"name": "cc", "namespace": "ns"}}) == {
        "metadata": {"name": "cc", "namespace": "ns", "uid": None, "generation": None, "resourceVersion": None},
        "spec": {},
        "status": {},
    }
    assert compact_resource({})["spec"] == {}


# compact_secret --------------------------------------------------------------------------------


def test_compact_secret_keeps_ownership_and_data() -> None:
    owner = [{"apiVersion": "tokensync.io/v1alpha1", "kind": "ClientCredential", "name": "cc", "uid": "u"}]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "uid-s",
            "resourceVersion": "5",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "tokensync"},
            "annotations": {"a": "b"},
            "ownerReferences": owner,
            "managedFields": MANAGED_FIELDS,
        },
        "type": "Opaque",
        "data": {"access_token": "dG9rZW4="},
    }
    assert compact_secret(secret) == {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "resourceVersion": "5",
            "labels": {"app.kubernetes.io/managed-by": "tokensync"},
            "annotations": {"a": "b"},
            "ownerReferences": owner,
        },
        "type": "Opaque",
        "data": {"access_token": "dG9rZW4="},
    }


def test_compact_secret_without_data_or_optional_metadata() -> None:
    assert compact_secret({"metadata": {"name": "s", "namespace": "ns"}, "data": None}) == {
        "metadata": {"name": "s", "namespace": "ns"},
        "type": None,
        "data": {},
    }


# dependencies ----------------------------------------------------------------------------------


def with_spec(spec: dict[str, Any], name: str = "cc", namespace: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({}, {("target", "ns", "cc")}, id="target defaults to the resource's name"),
        pytest.param({"target": {}}, {("target", "ns", "cc")}, id="empty target"),
        pytest.param({"target": {"name": "out"}}, {("target", "ns", "out")}, id="named target"),
        pytest.param(
            {"credentialsRef": {"name": "creds"}},
            {("target", "ns", "cc"), ("Secret", "ns", "creds")},
            id="credentials",
        ),
        pytest.param(
            {"credentialsRef": {"name": "creds"}, "caBundleRef": {"name": "ca"}},
            {("target", "ns", "cc"), ("Secret", "ns", "creds"), ("ConfigMap", "ns", "ca")},
            id="CA bundle defaults to a ConfigMap",
        ),
        pytest.param(
            {"caBundleRef": {"name": "ca", "kind": "Secret"}},
            {("target", "ns", "cc"), ("Secret", "ns", "ca")},
            id="CA bundle in a Secret",
        ),
        pytest.param(
            {"caBundleRef": {"name": "ca", "kind": "ConfigMap", "key": "ca.crt"}},
            {("target", "ns", "cc"), ("ConfigMap", "ns", "ca")},
            id="CA bundle in an explicit ConfigMap",
        ),
        pytest.param(
            {"credentialsRef": {"name": "shared"}, "caBundleRef": {"name": "shared", "kind": "Secret"}},
            {("target", "ns", "cc"), ("Secret", "ns", "shared")},
            id="one Secret for both",
        ),
        pytest.param({"caBundleRef": {}}, {("target", "ns", "cc")}, id="CA bundle without a name"),
        pytest.param({"credentialsRef": {}}, {("target", "ns", "cc")}, id="credentials without a name"),
    ],
)
def test_dependencies(spec: dict[str, Any], expected: set[tuple[str, str, str]]) -> None:
    assert dependencies(with_spec(spec)) == frozenset(expected)


def test_dependencies_are_in_the_resource_namespace() -> None:
    found = dependencies(with_spec({"credentialsRef": {"name": "c"}}, namespace="team-b"))
    assert {namespace for _, namespace, _ in found} == {"team-b"}


def test_dependencies_of_a_compacted_resource_match_the_raw_one() -> None:
    raw = resource()
    raw["spec"]["caBundleRef"] = {"name": "ca"}
    assert dependencies(compact_resource(raw)) == dependencies(raw)


def test_dependencies_without_spec() -> None:
    assert dependencies({"metadata": {"name": "cc", "namespace": "ns"}}) == {("target", "ns", "cc")}


# news_key --------------------------------------------------------------------------------------


def test_news_key_is_generation_and_refresh_request() -> None:
    assert news_key(resource()) == (3, None)
    assert news_key(resource(annotations={REFRESH_ANNOTATION: "t1", LAST_APPLIED: "x"})) == (3, "t1")
    assert news_key({}) == (None, None)


def test_news_key_ignores_status_and_other_metadata() -> None:
    before = compact_resource(resource())
    after = compact_resource(resource(resourceVersion="78", labels={"team": "b"}, annotations={"x": "y"}))
    after["status"] = {"phase": "Failed"}
    assert news_key(before) == news_key(after)
    assert news_key(compact_resource(resource(generation=4))) != news_key(before)


# has_leftovers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param({}, False, id="nothing"),
        pytest.param({"annotations": {REFRESH_ANNOTATION: "t"}}, False, id="a refresh request only"),
        pytest.param({"annotations": {LAST_APPLIED: "x"}}, False, id="another tool's annotation"),
        pytest.param({"finalizers": [LEGACY_FINALIZER]}, True, id="the legacy finalizer"),
        pytest.param({"annotations": {LEGACY_ANNOTATIONS[0]: "x"}}, True, id="a legacy annotation"),
        pytest.param({"annotations": {LEGACY_ANNOTATIONS[1]: "x"}}, True, id="the other legacy annotation"),
    ],
)
def test_has_leftovers(meta: dict[str, Any], expected: bool) -> None:
    assert has_leftovers({"metadata": meta}) is expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param({"finalizers": ["example.com/other"]}, False, id="another finalizer only"),
        pytest.param({"finalizers": ["example.com/other", LEGACY_FINALIZER]}, True, id="ours among others"),
        pytest.param({"annotations": {LEGACY_ANNOTATIONS[0]: "x", LAST_APPLIED: "y"}}, True, id="legacy + other"),
        pytest.param({"annotations": {LAST_APPLIED: "y"}}, False, id="other annotations only"),
    ],
)
def test_has_leftovers_of_compacted_resources(meta: dict[str, Any], expected: bool) -> None:
    assert has_leftovers(compact_resource(resource(**meta))) is expected


def test_a_restart_serves_the_soonest_renewal_first() -> None:
    resources = {
        "later": {"status": {"renewalTime": "2030-01-01T13:00:00Z"}},
        "new": {"metadata": {"name": "new"}},
        "sooner": {"status": {"renewalTime": "2030-01-01T12:00:05Z"}},
        "broken": {"status": {"renewalTime": 42}},
    }
    assert sorted(resources, key=lambda name: renewal_order(resources[name])) == ["new", "broken", "sooner", "later"]
