"""The async API client: paths, errors (never with bodies), paging, watches, metadata-only views."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import httpx
import kubernetes
import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.kubeapi import (
    CLIENTCREDENTIALS,
    CONFIGMAPS,
    LEASES,
    SECRETS,
    JsonDict,
    KubeClient,
    KubeError,
    Resource,
    _ConfigurationAuth,
    bearer_token,
    load_configuration,
)

SECRET_VALUE = "TOPSECRET"
SECRET_B64 = base64.b64encode(SECRET_VALUE.encode()).decode()


# Resource.path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "args", "path"),
    [
        pytest.param(SECRETS, (), "/api/v1/secrets", id="core, all namespaces"),
        pytest.param(SECRETS, ("ns",), "/api/v1/namespaces/ns/secrets", id="core, namespaced list"),
        pytest.param(SECRETS, ("ns", "s"), "/api/v1/namespaces/ns/secrets/s", id="core, one object"),
        pytest.param(
            LEASES, ("ns", "l"), "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", id="grouped, one object"
        ),
        pytest.param(LEASES, (), "/apis/coordination.k8s.io/v1/leases", id="grouped, all namespaces"),
        pytest.param(
            CLIENTCREDENTIALS,
            ("ns", "cc", "status"),
            "/apis/tokensync.io/v1alpha1/namespaces/ns/clientcredentials/cc/status",
            id="subresource",
        ),
        pytest.param(
            Resource("", "v1", "namespaces"),
            (None, "kube-system"),
            "/api/v1/namespaces/kube-system",
            id="core, cluster-scoped",
        ),
        pytest.param(
            Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            (None, "x.example.com"),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com",
            id="grouped, cluster-scoped",
        ),
        pytest.param(
            Resource("", "v1", "namespaces"),
            (None, "ns", "status"),
            "/api/v1/namespaces/ns/status",
            id="cluster-scoped subresource",
        ),
    ],
)
def test_resource_path(resource: Resource, args: tuple[str | None, ...], path: str) -> None:
    assert resource.path(*args) == path


# KubeError -------------------------------------------------------------------------------------


def test_kube_error_text_and_flags() -> None:
    error = KubeError(404, "NotFound", 'secrets "x" not found')
    assert str(error) == 'HTTP 404 NotFound: secrets "x" not found'
    assert (error.not_found, error.conflict, error.gone) == (True, False, False)
    assert KubeError(409, "Conflict", "").conflict
    assert KubeError(410, "Expired", "").gone
    assert str(KubeError(0, "ConnectError", "refused")) == "ConnectError: refused"
    assert len(str(KubeError(500, "InternalError", "x" * 10_000))) == 300


# credentials -----------------------------------------------------------------------------------


def test_bearer_token_from_the_configuration() -> None:
    configuration = kubernetes.client.Configuration(host="https://example")
    assert bearer_token(configuration) is None
    configuration.api_key = {"authorization": "Bearer abc.def"}
    assert bearer_token(configuration) == "abc.def"
    configuration.api_key = {"BearerToken": "xyz"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    assert bearer_token(configuration) == "xyz"


def test_auth_sets_the_current_token_or_basic_credentials() -> None:
    configuration = kubernetes.client.Configuration(host="https://example")
    auth = _ConfigurationAuth(configuration)
    request = next(auth.auth_flow(httpx.Request("GET", "https://example/api")))
    assert "Authorization" not in request.headers
    configuration.api_key = {"authorization": "Bearer one"}
    request = next(auth.auth_flow(httpx.Request("GET", "https://example/api")))
    assert request.headers["Authorization"] == "Bearer one"
    configuration.api_key = {"authorization": "Bearer two"}  # rotated: read per request
    request = next(auth.auth_flow(httpx.Request("GET", "https://example/api")))
    assert request.headers["Authorization"] == "Bearer two"
    configuration.api_key = {}
    configuration.username, configuration.password = "user", "pass"
    request = next(auth.auth_flow(httpx.Request("GET", "https://example/api")))
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"user:pass").decode()


# against the fake cluster ----------------------------------------------------------------------


def secret(name: str, **data: str) -> JsonDict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}


async def test_create_get_patch_replace_delete(client: KubeClient, ns: str) -> None:
    created = await client.create_secret(ns, secret("s", token=SECRET_B64))
    assert created["metadata"]["namespace"] == ns
    got = await client.get_secret(ns, "s")
    assert got is not None
    assert got["data"] == {"token": SECRET_B64}
    patched = await client.patch_secret(ns, "s", {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["labels"] == {"a": "b"}
    assert patched["data"] == {"token": SECRET_B64}
    replaced = await client.replace(SECRETS, ns, "s", {**patched, "data": {}})
    assert replaced.get("data") in (None, {})
    await client.delete(SECRETS, ns, "s")
    assert await client.get(SECRETS, ns, "s") is None


async def test_get_of_a_missing_object_is_none(client: KubeClient, ns: str) -> None:
    assert await client.get(SECRETS, ns, "missing") is None
    assert await client.get(LEASES, ns, "missing") is None


async def test_delete_of_a_missing_object_is_quiet(client: KubeClient, ns: str) -> None:
    await client.delete(SECRETS, ns, "missing")


async def test_404_on_a_write_is_a_kube_error(client: KubeClient, ns: str) -> None:
    with pytest.raises(KubeError) as caught:
        await client.merge_patch(CONFIGMAPS, ns, "missing", {"data": {"a": "b"}})
    assert caught.value.status == 404
    assert caught.value.not_found
    assert caught.value.reason == "NotFound"
    assert "missing" in caught.value.message


async def test_409_already_exists(client: KubeClient, ns: str) -> None:
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "twice"}})
    with pytest.raises(KubeError) as caught:
        await client.create(CONFIGMAPS, ns, {"metadata": {"name": "twice"}})
    assert caught.value.status == 409
    assert caught.value.conflict
    assert caught.value.reason == "AlreadyExists"
    assert '"twice" already exists' in str(caught.value)


async def test_409_on_a_stale_resource_version(client: KubeClient, ns: str) -> None:
    created = await client.create(CONFIGMAPS, ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    await client.merge_patch(CONFIGMAPS, ns, "cm", {"data": {"a": "2"}})
    with pytest.raises(KubeError) as caught:
        await client.replace(CONFIGMAPS, ns, "cm", {**created, "data": {"a": "3"}})
    assert caught.value.status == 409
    assert caught.value.reason == "Conflict"
    assert caught.value.message


async def test_422_with_the_status_message_and_never_the_body(client: KubeClient, ns: str) -> None:
    with pytest.raises(KubeError) as caught:
        await client.create_secret(
            ns, {**secret("Not_A_Valid_Name", token=SECRET_B64), "stringData": {"x": "TOPSECRET"}}
        )
    error = caught.value
    assert error.status == 422
    assert error.reason == "Invalid"
    assert "metadata.name" in error.message
    for text in (str(error), repr(error), error.message):
        assert SECRET_VALUE not in text
        assert SECRET_B64 not in text


async def test_400_for_undecodable_secret_data_never_echoes_it(client: KubeClient, ns: str) -> None:
    with pytest.raises(KubeError) as caught:
        await client.create_secret(ns, secret("bad-data", token=SECRET_VALUE + "!"))
    assert caught.value.status == 400
    assert SECRET_VALUE not in str(caught.value)


async def test_list_pages_through_everything(cluster: FakeCluster, client: KubeClient, ns: str) -> None:
    for index in range(7):
        labels = {"even": "yes"} if index % 2 == 0 else {}
        await client.create(CONFIGMAPS, ns, {"metadata": {"name": f"cm-{index}", "labels": labels}})
    await client.create(CONFIGMAPS, f"{ns}-other", {"metadata": {"name": "elsewhere"}})
    cluster.reset_counts()
    items, version = await client.list(CONFIGMAPS, ns, page_size=3)
    assert [item["metadata"]["name"] for item in items] == [f"cm-{i}" for i in range(7)]
    assert version.isdigit()
    assert cluster.request_counts()[("list", "configmaps")] == 3  # 3 + 3 + 1
    items, _ = await client.list(CONFIGMAPS, ns, label_selector="even=yes", page_size=2)
    assert [item["metadata"]["name"] for item in items] == ["cm-0", "cm-2", "cm-4", "cm-6"]
    items, _ = await client.list(CONFIGMAPS, ns)
    assert len(items) == 7


async def test_list_of_an_empty_namespace(client: KubeClient, ns: str) -> None:
    items, version = await client.list(SECRETS, ns)
    assert items == []
    assert version


async def test_metadata_only_list_has_no_data(client: KubeClient, ns: str) -> None:
    for index in range(3):
        await client.create_secret(ns, secret(f"s-{index}", token=SECRET_B64))
    items, version = await client.list(SECRETS, ns, metadata_only=True, page_size=2)
    assert len(items) == 3
    assert version
    for item in items:
        assert item["kind"] == "PartialObjectMetadata"
        assert "data" not in item
        assert SECRET_B64 not in repr(item)
        assert item["metadata"]["resourceVersion"]


async def watch_events(client: KubeClient, ns: str, version: str, **kwargs: object) -> list[JsonDict]:
    events: list[JsonDict] = []
    async with asyncio.timeout(30):
        async for event in client.watch(CONFIGMAPS, ns, resource_version=version, timeout_seconds=1, **kwargs):  # type: ignore[arg-type]
            events.append(event)
    return events


async def test_watch_streams_events_until_the_server_ends_it(client: KubeClient, ns: str) -> None:
    _, version = await client.list(CONFIGMAPS, ns)
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    await client.merge_patch(CONFIGMAPS, ns, "a", {"data": {"k": "w"}})
    await client.delete(CONFIGMAPS, ns, "a")
    events = await watch_events(client, ns, version)  # ends after timeout_seconds=1
    changes = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
    assert changes == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert events[1]["object"]["data"] == {"k": "w"}
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks  # asked for (allowWatchBookmarks): the server sends one before closing


async def test_metadata_only_watch_has_no_data(client: KubeClient, ns: str) -> None:
    _, version = await client.list(CONFIGMAPS, ns)
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}})
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "b"}, "data": {"k": "v"}})
    events = await watch_events(client, ns, version, metadata_only=True, label_selector="x=y")
    added = [e["object"] for e in events if e["type"] == "ADDED"]
    assert [obj["metadata"]["name"] for obj in added] == ["a"]
    assert added[0]["kind"] == "PartialObjectMetadata"
    assert "data" not in added[0]


async def test_watch_from_an_expired_version_yields_a_410_error_event(tmp_path: Path) -> None:
    with FakeCluster(event_log_size=2) as cluster:
        client = KubeClient(load_configuration(str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))))
        try:
            _, version = await client.list(CONFIGMAPS, "ns")
            for index in range(4):
                await client.create(CONFIGMAPS, "ns", {"metadata": {"name": f"cm-{index}"}})
            events = await watch_events(client, "ns", version)
            assert [e["type"] for e in events] == ["ERROR"]
            assert events[0]["object"]["code"] == 410
        finally:
            await client.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_server_is_a_kube_error_with_status_0() -> None:
    client = KubeClient(kubernetes.client.Configuration(host=f"http://127.0.0.1:{closed_port()}"))
    try:
        with pytest.raises(KubeError) as caught:
            await client.get(SECRETS, "ns", "s")
        assert caught.value.status == 0
        assert caught.value.reason == "ConnectError"
        assert str(caught.value).startswith("ConnectError: ")
        with pytest.raises(KubeError) as caught:
            await client.list(SECRETS, "ns")
        assert caught.value.status == 0
        with pytest.raises(KubeError) as caught:
            async for _ in client.watch(SECRETS, "ns", resource_version="1"):
                pass
        assert caught.value.status == 0
    finally:
        await client.aclose()


async def test_a_response_that_is_not_json_is_a_kube_error(cluster: FakeCluster, client: KubeClient) -> None:
    cluster.handler["/not-json"] << b"surely not JSON"  # a kmock reaction on a non-resource URL
    with pytest.raises(KubeError) as caught:
        await client.request("GET", "/not-json")
    assert caught.value.reason == "InvalidResponse"
    assert "surely" not in str(caught.value)
