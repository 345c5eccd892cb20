"""The fake cluster behaves like a real API server where plain kmock 0.8 does not.

Everything here talks to it over HTTP, with the real ``kubernetes`` client or with httpx.
The behaviours the operator's httpx shell relies on are tested once, in
``tests/e2e/test_api_fidelity.py``, against a real cluster; they are imported here and run
against the stand-in too, with this module's ``kube`` and ``namespace`` fixtures.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from kubernetes.client import ApiException
from kubernetes.watch.watch import iter_resp_lines

# The tests written for a real cluster run here against the stand-in too (pytest collects imported tests).
from tests.e2e.test_api_fidelity import (
    PARTIAL_LIST,
    PARTIAL_ONE,
    assert_partial,
    failed,
    names,
    ok,
    test_lease_updates_conflict_on_a_stale_resource_version,  # noqa: F401
    test_list_pages_and_bad_continue_tokens,  # noqa: F401
    test_managed_fields_record_each_writer,  # noqa: F401
    test_metadata_only_get_and_views_that_do_not_fit,  # noqa: F401
    test_metadata_only_list_with_selector_and_pages,  # noqa: F401
    test_metadata_only_watch_with_selector_and_bookmarks,  # noqa: F401
)
from tests.e2e.test_api_fidelity import watch as http_watch

from tokensync.dev.cluster import FakeCluster, ResourceDecl

GROUP, VERSION, PLURAL = "tokensync.io", "v1alpha1", "clientcredentials"
GV = f"{GROUP}/{VERSION}"
_counter = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(bookmark_interval=0.3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: FakeCluster) -> Iterator[kubernetes.client.ApiClient]:
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)) as api:
        yield api


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def ns() -> str:
    # A fresh namespace per test keeps the tests independent within one module-wide cluster.
    return f"ns-{next(_counter)}"


@pytest.fixture
def kube(cluster: FakeCluster) -> Iterator[httpx.Client]:
    headers = {"User-Agent": "fidelity-tests/1.0"}
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def namespace(kube: httpx.Client, ns: str) -> str:
    """A namespace that exists as an object (the other tests' ``ns`` need not)."""
    ok(kube.post("/api/v1/namespaces", json={"metadata": {"name": ns}}), 201)
    return ns


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["code"] == exc.status
    return body


def make_cc(custom: kubernetes.client.CustomObjectsApi, ns: str, name: str, **extra: Any) -> dict[str, Any]:
    body = {"apiVersion": GV, "kind": "ClientCredential", "metadata": {"name": name}, "spec": {"a": 1}, **extra}
    result: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    return result


def patch_cc(
    custom: kubernetes.client.CustomObjectsApi,
    ns: str,
    name: str,
    body: Any,
    content_type: str = "application/merge-patch+json",
    status: bool = False,
) -> dict[str, Any]:
    fn = custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
    result: dict[str, Any] = fn(GROUP, VERSION, ns, PLURAL, name, body, _content_type=content_type)
    return result


def watch(call: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """All events of one watch request (until the server closes the stream)."""
    kwargs.setdefault("timeout_seconds", 1)
    resp = call(*args, watch=True, _preload_content=False, **kwargs)
    try:
        return [json.loads(line) for line in iter_resp_lines(resp) if line]
    finally:
        resp.release_conn()


def brief(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events if e["type"] != "BOOKMARK"]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------


def test_metadata_is_assigned(core: kubernetes.client.CoreV1Api, custom: Any, ns: str) -> None:
    secret = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    cc = make_cc(custom, ns, "cc")
    meta = cc["metadata"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > int(secret.metadata.resource_version)
    assert meta["generation"] == 1
    assert secret.metadata.uid != meta["uid"]
    assert secret.metadata.generation is None  # Secrets have no generation in a real cluster
    assert secret.data == {"k": "dg=="}  # stringData is folded into base64 data
    assert (cc["apiVersion"], cc["kind"]) == (GV, "ClientCredential")


def test_generation_bumps_only_on_spec_changes(custom: Any, ns: str) -> None:
    cc = make_cc(custom, ns, "cc")
    rv0 = int(cc["metadata"]["resourceVersion"])

    cc = patch_cc(custom, ns, "cc", {"metadata": {"labels": {"x": "y"}}})
    assert cc["metadata"]["generation"] == 1
    rv1 = int(cc["metadata"]["resourceVersion"])
    assert rv1 > rv0

    cc = patch_cc(custom, ns, "cc", {"status": {"phase": "Ready"}}, status=True)
    assert cc["metadata"]["generation"] == 1
    assert cc["status"] == {"phase": "Ready"}
    rv2 = int(cc["metadata"]["resourceVersion"])
    assert rv2 > rv1

    cc = patch_cc(custom, ns, "cc", {"spec": {"a": 2}})
    assert cc["metadata"]["generation"] == 2
    assert int(cc["metadata"]["resourceVersion"]) > rv2


def test_noop_patch_keeps_resource_version(custom: Any, ns: str) -> None:
    cc = make_cc(custom, ns, "cc")
    again = patch_cc(custom, ns, "cc", {"spec": {"a": 1}})
    assert again["metadata"]["resourceVersion"] == cc["metadata"]["resourceVersion"]


def test_stale_resource_version_conflicts_on_patch_and_put(custom: Any, ns: str) -> None:
    cc = make_cc(custom, ns, "cc")
    stale = cc["metadata"]["resourceVersion"]
    patch_cc(custom, ns, "cc", {"spec": {"a": 2}})

    with pytest.raises(ApiException) as exc:
        patch_cc(custom, ns, "cc", {"metadata": {"resourceVersion": stale}, "spec": {"a": 3}})
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "Conflict"

    cc["spec"] = {"a": 4}
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc", cc)
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "Conflict"

    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "cc", cc)
    assert exc.value.status == 409

    current = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc")
    assert current["spec"] == {"a": 2}
    current["spec"] = {"a": 5}
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc", current)
    assert replaced["spec"] == {"a": 5}


def test_json_patch(custom: Any, ns: str) -> None:
    cc = make_cc(custom, ns, "cc")
    rv = cc["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f/one"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "f/two"},
        {"op": "replace", "path": "/spec/a", "value": 2},
        {"op": "copy", "from": "/spec/a", "path": "/spec/b"},
        {"op": "move", "from": "/spec/b", "path": "/spec/c"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    cc = patch_cc(custom, ns, "cc", ops, "application/json-patch+json")
    assert cc["metadata"]["finalizers"] == ["f/two"]
    assert cc["spec"] == {"a": 2, "c": 2}

    # A failed test op (a stale resourceVersion, as kopf sends with finalizers) is 422, not 500.
    with pytest.raises(ApiException) as exc:
        patch_cc(
            custom, ns, "cc", [ops[0], {"op": "remove", "path": "/metadata/finalizers"}], "application/json-patch+json"
        )
    assert exc.value.status == 422
    assert status_of(exc.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as exc:
        patch_cc(custom, ns, "cc", [{"op": "remove", "path": "/spec/missing"}], "application/json-patch+json")
    assert exc.value.status == 422
    current = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc")
    assert current["metadata"]["finalizers"] == ["f/two"]


def test_merge_and_strategic_merge_patch(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})
    cm = core.patch_namespaced_config_map("cm", ns, {"data": {"a": None, "c": "3"}})  # strategic-merge
    assert cm.data == {"b": "2", "c": "3"}
    cm = core.patch_namespaced_config_map("cm", ns, {"data": {"b": None}}, _content_type="application/merge-patch+json")
    assert cm.data == {"c": "3"}
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map("cm", ns, {"data": {}}, _content_type="application/apply-patch+yaml")
    assert exc.value.status == 415


def test_status_subresource_is_separate(custom: Any, ns: str) -> None:
    cc = make_cc(custom, ns, "cc", status={"ignored": True})
    assert "status" not in cc  # the status is not writable on create either

    cc = patch_cc(custom, ns, "cc", {"status": {"phase": "A"}, "spec": {"a": 2}})
    assert "status" not in cc
    assert cc["spec"] == {"a": 2}

    cc = patch_cc(
        custom, ns, "cc", {"status": {"phase": "B"}, "spec": {"a": 3}, "metadata": {"labels": {"l": "v"}}}, status=True
    )
    assert cc["status"] == {"phase": "B"}
    assert cc["spec"] == {"a": 2}
    assert "labels" not in cc["metadata"]

    cc["status"] = {"phase": "C"}
    cc["spec"] = {"a": 9}
    cc = custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "cc", cc)
    assert cc["status"] == {"phase": "C"}
    assert cc["spec"] == {"a": 2}

    cc["status"] = {"phase": "D"}
    cc["spec"] = {"a": 10}
    cc = custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc", cc)
    assert cc["status"] == {"phase": "C"}
    assert cc["spec"] == {"a": 10}


def test_put_replaces_the_whole_object(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm", "labels": {"a": "b"}}, "data": {"x": "1"}})
    cm = core.replace_namespaced_config_map("cm", ns, {"metadata": {"name": "cm"}, "data": {"y": "2"}})
    assert cm.data == {"y": "2"}
    assert cm.metadata.labels is None
    assert cm.metadata.uid  # server-owned metadata survives a replace
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cm", ns, {"metadata": {"name": "other"}, "data": {}})
    assert exc.value.status == 400


def test_generate_name(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    names = {
        core.create_namespaced_event(
            ns, {"metadata": {"generateName": "kopf-event-"}, "involvedObject": {}}
        ).metadata.name
        for _ in range(5)
    }
    assert len(names) == 5
    assert all(re.fullmatch(r"kopf-event-[a-z0-9]{5}", name) for name in names)


def test_missing_and_existing_objects_answer_with_status(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    for call in (
        lambda: core.read_namespaced_secret("nope", ns),
        lambda: core.patch_namespaced_secret("nope", ns, {"data": {}}),
        lambda: core.delete_namespaced_secret("nope", ns),
        lambda: core.replace_namespaced_secret("nope", ns, {"metadata": {"name": "nope"}}),
    ):
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == 404
        assert status_of(exc.value)["reason"] == "NotFound"
        assert status_of(exc.value)["details"]["name"] == "nope"

    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as exc:
        kubernetes.client.CustomObjectsApi(core.api_client).list_namespaced_custom_object(
            "x.io", "v1", ns, "undeclared"
        )
    assert exc.value.status == 404


def test_finalizers_block_deletion(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm", "finalizers": ["x/y"]}})
    rv = cm.metadata.resource_version
    core.delete_namespaced_config_map("cm", ns)
    cm = core.read_namespaced_config_map("cm", ns)
    assert cm.metadata.deletion_timestamp is not None
    core.delete_namespaced_config_map("cm", ns)  # a repeated delete changes nothing

    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map("cm", ns, {"metadata": {"finalizers": ["x/y", "x/z"]}})
    assert exc.value.status == 422

    core.patch_namespaced_config_map(
        "cm", ns, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("cm", ns)
    assert exc.value.status == 404

    events = watch(core.list_namespaced_config_map, ns, resource_version=rv)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]


def test_delete_preconditions(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_config_map("cm", ns, body={"preconditions": {"resourceVersion": "1"}})
    assert exc.value.status == 409
    core.delete_namespaced_config_map(
        "cm", ns, body={"preconditions": {"resourceVersion": cm.metadata.resource_version}}
    )


def test_owner_references_are_garbage_collected_recursively(
    cluster: FakeCluster, core: kubernetes.client.CoreV1Api, custom: Any, ns: str
) -> None:
    def owned_by(obj: Any, kind: str) -> list[dict[str, str]]:
        name, uid = (
            (obj["metadata"]["name"], obj["metadata"]["uid"])
            if isinstance(obj, dict)
            else (obj.metadata.name, obj.metadata.uid)
        )
        return [{"apiVersion": "v1", "kind": kind, "name": name, "uid": uid}]

    cc = make_cc(custom, ns, "cc")
    cm = core.create_namespaced_config_map(
        ns, {"metadata": {"name": "cm", "ownerReferences": owned_by(cc, "ClientCredential")}}
    )
    core.create_namespaced_secret(ns, {"metadata": {"name": "leaf", "ownerReferences": owned_by(cm, "ConfigMap")}})
    other = core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    two_owners = owned_by(cc, "ClientCredential") + owned_by(other, "ConfigMap")
    core.create_namespaced_secret(ns, {"metadata": {"name": "shared", "ownerReferences": two_owners}})
    core.create_namespaced_secret(ns, {"metadata": {"name": "unrelated"}})

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc")
    wait_for(lambda: cluster.get("v1", "secrets", ns, "leaf") is None)
    assert cluster.get("v1", "configmaps", ns, "cm") is None
    assert cluster.get("v1", "secrets", ns, "shared") is not None  # another owner still exists
    assert cluster.get("v1", "secrets", ns, "unrelated") is not None

    core.delete_namespaced_config_map("other", ns)
    wait_for(lambda: cluster.get("v1", "secrets", ns, "shared") is None)


def test_orphan_propagation_keeps_dependents(cluster: FakeCluster, core: kubernetes.client.CoreV1Api, ns: str) -> None:
    owner = core.create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_secret(ns, {"metadata": {"name": "dep", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", ns, propagation_policy="Orphan")
    wait_for(lambda: "ownerReferences" not in (cluster.get("v1", "secrets", ns, "dep") or {}).get("metadata", {}))
    assert cluster.get("v1", "secrets", ns, "dep") is not None


def test_selectors_in_list(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y", "tier": "2"}), ("c", {"app": "z"})]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})
    core.create_namespaced_config_map(f"{ns}-other", {"metadata": {"name": "a", "labels": {"app": "x"}}})

    def names(**kwargs: Any) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(ns, **kwargs).items]

    assert names() == ["a", "b", "c"]
    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app==x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app in (x, y)") == ["a", "b"]
    assert names(label_selector="app notin (x,y)") == ["c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier>1") == ["b"]
    assert names(label_selector="app in (x,y),tier!=2") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    assert names(field_selector=f"metadata.namespace={ns}") == ["a", "b", "c"]
    everywhere = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a").items
    assert {cm.metadata.name for cm in everywhere} == {"a"}
    assert {ns, f"{ns}-other"} <= {cm.metadata.namespace for cm in everywhere}  # other tests have an "a" too
    with pytest.raises(ApiException) as exc:
        names(label_selector="app in x")
    assert exc.value.status == 400


def test_list_pagination(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm{i}"}})
    page1 = core.list_namespaced_config_map(ns, limit=2)
    page2 = core.list_namespaced_config_map(ns, limit=2, _continue=page1.metadata._continue)
    page3 = core.list_namespaced_config_map(ns, limit=2, _continue=page2.metadata._continue)
    listed = [cm.metadata.name for page in (page1, page2, page3) for cm in page.items]
    assert listed == [f"cm{i}" for i in range(5)]
    assert not page3.metadata._continue
    assert page1.metadata.resource_version == page3.metadata.resource_version
    assert (page1.metadata.remaining_item_count, page2.metadata.remaining_item_count) == (3, 1)
    # With selectors, etcd cannot count what remains, and neither does the stand-in.
    selected = core.list_namespaced_config_map(ns, limit=2, field_selector="metadata.name!=cm0")
    assert selected.metadata._continue
    assert selected.metadata.remaining_item_count is None


def test_list_resource_version_is_current(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    listed = core.list_namespaced_config_map(ns)
    assert int(listed.metadata.resource_version) >= int(cm.metadata.resource_version)
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})  # the counter is global
    assert int(core.list_namespaced_config_map(ns).metadata.resource_version) > int(listed.metadata.resource_version)


def test_watch_resumes_from_resource_version_without_replay(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "old1"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "old2"}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "new"}})
    core.patch_namespaced_config_map("old1", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("old2", ns)

    events = watch(core.list_namespaced_config_map, ns, resource_version=rv)
    assert brief(events) == [("ADDED", "new"), ("MODIFIED", "old1"), ("DELETED", "old2")]

    # Resuming from the last seen event yields nothing more: no replay of ADDED on reconnects.
    last = events[-1]["object"]["metadata"]["resourceVersion"]
    assert brief(watch(core.list_namespaced_config_map, ns, resource_version=last)) == []

    # Without a resourceVersion, the current state comes as synthetic ADDED events.
    assert brief(watch(core.list_namespaced_config_map, ns)) == [("ADDED", "new"), ("ADDED", "old1")]


def test_watch_honours_timeout_and_sends_bookmarks(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    started = time.monotonic()
    events = watch(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=True
    )
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 2  # every 0.3 s in this module's cluster, and one before closing
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)

    events = watch(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1)
    assert events == []  # no bookmarks unless allowed


def test_watch_send_initial_events(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    events = watch(
        core.list_namespaced_config_map,
        ns,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_with_selectors_sees_objects_entering_and_leaving(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a", "labels": {"app": "x"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "b", "labels": {"app": "y"}}})
    core.patch_namespaced_config_map("b", ns, {"metadata": {"labels": {"app": "x"}}})
    core.patch_namespaced_config_map("a", ns, {"metadata": {"labels": {"app": "z"}}})
    core.patch_namespaced_config_map("b", ns, {"data": {"k": "v"}})

    events = watch(core.list_namespaced_config_map, ns, resource_version=rv, label_selector="app=x")
    assert brief(events) == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a"), ("MODIFIED", "b")]
    events = watch(core.list_namespaced_config_map, ns, resource_version=rv, field_selector="metadata.name=b")
    assert brief(events) == [("ADDED", "b"), ("MODIFIED", "b"), ("MODIFIED", "b")]


def test_watch_streams_live_events(cluster: FakeCluster, api: kubernetes.client.ApiClient, ns: str) -> None:
    # The live part of the stream (not the replay): events arrive while the watch is open.
    core = kubernetes.client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    resp = core.list_namespaced_config_map(
        ns, watch=True, resource_version=rv, timeout_seconds=2, _preload_content=False
    )
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)) as other:
        kubernetes.client.CoreV1Api(other).create_namespaced_config_map(ns, {"metadata": {"name": "live"}})
    lines = iter_resp_lines(resp)
    assert brief([json.loads(next(lines))]) == [("ADDED", "live")]
    resp.close()


def test_watch_too_old_resource_version_is_gone() -> None:
    with (
        FakeCluster(event_log_size=5) as small,
        kubernetes.client.ApiClient(kubernetes.client.Configuration(host=small.url)) as api,
    ):
        core = kubernetes.client.CoreV1Api(api)
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(10):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"cm{i}"}})
        events = watch(core.list_namespaced_config_map, "default", resource_version=rv)
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"

        # A recent enough resourceVersion still works.
        recent = core.read_namespaced_config_map("cm6", "default").metadata.resource_version
        assert brief(watch(core.list_namespaced_config_map, "default", resource_version=recent)) == [
            ("ADDED", f"cm{i}") for i in range(7, 10)
        ]


def test_continue_token_older_than_the_event_log_is_gone() -> None:
    with (
        FakeCluster(event_log_size=5) as small,
        httpx.Client(base_url=small.url, trust_env=False) as kube,
    ):
        configmaps = "/api/v1/namespaces/default/configmaps"
        for i in range(3):
            ok(kube.post(configmaps, json={"metadata": {"name": f"cm{i}"}}), 201)
        token = ok(kube.get(configmaps, params={"limit": "1"}))["metadata"]["continue"]
        for i in range(3, 10):
            ok(kube.post(configmaps, json={"metadata": {"name": f"cm{i}"}}), 201)
        gone = failed(kube.get(configmaps, params={"limit": "1", "continue": token}), 410)
        assert gone["reason"] == "Expired"


def test_delete_collection(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a", "labels": {"x": "1"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "b", "labels": {"x": "1"}}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    core.delete_collection_namespaced_config_map(ns, label_selector="x=1")
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(ns).items] == ["c"]


def test_cluster_scoped_resources(core: kubernetes.client.CoreV1Api) -> None:
    name = f"ns-cluster-{next(_counter)}"
    created = core.create_namespace({"metadata": {"name": name}})
    assert created.metadata.namespace is None
    assert core.read_namespace(name).metadata.uid == created.metadata.uid
    status = core.patch_namespace_status(name, {"status": {"phase": "Active"}})
    assert status.status.phase == "Active"
    assert name in [n.metadata.name for n in core.list_namespace().items]  # kmock's parser fails here
    rv = core.list_namespace().metadata.resource_version
    core.delete_namespace(name)
    assert brief(watch(core.list_namespace, resource_version=rv)) == [("DELETED", name)]


def test_validation_like_the_apiserver(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    def rejected(call: Callable[[], Any], status: int = 422) -> dict[str, Any]:
        with pytest.raises(ApiException) as exc:
            call()
        assert exc.value.status == status
        return status_of(exc.value)

    body = rejected(
        lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"bad key": "v"}})
    )
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "data[bad key]"
    rejected(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "Upper_Case"}}))
    rejected(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "s", "labels": {"k": "not ok!"}}}))
    rejected(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "s", "finalizers": ["bad finalizer"]}}))
    rejected(
        lambda: core.create_namespaced_secret(
            ns,
            {"metadata": {"name": "s", "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": ""}]}},
        )
    )
    rejected(lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "data": {"k": "not base64!"}}), 400)
    rejected(lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "x" * 1_100_000}}))

    secret = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "data": {"k": "dg=="}, "immutable": True})
    assert secret.type == "Opaque"
    rejected(lambda: core.patch_namespaced_secret("s", ns, {"data": {"k": "dw=="}}))
    rejected(lambda: core.patch_namespaced_secret("s", ns, {"type": "kubernetes.io/tls"}))
    core.patch_namespaced_secret("s", ns, {"metadata": {"labels": {"ok": "yes"}}})  # metadata stays mutable


