"""Informers against the fake API server: list, watch, resume, relist on 410, selectors, transforms."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.informer import RETRY_CAP, Informer, Key, object_key, retry_delay
from tokensync.kubeapi import CONFIGMAPS, SECRETS, JsonDict, KubeClient, load_configuration

from .polling import eventually

Event = tuple[str, Key, Any]


@contextlib.asynccontextmanager
async def running(informer: Informer[Any], *, wait_synced: bool = True) -> AsyncIterator[Informer[Any]]:
    task = asyncio.create_task(informer.run())
    try:
        if wait_synced:
            await asyncio.wait_for(informer.synced.wait(), timeout=20)
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def recorder() -> tuple[list[Event], Callable[[str, Key, Any], None]]:
    events: list[Event] = []
    return events, lambda kind, key, value: events.append((kind, key, value))


def configmap(ns: str, name: str, labels: dict[str, str] | None = None, **data: str) -> JsonDict:
    meta: JsonDict = {"name": name, "namespace": ns}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def identity(obj: JsonDict) -> JsonDict:
    return obj


# pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (1000, 30.0)])
def test_retry_delay_grows_and_caps(failures: int, delay: float) -> None:
    assert retry_delay(failures) == delay
    assert retry_delay(failures) <= RETRY_CAP


def test_object_key() -> None:
    assert object_key({"metadata": {"namespace": "ns", "name": "a"}}) == ("ns", "a")
    assert object_key({"metadata": {"name": "cluster-wide"}}) == ("", "cluster-wide")
    assert object_key({}) == ("", "")


# against the fake cluster ----------------------------------------------------------------------


async def test_initial_list_fills_the_store_and_sets_synced(client: KubeClient, ns: str) -> None:
    for name in ("a", "b", "c"):
        await client.create(CONFIGMAPS, ns, configmap(ns, name, value=name))
    await client.create(CONFIGMAPS, f"{ns}-other", configmap(f"{ns}-other", "elsewhere"))
    events, handler = recorder()
    informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=handler)
    assert not informer.synced.is_set()
    async with running(informer):
        assert sorted(informer.store) == [(ns, "a"), (ns, "b"), (ns, "c")]
        assert informer.store[(ns, "b")]["data"] == {"value": "b"}
        assert informer.resource_version
        assert sorted((kind, key) for kind, key, _ in events) == [
            ("ADDED", (ns, "a")),
            ("ADDED", (ns, "b")),
            ("ADDED", (ns, "c")),
        ]


async def test_an_empty_namespace_syncs_too(client: KubeClient, ns: str) -> None:
    events, handler = recorder()
    informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=handler)
    async with running(informer):
        assert informer.store == {}
        assert events == []


async def test_all_namespaces(client: KubeClient, ns: str) -> None:
    await client.create(SECRETS, f"{ns}-x", {"metadata": {"name": "s1"}, "data": {}})
    await client.create(SECRETS, f"{ns}-y", {"metadata": {"name": "s2"}, "data": {}})
    informer = Informer[JsonDict](client, SECRETS, None, transform=identity, on_event=lambda *_: None)
    async with running(informer):
        assert {(f"{ns}-x", "s1"), (f"{ns}-y", "s2")} <= set(informer.store)


async def test_watch_events_arrive_in_order(client: KubeClient, ns: str) -> None:
    events, handler = recorder()
    informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=handler)
    async with running(informer):
        await client.create(CONFIGMAPS, ns, configmap(ns, "x", value="1"))
        await client.merge_patch(CONFIGMAPS, ns, "x", {"data": {"value": "2"}})
        await client.create(CONFIGMAPS, ns, configmap(ns, "y"))
        await client.delete(CONFIGMAPS, ns, "x")
        await eventually(lambda: len(events) >= 4)
        assert [(kind, key) for kind, key, _ in events] == [
            ("ADDED", (ns, "x")),
            ("MODIFIED", (ns, "x")),
            ("ADDED", (ns, "y")),
            ("DELETED", (ns, "x")),
        ]
        assert events[0][2]["data"] == {"value": "1"}
        assert events[1][2]["data"] == {"value": "2"}
        assert events[3][2] is None
        assert list(informer.store) == [(ns, "y")]
        assert int(informer.resource_version) > int(informer.store[(ns, "y")]["metadata"]["resourceVersion"])


async def test_label_selector_filters_and_objects_leaving_it_are_deleted(client: KubeClient, ns: str) -> None:
    await client.create(CONFIGMAPS, ns, configmap(ns, "in", labels={"app": "yes"}))
    await client.create(CONFIGMAPS, ns, configmap(ns, "out", labels={"app": "no"}))
    await client.create(CONFIGMAPS, ns, configmap(ns, "bare"))
    events, handler = recorder()
    informer = Informer[JsonDict](
        client, CONFIGMAPS, ns, transform=identity, on_event=handler, label_selector="app=yes"
    )
    async with running(informer):
        assert list(informer.store) == [(ns, "in")]
        assert [(kind, key) for kind, key, _ in events] == [("ADDED", (ns, "in"))]
        events.clear()
        await client.merge_patch(CONFIGMAPS, ns, "out", {"metadata": {"labels": {"app": "yes"}}})
        await client.merge_patch(CONFIGMAPS, ns, "in", {"metadata": {"labels": {"app": None}}})
        await client.merge_patch(CONFIGMAPS, ns, "bare", {"data": {"k": "v"}})  # never seen
        await client.merge_patch(CONFIGMAPS, ns, "out", {"data": {"k": "v"}})
        await eventually(lambda: len(events) >= 3)
        assert [(kind, key) for kind, key, _ in events] == [
            ("ADDED", (ns, "out")),
            ("DELETED", (ns, "in")),
            ("MODIFIED", (ns, "out")),
        ]
        assert list(informer.store) == [(ns, "out")]


async def test_metadata_only_never_holds_data(client: KubeClient, ns: str) -> None:
    secret = base64.b64encode(b"TOPSECRET").decode()
    await client.create(SECRETS, ns, {"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"token": secret}})
    events, handler = recorder()
    informer = Informer[JsonDict](client, SECRETS, ns, transform=identity, on_event=handler, metadata_only=True)
    async with running(informer):
        await client.create(SECRETS, ns, {"metadata": {"name": "b"}, "data": {"token": secret}})
        await client.merge_patch(SECRETS, ns, "a", {"data": {"other": secret}})
        await eventually(lambda: len(events) >= 3)
        for _, _, obj in events:
            assert obj["kind"] == "PartialObjectMetadata"
            assert set(obj) == {"kind", "apiVersion", "metadata"}
            assert secret not in repr(obj)
        assert informer.store[(ns, "a")]["metadata"]["labels"] == {"x": "1"}
        assert all("data" not in obj for obj in informer.store.values())


async def test_transform_is_applied_to_stored_and_handled_objects(client: KubeClient, ns: str) -> None:
    await client.create(CONFIGMAPS, ns, configmap(ns, "a", value="1"))
    events, handler = recorder()

    def transform(obj: JsonDict) -> str:
        return f"{obj['metadata']['name']}={obj['data'].get('value')}"

    informer = Informer[str](client, CONFIGMAPS, ns, transform=transform, on_event=handler)
    async with running(informer):
        await client.merge_patch(CONFIGMAPS, ns, "a", {"data": {"value": "2"}})
        await eventually(lambda: len(events) >= 2)
        assert events == [("ADDED", (ns, "a"), "a=1"), ("MODIFIED", (ns, "a"), "a=2")]
        assert informer.store == {(ns, "a"): "a=2"}


async def test_a_watch_ended_by_the_server_resumes_without_relisting(
    cluster: FakeCluster, client: KubeClient, ns: str
) -> None:
    events, handler = recorder()
    informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=handler, watch_timeout=1)
    watches = cluster.handler.watch_connections
    async with running(informer):
        cluster.reset_counts()
        opened = watches["configmaps"]
        for index in range(3):
            # Each watch lasts 1 s on the server: objects created across several of them.
            await client.create(CONFIGMAPS, ns, configmap(ns, f"cm-{index}"))
            target = watches["configmaps"] + 1

            def reconnected(target: int = target) -> bool:
                return watches["configmaps"] >= target

            await eventually(reconnected)
        await client.create(CONFIGMAPS, ns, configmap(ns, "last"))
        await eventually(lambda: (ns, "last") in informer.store)
        assert watches["configmaps"] - opened >= 3
        counts = cluster.request_counts()
        assert counts.get(("list", "configmaps"), 0) == 0
        assert counts.get(("watch", "configmaps"), 0) >= 3
        # Every object arrived exactly once: no replay, no relist.
        assert sorted(key for _, key, _ in events) == sorted([(ns, "cm-0"), (ns, "cm-1"), (ns, "cm-2"), (ns, "last")])
        assert {kind for kind, _, _ in events} == {"ADDED"}


async def test_an_expired_resource_version_relists_once_and_reports_deletions(tmp_path: Path) -> None:
    ns = "expiry"
    with FakeCluster(event_log_size=3) as cluster:
        client = KubeClient(load_configuration(str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))))
        try:
            for name in ("keep", "gone", "changed"):
                await client.create(CONFIGMAPS, ns, configmap(ns, name, value="1"))
            events, handler = recorder()
            informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=handler)
            async with running(informer):
                pass  # listed and watching; then "disconnected" (the resourceVersion is kept)
            seen = informer.resource_version
            assert seen
            # More changes than the server's event log keeps, while nobody watches.
            await client.delete(CONFIGMAPS, ns, "gone")
            await client.merge_patch(CONFIGMAPS, ns, "changed", {"data": {"value": "2"}})
            for index in range(4):
                await client.create(CONFIGMAPS, ns, configmap(ns, f"new-{index}"))
            events.clear()
            cluster.reset_counts()
            async with running(informer, wait_synced=False):
                await eventually(lambda: informer.resource_version != seen and (ns, "new-3") in informer.store)
                await client.create(CONFIGMAPS, ns, configmap(ns, "after"))  # the new watch works
                await eventually(lambda: (ns, "after") in informer.store)
                counts = cluster.request_counts()
                assert counts.get(("list", "configmaps")) == 1
                assert counts.get(("watch", "configmaps"), 0) >= 2  # the expired one, then the live one
                assert [(kind, key) for kind, key, _ in events if kind == "DELETED"] == [("DELETED", (ns, "gone"))]
                assert events[0][0] == "DELETED"  # before the re-added objects
                assert sorted(informer.store) == sorted(
                    [(ns, "keep"), (ns, "changed"), (ns, "after")] + [(ns, f"new-{i}") for i in range(4)]
                )
                assert informer.store[(ns, "changed")]["data"] == {"value": "2"}
        finally:
            await client.aclose()


async def test_an_unreachable_api_does_not_end_the_informer(cluster: FakeCluster, tmp_path: Path, ns: str) -> None:
    # A kubeconfig for a port nobody listens on: the informer keeps retrying, never raises.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    path.write_text(path.read_text().replace(cluster.url, f"http://127.0.0.1:{port}"))
    client = KubeClient(load_configuration(str(path)))
    try:
        informer = Informer[JsonDict](client, CONFIGMAPS, ns, transform=identity, on_event=lambda *_: None)
        task = asyncio.create_task(informer.run())
        await asyncio.sleep(0.3)
        assert not task.done()
        assert not informer.synced.is_set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await client.aclose()
