"""A tiny real kopf operator runs correctly against the fake cluster."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import kubernetes
import pytest

from tokensync.dev.cluster import FakeCluster

GROUP, VERSION, PLURAL = "tokensync.io", "v1alpha1", "clientcredentials"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
NS = "default"


@pytest.fixture
def cluster() -> Any:
    with FakeCluster() as cluster:
        yield cluster


@pytest.fixture
def custom(cluster: FakeCluster) -> Any:
    with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=cluster.url)) as api:
        yield kubernetes.client.CustomObjectsApi(api)


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    # Polling: the state lives in the fake cluster's thread, there is nothing to await on.
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


class Recorder:
    def __init__(self) -> None:
        self.created: collections.Counter[str] = collections.Counter()
        self.updated: list[tuple[str, Any, Any]] = []
        self.deleted: list[str] = []
        self.daemons_started: set[str] = set()
        self.daemons_stopped: set[str] = set()


@contextlib.asynccontextmanager
async def running_operator(cluster: FakeCluster) -> AsyncIterator[Recorder]:
    # Not an async fixture: kopf.operator() cancels every task created after it starts
    # (pytest-asyncio runs fixture teardowns in such tasks), so it runs in the test's own task.
    registry = kopf.OperatorRegistry()
    seen = Recorder()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.server_timeout = 1  # the server closes every watch after 1 s: many reconnects
        settings.networking.error_backoffs = [0.1]

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, id="on_create", registry=registry)
    def on_create(name: str, body: kopf.Body, **_: Any) -> dict[str, str]:
        seen.created[name] += 1
        kopf.info(body, reason="Created", message="Seen by the test operator.")  # a k8s Event
        return {"message": "created"}

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def on_update(name: str, old: Any, new: Any, **_: Any) -> None:
        seen.updated.append((name, old, new))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        seen.deleted.append(name)

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5)
    async def daemon(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
        seen.daemons_started.add(name)
        await stopped.wait()
        seen.daemons_stopped.add(name)

    stop_flag = asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, standalone=True, clusterwide=True, stop_flag=stop_flag))
    try:
        yield seen
    finally:
        stop_flag.set()
        await asyncio.wait_for(task, timeout=20)


async def test_kopf_reconciles_on_the_fake_cluster(
    cluster: FakeCluster, custom: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_operator(cluster) as operator:
        await scenario(cluster, custom, operator)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def scenario(cluster: FakeCluster, custom: Any, operator: Recorder) -> None:
    names = [f"cc{i}" for i in range(3)]
    for name in names:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClientCredential",
            "metadata": {"name": name},
            "spec": {"v": 1},
        }
        await asyncio.to_thread(custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, body)

    def reconciled(name: str) -> bool:
        obj = cluster.get(f"{GROUP}/{VERSION}", PLURAL, NS, name) or {}
        return (
            FINALIZER in obj.get("metadata", {}).get("finalizers", [])
            and obj.get("status", {}).get("on_create") == {"message": "created"}
            and name in operator.daemons_started
        )

    await eventually(lambda: all(reconciled(name) for name in names))

    # Span several server-side watch timeouts: kopf reconnects with the last resourceVersion,
    # and nothing is replayed, so no create handler runs twice.
    watches_before = cluster.handler.watch_connections[PLURAL]
    await asyncio.sleep(2.5)
    assert cluster.handler.watch_connections[PLURAL] >= watches_before + 2
    assert operator.created == {name: 1 for name in names}

    # A spec change triggers the update handler; the generation follows the spec only.
    patch = {"spec": {"v": 2}}
    await asyncio.to_thread(custom.patch_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "cc0", patch)
    await eventually(lambda: [name for name, *_ in operator.updated] == ["cc0"])
    assert operator.updated[0][1] == {"v": 1}
    assert operator.updated[0][2] == {"v": 2}
    assert (cluster.get(f"{GROUP}/{VERSION}", PLURAL, NS, "cc0") or {})["metadata"]["generation"] == 2

    # Deletion: the daemon stops, the delete handler runs, the finalizer is removed, the object goes.
    await asyncio.to_thread(custom.delete_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "cc1")
    await eventually(lambda: cluster.get(f"{GROUP}/{VERSION}", PLURAL, NS, "cc1") is None)
    assert "cc1" in operator.daemons_stopped
    assert operator.deleted == ["cc1"]
    assert operator.created == {name: 1 for name in names}

    # kopf posted its k8s events (with generateName, which plain kmock ignores).
    await eventually(lambda: len(cluster.list("v1", "events", NS)) >= len(names))