def test_a_label_value_with_a_space_is_refused_as_the_apiserver_refuses_it(
    core: kubernetes.client.CoreV1Api, ns: str
) -> None:
    # What a ClientCredential's target.labels can ask for: the Secret is refused with 422 Invalid.
    body = {"metadata": {"name": "s", "labels": {"team": "payments team"}}, "stringData": {"k": "v"}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(ns, body)
    assert exc.value.status == 422
    status = status_of(exc.value)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.labels"
    assert "payments team" in status["message"]
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_secret("s", ns, {"metadata": {"labels": {"team": "payments team"}}})
    assert exc.value.status == 422


def test_write_counts(cluster: FakeCluster, custom: Any, ns: str) -> None:
    cluster.reset_counts()
    make_cc(custom, ns, "cc")
    patch_cc(custom, ns, "cc", {"spec": {"a": 2}})
    patch_cc(custom, ns, "cc", {"status": {"a": 2}}, status=True)
    custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "cc")
    assert cluster.write_counts() == {
        ("clientcredentials", "POST"): 1,
        ("clientcredentials", "PATCH"): 1,
        ("clientcredentials/status", "PATCH"): 1,
        ("clientcredentials", "DELETE"): 1,
    }
    cluster.reset_counts()
    assert cluster.write_counts() == {}


