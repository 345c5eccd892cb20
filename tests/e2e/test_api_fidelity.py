"""The API behaviours the operator relies on, checked against a real kube-apiserver (v1.30+).

The operator's httpx shell depends on them: metadata-only lists, gets and watches (with
selectors and bookmarks), the 406 for a view that does not fit, paged lists, managedFields,
optimistic concurrency on Leases, and 410 for a watch from an expired resourceVersion.

``tests/devcluster/test_fidelity.py`` imports the tests written for both and runs them against
the API stand-in: if one passes here but fails there, the stand-in has drifted from the real
thing. They talk plain HTTP, as the operator does, through two fixtures that each module
provides: ``kube`` (an httpx client at the API) and ``namespace`` (a fresh, existing namespace).

Skipped, with the reason, when no cluster is reachable. Run with e.g.
``KUBECONFIG=~/.kube/kind pytest tests/e2e/test_api_fidelity.py``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest

JsonDict = dict[str, Any]

pytestmark = pytest.mark.e2e

PARTIAL_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _client_or_skip() -> httpx.Client:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).expanduser().exists():
        pytest.skip("e2e: no cluster (set KUBECONFIG to a test cluster's kubeconfig to run these tests)")
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    tls = ssl.create_default_context(cafile=config.ssl_ca_cert)
    if config.cert_file:
        tls.load_cert_chain(config.cert_file, config.key_file)
    if not config.verify_ssl:  # insecure-skip-tls-verify in the kubeconfig
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    headers = {"User-Agent": "fidelity-tests/1.0"}
    for auth in config.auth_settings().values():  # bearer tokens, from a file or an exec plugin
        if auth["in"] == "header" and auth["value"]:
            headers[auth["key"]] = auth["value"]
    client = httpx.Client(base_url=config.host, verify=tls, headers=headers, timeout=30, trust_env=False)
    try:
        client.get("/version", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:  # any failure to reach it means: no cluster here
        client.close()
        pytest.skip(f"e2e: the cluster in KUBECONFIG is not reachable ({type(exc).__name__})")
    return client


@pytest.fixture(scope="module")
def kube() -> Iterator[httpx.Client]:
    with _client_or_skip() as client:
        yield client


@pytest.fixture
def namespace(kube: httpx.Client) -> Iterator[str]:
    name = f"tokensync-fidelity-{uuid.uuid4().hex[:6]}"
    ok(kube.post("/api/v1/namespaces", json={"metadata": {"name": name}}), 201)
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


# ----- helpers (the tests below also run against the stand-in) -----


def ok(response: httpx.Response, status: int = 200) -> JsonDict:
    assert response.status_code == status, response.text
    body: JsonDict = response.json()
    return body


def failed(response: httpx.Response, status: int) -> JsonDict:
    """The Status body of a failed request."""
    assert response.status_code == status, response.text
    body: JsonDict = response.json()
    assert body["code"] == status
    return body


def names(*listed: JsonDict) -> list[str]:
    return [item["metadata"]["name"] for page in listed for item in page["items"]]


def pages(kube: httpx.Client, path: str, accept: str = "application/json", **params: str) -> list[JsonDict]:
    """Every page of a paged list, following the continue tokens.

    A page may come back short, or even empty, when a selector filters out the rest: the
    apiserver hands out a token as long as etcd has more keys, matching or not.
    """
    found = [ok(kube.get(path, params=params, headers={"Accept": accept}))]
    while token := found[-1]["metadata"].get("continue"):
        assert len(found) < 20, "the pages do not end"
        found.append(ok(kube.get(path, params={**params, "continue": token}, headers={"Accept": accept})))
    return found


def as_user(manager: str) -> dict[str, str]:
    return {"User-Agent": f"{manager}/1.0 (fidelity tests)"}


def watch(kube: httpx.Client, path: str, accept: str, **params: str) -> list[JsonDict]:
    """All events of one watch request, until the server ends it (pass ``timeoutSeconds``)."""
    with kube.stream("GET", path, params={"watch": "1", **params}, headers={"Accept": accept}) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def brief(events: list[JsonDict]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]


def assert_partial(obj: JsonDict) -> None:
    assert set(obj) == {"kind", "apiVersion", "metadata"}  # no data, spec or status
    assert (obj["kind"], obj["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")


def managers(obj: JsonDict) -> set[tuple[str, str, str]]:
    return {(e["manager"], e["operation"], e.get("subresource", "")) for e in obj["metadata"]["managedFields"]}


# ----- the tests for both -----


def test_metadata_only_list_with_selector_and_pages(kube: httpx.Client, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    for name, app in [("a", "x"), ("b", "y"), ("c", "x")]:
        ok(kube.post(configmaps, json={"metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}}), 201)
    # As client-go's metadata client asks: the list view first, whole objects as a fallback.
    accept = {"Accept": f"{PARTIAL_LIST},application/json"}

    listed = ok(kube.get(configmaps, params={"labelSelector": "app=x"}, headers=accept))
    assert (listed["kind"], listed["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert int(listed["metadata"]["resourceVersion"]) > 0
    assert names(listed) == ["a", "c"]
    for item in listed["items"]:
        assert_partial(item)
        assert item["metadata"]["labels"] == {"app": "x"}
        assert {"uid", "resourceVersion", "creationTimestamp", "managedFields"} <= set(item["metadata"])

    paged = pages(kube, configmaps, accept["Accept"], labelSelector="app=x", limit="1")
    assert {page["kind"] for page in paged} == {"PartialObjectMetadataList"}
    assert (names(paged[0]), names(*paged)) == (["a"], ["a", "c"])


def test_metadata_only_get_and_views_that_do_not_fit(kube: httpx.Client, namespace: str) -> None:
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    ok(kube.post(secrets, json={"metadata": {"name": "s"}, "stringData": {"token": "hidden"}}), 201)

    one = ok(kube.get(f"{secrets}/s", headers={"Accept": f"{PARTIAL_ONE},application/json"}))
    assert_partial(one)
    assert one["metadata"]["name"] == "s"
    assert "data" in ok(kube.get(f"{secrets}/s"))  # whole objects unless a view is asked for
    assert "data" in ok(kube.get(f"{secrets}/s", headers={"Accept": "application/json"}))

    # Negotiation takes the first view it knows, whatever the request: a misfit is 406, fallback or not.
    for path, accept in [
        (f"{secrets}/s", PARTIAL_LIST),
        (f"{secrets}/s", f"{PARTIAL_LIST},application/json"),
        (secrets, PARTIAL_ONE),
        (secrets, "application/json;as=NoSuchView;g=meta.k8s.io;v=v1"),
    ]:
        assert failed(kube.get(path, headers={"Accept": accept}), 406)["reason"] == "NotAcceptable", accept


def test_metadata_only_watch_with_selector_and_bookmarks(kube: httpx.Client, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    since = ok(kube.get(configmaps))["metadata"]["resourceVersion"]
    ok(kube.post(configmaps, json={"metadata": {"name": "a", "labels": {"app": "x"}}}), 201)
    ok(kube.post(configmaps, json={"metadata": {"name": "b", "labels": {"app": "y"}}}), 201)
    ok(kube.patch(f"{configmaps}/b", json={"metadata": {"labels": {"app": "x"}}}, headers=MERGE_PATCH))
    ok(kube.patch(f"{configmaps}/a", json={"data": {"k": "v"}}, headers=MERGE_PATCH))
    ok(kube.delete(f"{configmaps}/a"))

    # The apiserver sends a bookmark about 2 s before the timeout; the stand-in periodically and at the end.
    params = {"resourceVersion": since, "labelSelector": "app=x", "allowWatchBookmarks": "true"}
    events = watch(kube, configmaps, PARTIAL_ONE, timeoutSeconds="5", **params)
    assert brief(events) == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "a")]
    bookmarks = [e["object"] for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks
    for obj in [e["object"] for e in events]:
        assert_partial(obj)
    assert all(int(b["metadata"]["resourceVersion"]) >= int(since) for b in bookmarks)

    # Without a resourceVersion, the current state comes first, as ADDED events.
    current = watch(kube, configmaps, PARTIAL_ONE, timeoutSeconds="1", labelSelector="app=x")
    assert brief(current) == [("ADDED", "b")]
    assert_partial(current[0]["object"])


def test_list_pages_and_bad_continue_tokens(kube: httpx.Client, namespace: str) -> None:
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    for i in range(5):
        ok(kube.post(secrets, json={"metadata": {"name": f"s{i}"}}), 201)
    everything = names(ok(kube.get(secrets)))
    assert everything == sorted(everything)
    assert {f"s{i}" for i in range(5)} <= set(everything)

    paged = pages(kube, secrets, limit="2")
    assert names(*paged) == everything
    assert all(len(page["items"]) == 2 for page in paged[:-1])  # without selectors, pages are full
    assert len({page["metadata"]["resourceVersion"] for page in paged}) == 1  # one snapshot
    for i, page in enumerate(paged[:-1]):
        if "remainingItemCount" in page["metadata"]:  # optional: the server may omit it
            assert page["metadata"]["remainingItemCount"] == len(everything) - len(names(*paged[: i + 1]))

    first = paged[0]["metadata"]
    not_a_token = base64.urlsafe_b64encode(b"{}").decode().rstrip("=")
    for bad in (
        {"continue": "@@@"},
        {"continue": not_a_token},
        {"continue": first["continue"], "resourceVersion": first["resourceVersion"]},
    ):
        assert failed(kube.get(secrets, params={"limit": "2", **bad}), 400)["reason"] == "BadRequest", bad


def test_managed_fields_record_each_writer(kube: httpx.Client, namespace: str) -> None:
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    body = {"metadata": {"name": "cm"}, "data": {"a": "1"}}
    created = ok(kube.post(configmaps, json=body, headers=as_user("fidelity-a")), 201)
    [entry] = created["metadata"]["managedFields"]
    assert {k: entry[k] for k in ("manager", "operation", "apiVersion", "fieldsType")} == {
        "manager": "fidelity-a",
        "operation": "Update",
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
    }
    assert TIMESTAMP.fullmatch(entry["time"])
    assert isinstance(entry["fieldsV1"], dict)
    assert "subresource" not in entry

    patched = ok(
        kube.patch(f"{configmaps}/cm", json={"data": {"b": "2"}}, headers={**MERGE_PATCH, **as_user("fidelity-b")})
    )
    assert managers(patched) == {("fidelity-a", "Update", ""), ("fidelity-b", "Update", "")}

    # An update renews the writer's own entry (a changes only its own field, so b keeps its entry).
    patched["data"]["a"] = "3"
    replaced = ok(kube.put(f"{configmaps}/cm", json=patched, headers=as_user("fidelity-a")))
    assert managers(replaced) == {("fidelity-a", "Update", ""), ("fidelity-b", "Update", "")}
    renewed = next(e for e in replaced["metadata"]["managedFields"] if e["manager"] == "fidelity-a")
    assert renewed["time"] >= entry["time"]

    # ?fieldManager= names the manager instead of the User-Agent.
    params = {"fieldManager": "fidelity-c"}
    again = ok(kube.patch(f"{configmaps}/cm", params=params, json={"data": {"c": "3"}}, headers=MERGE_PATCH))
    assert ("fidelity-c", "Update", "") in managers(again)

    # Status writes have entries of their own.
    condition = {"type": "FidelityChecked", "status": "True"}
    status = ok(
        kube.patch(
            f"/api/v1/namespaces/{namespace}/status",
            json={"status": {"conditions": [condition]}},
            headers={**MERGE_PATCH, **as_user("fidelity-d")},
        )
    )
    assert ("fidelity-d", "Update", "status") in managers(status)


def test_lease_updates_conflict_on_a_stale_resource_version(kube: httpx.Client, namespace: str) -> None:
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    lease = ok(kube.post(leases, json=body), 201)
    stale = lease["metadata"]["resourceVersion"]

    lease["spec"]["holderIdentity"] = "b"
    renewed = ok(kube.put(f"{leases}/leader", json=lease))  # the current resourceVersion: accepted
    assert renewed["spec"]["holderIdentity"] == "b"
    assert renewed["metadata"]["resourceVersion"] != stale

    lease["spec"]["holderIdentity"] = "c"  # still carries the stale resourceVersion
    assert failed(kube.put(f"{leases}/leader", json=lease), 409)["reason"] == "Conflict"
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "c"}}
    assert failed(kube.patch(f"{leases}/leader", json=patch, headers=MERGE_PATCH), 409)["reason"] == "Conflict"
    assert ok(kube.get(f"{leases}/leader"))["spec"]["holderIdentity"] == "b"

    patch["metadata"]["resourceVersion"] = renewed["metadata"]["resourceVersion"]
    taken = ok(kube.patch(f"{leases}/leader", json=patch, headers=MERGE_PATCH))
    assert taken["spec"]["holderIdentity"] == "c"


# ----- a real cluster only (the stand-in's own test shrinks its event log instead) -----


def test_watch_from_an_expired_resource_version_is_gone(kube: httpx.Client, namespace: str) -> None:
    # resourceVersion 1 is long compacted away in any real cluster.
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    events = watch(kube, configmaps, "application/json", resourceVersion="1", timeoutSeconds="5")
    assert [e["type"] for e in events] == ["ERROR"]
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
