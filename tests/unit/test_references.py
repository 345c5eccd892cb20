"""Referenced objects: versions of all Secrets from metadata-only informers, data of referenced ones only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.informer import Key
from tokensync.kubeapi import CONFIGMAPS, SECRETS, JsonDict, KubeClient, KubeError, Resource
from tokensync.references import Loaded, Pending, ReferencedObjects, newer_or_same, resource_version

from .polling import eventually


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "than", "expected"),
    [
        ("10", "9", True),  # numerically, not as strings
        ("9", "10", False),
        ("7", "7", True),
        ("100", "99", True),
        ("abc", "abc", True),
        ("abc", "abd", False),
        ("10", "abc", False),
        ("", "", True),
        ("", "5", False),
    ],
)
def test_newer_or_same(version: str, than: str, expected: bool) -> None:
    assert newer_or_same(version, than) is expected


def test_resource_version() -> None:
    assert resource_version({"metadata": {"resourceVersion": "42"}}) == "42"
    assert resource_version({"metadata": {}}) == ""
    assert resource_version({}) == ""


# against the fake cluster ----------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Key]] = []

    def __call__(self, kind: str, key: Key) -> None:
        self.seen.append((kind, key))

    def count(self, kind: str, key: Key) -> int:
        return self.seen.count((kind, key))


@contextlib.asynccontextmanager
async def watching(
    client: KubeClient, ns: str, changes: Changes, resource: Resource = SECRETS, data_field: str = "data"
) -> AsyncIterator[ReferencedObjects]:
    refs = ReferencedObjects(client, resource, (ns,), on_change=changes, data_field=data_field)
    tasks = [asyncio.create_task(informer.run()) for informer in refs.informers]
    try:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in refs.informers)), timeout=20)
        yield refs
    finally:
        await refs.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def create_secret(client: KubeClient, ns: str, name: str, **data: str) -> JsonDict:
    body = {"metadata": {"name": name}, "data": {k: b64(v) for k, v in data.items()}}
    return await client.create(SECRETS, ns, body)


async def loaded(refs: ReferencedObjects, changes: Changes, key: Key, nth: int = 1) -> Loaded:
    """The data of ``key``, after the fetch that data() started."""
    with pytest.raises(Pending):
        refs.data(key)
    await eventually(lambda: changes.count("LOADED", key) >= nth)
    result = refs.data(key)
    assert result is not None
    return result


async def test_version_of_existing_and_missing_objects(client: KubeClient, ns: str) -> None:
    created = await create_secret(client, ns, "creds", clientId="id")
    await create_secret(client, f"{ns}-elsewhere", "creds", clientId="id")
    async with watching(client, ns, Changes()) as refs:
        assert refs.version((ns, "creds")) == created["metadata"]["resourceVersion"]
        assert refs.version((ns, "missing")) is None
        assert refs.version((f"{ns}-elsewhere", "creds")) is None  # a namespace not watched
        assert refs.data((ns, "missing")) is None  # no fetch for what does not exist
        assert refs.loaded_count == 0


async def test_data_is_pending_then_loaded(cluster: FakeCluster, client: KubeClient, ns: str) -> None:
    created = await create_secret(client, ns, "creds", clientId="id", clientSecret="TOPSECRET")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        cluster.reset_counts()
        key = (ns, "creds")
        with pytest.raises(Pending):
            refs.data(key)
        with pytest.raises(Pending):
            refs.data(key)  # one fetch however often asked
        await eventually(lambda: changes.count("LOADED", key) == 1)
        result = refs.data(key)
        assert result == Loaded(created["metadata"]["resourceVersion"], created["data"])
        assert refs.data(key) is result  # from memory
        assert refs.loaded_count == 1
        assert cluster.request_counts().get(("get", "secrets")) == 1


async def test_a_change_drops_stale_data_and_wakes_dependents(
    cluster: FakeCluster, client: KubeClient, ns: str
) -> None:
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        first = await loaded(refs, changes, key)
        assert first.data == {"clientSecret": b64("one")}
        updated = await client.merge_patch(SECRETS, ns, "creds", {"data": {"clientSecret": b64("two")}})
        await eventually(lambda: changes.count("MODIFIED", key) == 1)
        assert refs.loaded_count == 0  # the stale data is gone at once
        assert refs.version(key) == updated["metadata"]["resourceVersion"]
        second = await loaded(refs, changes, key, nth=2)
        assert second == Loaded(updated["metadata"]["resourceVersion"], {"clientSecret": b64("two")})


async def test_a_deleted_object_forgets_its_data(client: KubeClient, ns: str) -> None:
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        await loaded(refs, changes, key)
        await client.delete(SECRETS, ns, "creds")
        await eventually(lambda: changes.count("DELETED", key) == 1)
        assert refs.loaded_count == 0
        assert refs.version(key) is None
        assert refs.data(key) is None


async def test_new_objects_are_reported(client: KubeClient, ns: str) -> None:
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        await create_secret(client, ns, "late", clientSecret="x")
        await eventually(lambda: changes.count("ADDED", (ns, "late")) == 1)
        assert refs.version((ns, "late")) is not None


async def test_release_forgets_the_data(cluster: FakeCluster, client: KubeClient, ns: str) -> None:
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        await loaded(refs, changes, key)
        refs.release(key)
        refs.release((ns, "never-loaded"))  # harmless
        assert refs.loaded_count == 0
        cluster.reset_counts()
        await loaded(refs, changes, key, nth=2)  # fetched again when needed again
        assert cluster.request_counts().get(("get", "secrets")) == 1


async def test_unrelated_secrets_are_never_read(cluster: FakeCluster, client: KubeClient, ns: str) -> None:
    for index in range(5):
        await create_secret(client, ns, f"helm-release-{index}", release="TOPSECRET" * 100)
    await create_secret(client, ns, "creds", clientSecret="x")
    changes = Changes()
    cluster.reset_counts()
    async with watching(client, ns, changes) as refs:
        for index in range(5):
            assert refs.version((ns, f"helm-release-{index}")) is not None
        await loaded(refs, changes, (ns, "creds"))
        await client.merge_patch(SECRETS, ns, "helm-release-0", {"data": {"more": b64("y")}})
        await eventually(lambda: changes.count("MODIFIED", (ns, "helm-release-0")) == 1)
        assert refs.loaded_count == 1
        counts = cluster.request_counts()
        assert counts.get(("get", "secrets")) == 1  # the referenced one only
        assert counts.get(("list", "secrets")) == 1  # the informer's


async def test_configmaps_with_another_data_field(client: KubeClient, ns: str) -> None:
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "ca"}, "data": {"ca.crt": "PEM"}})
    await client.create(CONFIGMAPS, ns, {"metadata": {"name": "bin"}, "binaryData": {"blob": b64("raw")}})
    changes = Changes()
    async with watching(client, ns, changes, resource=CONFIGMAPS) as refs:
        assert (await loaded(refs, changes, (ns, "ca"))).data == {"ca.crt": "PEM"}
    async with watching(client, ns, changes, resource=CONFIGMAPS, data_field="binaryData") as refs:
        assert (await loaded(refs, changes, (ns, "bin"), nth=1)).data == {"blob": b64("raw")}


async def test_a_fetch_racing_the_watch_is_not_dropped(client: KubeClient, ns: str) -> None:
    """Data fetched at a version the informer has not seen yet stays; its late event changes nothing."""
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        informer = refs.informers[0]
        old_version = informer.store[key]
        await loaded(refs, changes, key)
        # Pretend the watch lags: the informer still holds an older version than the data.
        informer.store[key] = str(int(old_version) - 1)
        result = refs.data(key)
        assert result is not None
        assert result.version == old_version
        before = list(changes.seen)
        refs._event("MODIFIED", key, old_version)  # the watch catches up with the version we hold
        assert changes.seen == before  # nobody woken for what they already have
        assert refs.loaded_count == 1


async def test_data_released_during_its_fetch_is_not_kept(client: KubeClient, ns: str) -> None:
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        with pytest.raises(Pending):
            refs.data(key)  # the fetch starts
        refs.release(key)  # the last resource referring to it goes before the GET returns
        await eventually(lambda: changes.count("LOADED", key) == 1)
        assert refs.loaded_count == 0


async def test_data_asked_for_again_during_its_fetch_is_kept(client: KubeClient, ns: str) -> None:
    await create_secret(client, ns, "creds", clientSecret="one")
    changes = Changes()
    async with watching(client, ns, changes) as refs:
        key = (ns, "creds")
        with pytest.raises(Pending):
            refs.data(key)
        refs.release(key)
        with pytest.raises(Pending):
            refs.data(key)  # referred to again before the GET returns
        await eventually(lambda: changes.count("LOADED", key) == 1)
        assert refs.loaded_count == 1
        assert refs.data(key) is not None


# failed fetches, in loop time, with a stand-in client -------------------------------------------


class FlakyClient:
    """Fails ``failures`` GETs with a transport error, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.gets: list[float] = []

    async def get(self, resource: Resource, namespace: str, name: str) -> JsonDict | None:
        self.gets.append(asyncio.get_running_loop().time())
        if self.failures:
            self.failures -= 1
            raise KubeError(0, "ConnectError", "connection refused")
        return {"metadata": {"name": name, "resourceVersion": "5"}, "data": {"k": b64("v")}}


@pytest.mark.looptime
async def test_a_failed_fetch_is_retried_with_backoff() -> None:
    api = FlakyClient(failures=2)
    changes = Changes()
    refs = ReferencedObjects(api, SECRETS, ("ns",), on_change=changes)  # type: ignore[arg-type]
    key = ("ns", "creds")
    refs.informers[0].store[key] = "5"  # as if listed: the informers are not run here
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for nth, backoff in ((1, 1.0), (2, 2.0)):
            with pytest.raises(Pending):
                refs.data(key)
            with pytest.raises(Pending):
                refs.data(key)  # no second GET while the failed one backs off

            def answered(nth: int = nth) -> bool:
                return changes.count("LOADED", key) == nth

            await eventually(answered, timeout=100)
            assert refs.loaded_count == 0
            assert loop.time() - api.gets[-1] == pytest.approx(backoff, abs=0.01)
        result = await loaded(refs, changes, key, nth=3)
        assert result == Loaded("5", {"k": b64("v")})
        assert len(api.gets) == 3
        assert loop.time() - t0 == pytest.approx(3.0, abs=0.01)
    finally:
        await refs.aclose()