def test_request_counts_by_verb_and_resource(cluster: FakeCluster, kube: httpx.Client, ns: str) -> None:
    cluster.reset_counts()
    configmaps, ccs = f"/api/v1/namespaces/{ns}/configmaps", f"/apis/{GV}/namespaces/{ns}/{PLURAL}"
    ok(kube.post(configmaps, json={"metadata": {"name": "cm", "labels": {"x": "1"}}}), 201)
    cm = ok(kube.get(f"{configmaps}/cm"))
    ok(kube.put(f"{configmaps}/cm", json=cm))
    ok(
        kube.patch(
            f"{configmaps}/cm", json={"data": {"k": "v"}}, headers={"Content-Type": "application/merge-patch+json"}
        )
    )
    ok(kube.get(configmaps, params={"labelSelector": "x=1"}))
    ok(kube.get("/api/v1/configmaps"))  # all namespaces
    ok(kube.get(configmaps, params={"watch": "1", "timeoutSeconds": "1"}))
    ok(kube.delete(f"{configmaps}/cm"))
    ok(kube.delete(configmaps))
    failed(kube.get(f"{configmaps}/missing"), 404)  # failures count too
    ok(kube.post(ccs, json={"metadata": {"name": "cc"}, "spec": {}}), 201)
    status = {"status": {"phase": "Ready"}}
    ok(kube.patch(f"{ccs}/cc/status", json=status, headers={"Content-Type": "application/merge-patch+json"}))
    ok(kube.get("/api/v1/namespaces"))  # cluster-scoped
    ok(kube.get("/version"))  # not a resource request: not counted

    assert cluster.request_counts() == {
        ("create", "configmaps"): 1,
        ("get", "configmaps"): 2,
        ("update", "configmaps"): 1,
        ("patch", "configmaps"): 1,
        ("list", "configmaps"): 2,
        ("watch", "configmaps"): 1,
        ("delete", "configmaps"): 1,
        ("deletecollection", "configmaps"): 1,
        ("create", "clientcredentials"): 1,
        ("patch", "clientcredentials/status"): 1,
        ("list", "namespaces"): 1,
    }
    assert cluster.api_calls() == {
        ("create", "", "configmaps", ns),
        ("get", "", "configmaps", ns),
        ("update", "", "configmaps", ns),
        ("patch", "", "configmaps", ns),
        ("list", "", "configmaps", ns),
        ("list", "", "configmaps", ""),
        ("watch", "", "configmaps", ns),
        ("delete", "", "configmaps", ns),
        ("deletecollection", "", "configmaps", ns),
        ("create", GROUP, "clientcredentials", ns),
        ("patch", GROUP, "clientcredentials/status", ns),
        ("list", "", "namespaces", ""),
    }
    assert cluster.write_counts()[("clientcredentials/status", "PATCH")] == 1  # still by HTTP method

    cluster.reset_counts()
    assert (cluster.request_counts(), cluster.api_calls(), cluster.write_counts()) == ({}, set(), {})


def test_request_counts_per_object(cluster: FakeCluster, kube: httpx.Client, ns: str) -> None:
    cluster.reset_counts()
    configmaps = f"/api/v1/namespaces/{ns}/configmaps"
    ok(kube.post(configmaps, json={"metadata": {"name": "a"}}), 201)  # named by its body
    ok(kube.get(f"{configmaps}/a"))
    ok(
        kube.patch(
            f"{configmaps}/a", json={"data": {"k": "v"}}, headers={"Content-Type": "application/merge-patch+json"}
        )
    )
    ok(kube.get(configmaps))  # a list names no object
    failed(kube.get(f"{configmaps}/b"), 404)
    ok(kube.post(f"/api/v1/namespaces/{ns}/secrets", json={"metadata": {"name": "a"}}), 201)
    assert cluster.object_request_counts(ns, "a") == {
        ("create", "configmaps"): 1,
        ("get", "configmaps"): 1,
        ("patch", "configmaps"): 1,
        ("create", "secrets"): 1,
    }
    assert cluster.object_request_counts(ns, "b") == {("get", "configmaps"): 1}
    assert cluster.object_request_counts("elsewhere", "a") == {}
    cluster.reset_counts()
    assert cluster.object_request_counts(ns, "a") == {}


def test_request_counts_over_http(cluster: FakeCluster, kube: httpx.Client, ns: str) -> None:
    ok(kube.delete("/_devcluster/requests"))
    assert cluster.request_counts() == {}
    ok(kube.get(f"/api/v1/namespaces/{ns}/secrets"))
    ok(kube.get(f"/api/v1/namespaces/{ns}/secrets"))
    rows = ok(kube.get("/_devcluster/requests"))["requests"]  # does not count itself
    assert rows == [{"verb": "list", "group": "", "resource": "secrets", "namespace": ns, "count": 2}]
    assert ok(kube.delete("/_devcluster/requests")) == {"requests": []}
    assert cluster.request_counts() == {}
    assert failed(kube.post("/_devcluster/requests"), 405)["reason"] == "MethodNotAllowed"


def test_metadata_only_negotiation_details(kube: httpx.Client, namespace: str) -> None:
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    ok(kube.post(secrets, json={"metadata": {"name": "s"}, "data": {"k": "dg=="}}), 201)

    def get(path: str, accept: str, **params: str) -> Any:
        return ok(kube.get(path, params=params, headers={"Accept": accept}))

    # Only JSON is served: client-go's protobuf offer comes first and is skipped.
    protobuf_first = (
        f"application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,{PARTIAL_LIST}"
    )
    assert get(secrets, protobuf_first)["kind"] == "PartialObjectMetadataList"
    # The best quality wins, then the client's order.
    assert get(f"{secrets}/s", f"application/json;q=0.5,{PARTIAL_ONE}")["kind"] == "PartialObjectMetadata"
    assert get(f"{secrets}/s", f"{PARTIAL_ONE};q=0.5,application/json")["kind"] == "Secret"
    beta = get(f"{secrets}/s", PARTIAL_ONE.replace("v=v1", "v=v1beta1"))
    assert (beta["kind"], beta["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1beta1")
    assert get(f"{secrets}/s", "application/yaml")["kind"] == "Secret"  # lenient: JSON all the same
    # Writes answer in the view asked for too.
    patched = ok(
        kube.patch(
            f"{secrets}/s",
            json={"metadata": {"labels": {"l": "v"}}},
            headers={"Content-Type": "application/merge-patch+json", "Accept": PARTIAL_ONE},
        )
    )
    assert_partial(patched)
    assert patched["metadata"]["labels"] == {"l": "v"}

    # A watch asked for a list view streams whole objects, as the apiserver does.
    events = http_watch(kube, secrets, PARTIAL_LIST, timeoutSeconds="1")
    assert [(e["type"], e["object"]["kind"]) for e in events] == [("ADDED", "Secret")]
    # The initial-events-end bookmark is metadata-only too.
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "allowWatchBookmarks": "true"}
    events = http_watch(kube, secrets, PARTIAL_ONE, timeoutSeconds="1", **params)
    assert [e["type"] for e in events[:2]] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    for event in events:
        assert_partial(event["object"])
    assert names(get(secrets, PARTIAL_LIST)) == ["s"]


def test_cli_serves_and_writes_its_port_file(tmp_path: Path) -> None:
    port_file, kubeconfig = tmp_path / "run" / "port", tmp_path / "kubeconfig"
    argv = [sys.executable, "-m", "tokensync.dev.cluster", "--port", "0", "--kubeconfig", str(kubeconfig)]
    with subprocess.Popen([*argv, "--port-file", str(port_file)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            wait_for(lambda: port_file.exists() or proc.poll() is not None, timeout=60)
            assert proc.poll() is None, "the stand-in exited"
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            assert proc.stdout is not None
            assert proc.stdout.readline().split()[-1] == url
            assert kubeconfig.exists()  # written before the port file
            with httpx.Client(base_url=url, trust_env=False) as kube:
                ok(kube.get("/api/v1/namespaces/default/secrets"))
                rows = ok(kube.get("/_devcluster/requests"))["requests"]
            assert rows == [{"verb": "list", "group": "", "resource": "secrets", "namespace": "default", "count": 1}]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert proc.returncode == 0


def test_inspection_returns_copies(cluster: FakeCluster, core: kubernetes.client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "data": {"k": "dg=="}})
    copy = cluster.get("v1", "secrets", ns, "s")
    assert copy is not None
    copy["data"]["k"] = "changed"
    assert cluster.get("v1", "secrets", ns, "s") == {**copy, "data": {"k": "dg=="}}
    assert [s["metadata"]["name"] for s in cluster.list("v1", "secrets", ns)] == ["s"]
    assert cluster.get("v1", "secrets", ns, "missing") is None


def test_kubeconfig_and_discovery(cluster: FakeCluster, tmp_path: Path) -> None:
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="demo")
    api = kubernetes.config.new_client_from_config(config_file=str(path))
    with api:
        assert kubernetes.client.VersionApi(api).get_code().major == "1"
        resources = kubernetes.client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources
        assert {r.name for r in resources} == {"clientcredentials", "clientcredentials/status"}
        assert set(resources[0].short_names) == {"clientcred", "cc"}
        assert resources[0].namespaced is True
        assert kubernetes.client.CoreV1Api(api).get_api_resources().group_version == "v1"
        groups = {g.name for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
        assert {"apps", "tokensync.io", "kopf.dev", "coordination.k8s.io", "events.k8s.io"} <= groups


def test_custom_declarations_and_stop_is_idempotent() -> None:
    decl = ResourceDecl("example.com", "v1", "widgets", "Widget", namespaced=False)
    cluster = FakeCluster([decl])
    cluster.start()
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)) as api:
        custom = kubernetes.client.CustomObjectsApi(api)
        custom.create_cluster_custom_object("example.com", "v1", "widgets", {"metadata": {"name": "w"}, "spec": {}})
        assert cluster.get("example.com/v1", "widgets", None, "w") is not None
        with pytest.raises(ApiException) as exc:
            kubernetes.client.CoreV1Api(api).list_namespaced_secret("default")
        assert exc.value.status == 404
    cluster.stop()
    cluster.stop()


def test_a_list_from_the_watch_cache_ignores_limit(core: kubernetes.client.CoreV1Api, ns: str) -> None:
    """resourceVersion=0 is served from the apiserver's watch cache, which answers whole (client-go's first list)."""
    for number in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{number}"}})
    cached = core.list_namespaced_config_map(ns, limit=2, resource_version="0")
    assert len(cached.items) == 5
    assert not cached.metadata._continue
    paged = core.list_namespaced_config_map(ns, limit=2)
    assert len(paged.items) == 2
    assert paged.metadata._continue
