"""Fault injection in the API stand-in: every fault is seen to fire, over HTTP, as a client sees it.

A fault that cannot be observed is a defect: each test drives real requests (httpx, with a
User-Agent of its own) and checks the answer, the Status body, the request accounting, and for
held requests and streams that nothing arrives before the fault ends and everything after.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tokensync.dev.cluster import FakeCluster

NS = "ns"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
CCS = f"/apis/tokensync.io/v1alpha1/namespaces/{NS}/clientcredentials"
MERGE = {"Content-Type": "application/merge-patch+json"}
#: How long a test looks for something that must NOT happen (a held answer, a frozen event).
QUIET = 1.0


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(bookmark_interval=0.3) as fake:
        yield fake


def connect(cluster: FakeCluster, agent: str = "fault-tests") -> httpx.Client:
    return httpx.Client(base_url=cluster.url, headers={"User-Agent": f"{agent}/1.0"}, timeout=60, trust_env=False)


@pytest.fixture
def kube(cluster: FakeCluster) -> Iterator[httpx.Client]:
    with connect(cluster) as client:
        yield client


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
    return result


def stays_pending(future: Future[Any], seconds: float = QUIET) -> bool:
    """Whether ``future`` is still not done after a bounded look."""
    try:
        future.result(timeout=seconds)
    except TimeoutError:
        return True
    return False


def configmap(name: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **meta}, "data": {"k": "v"}}


class WatchReader(threading.Thread):
    """One watch request read line by line in a thread; ``lines`` are (monotonic time, parsed line)."""

    def __init__(self, cluster: FakeCluster, path: str, agent: str = "watcher", **params: str) -> None:
        super().__init__(daemon=True)
        self.client = connect(cluster, agent)
        self.path, self.params = path, {"watch": "1", **params}
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.ended: float | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.client.stream("GET", self.path, params=self.params) as response:
                for line in response.iter_lines():
                    if line.strip():
                        self.lines.append((time.monotonic(), json.loads(line)))
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.client.close()

    def types(self, since: float = 0.0) -> list[str]:
        return [line["type"] for at, line in self.lines if at >= since]

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["object"]["metadata"].get("name", "")) for _, e in self.lines if e["type"] != "BOOKMARK"]


def list_rv(kube: httpx.Client, path: str) -> str:
    response = kube.get(path)
    assert response.status_code == 200
    return str(response.json()["metadata"]["resourceVersion"])


# --------------------------------------------------------------------------------------------
# Status answers.
# --------------------------------------------------------------------------------------------

QUOTA = 'secrets "x" is forbidden: exceeded quota: q, requested: count/secrets=1, used: count/secrets=10, limited: count/secrets=10'  # noqa: E501


def test_an_injected_fault_answers_a_status_as_the_apiserver_writes_it(
    cluster: FakeCluster, kube: httpx.Client
) -> None:
    fault = cluster.inject(verb="create", resource="secrets", status=403, reason="Forbidden", message=QUOTA)
    response = kube.post(SECRETS, json={"metadata": {"name": "x"}, "stringData": {"k": "v"}})

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": QUOTA,
        "reason": "Forbidden",
        "details": {"name": "x", "kind": "secrets"},
        "code": 403,
    }
    assert fault.hits == 1
    assert fault.active
    assert cluster.get("v1", "secrets", NS, "x") is None
    # Counted like any request; other verbs and resources are untouched.
    assert cluster.request_counts() == {("create", "secrets"): 1}
    assert cluster.write_counts() == {("secrets", "POST"): 1}
    assert kube.get(SECRETS).status_code == 200
    assert kube.post(CONFIGMAPS, json=configmap("cm")).status_code == 201
    assert fault.hits == 1

    fault.remove()
    assert not fault.active
    assert fault.removed
    assert cluster.faults() == []
    assert kube.post(SECRETS, json={"metadata": {"name": "x"}}).status_code == 201
    assert fault.hits == 1


def test_default_reasons_and_messages_follow_the_status(cluster: FakeCluster, kube: httpx.Client) -> None:
    cluster.inject(verb="get", resource="configmaps", status=500)
    cluster.inject(verb="list", resource="configmaps", status=503)
    got = kube.get(f"{CONFIGMAPS}/one").json()
    assert (got["code"], got["reason"], got["details"]) == (500, "InternalError", {"name": "one", "kind": "configmaps"})
    assert "one" in got["message"]
    listed = kube.get(CONFIGMAPS).json()
    assert (listed["code"], listed["reason"], listed["details"]) == (503, "ServiceUnavailable", {"kind": "configmaps"})


def test_times_limits_how_many_requests_a_fault_catches(cluster: FakeCluster, kube: httpx.Client) -> None:
    fault = cluster.inject(verb="create", resource="configmaps", status=500, times=2)
    statuses = [kube.post(CONFIGMAPS, json=configmap(f"cm{i}")).status_code for i in range(3)]
    assert statuses == [500, 500, 201]
    assert fault.hits == 2
    assert not fault.active
    assert cluster.faults() == []
    assert cluster.request_counts() == {("create", "configmaps"): 3}


def test_faults_match_on_verb_resource_subresource_group_namespace_name_and_client(
    cluster: FakeCluster, kube: httpx.Client
) -> None:
    for name in ("a", "b"):
        assert kube.post(CCS, json={"metadata": {"name": name}, "spec": {}}).status_code == 201
    status = cluster.inject(verb="patch", resource="clientcredentials/status", status=409, name="a")
    assert (status.resource, status.subresource) == ("clientcredentials", "status")
    assert kube.patch(f"{CCS}/a/status", json={"status": {"x": 1}}, headers=MERGE).status_code == 409
    assert kube.patch(f"{CCS}/b/status", json={"status": {"x": 1}}, headers=MERGE).status_code == 200  # name
    assert kube.patch(f"{CCS}/a", json={"spec": {"x": 1}}, headers=MERGE).status_code == 200  # main resource
    assert status.hits == 1
    status.remove()

    main = cluster.inject(verb="patch", resource="clientcredentials", status=500)
    assert kube.patch(f"{CCS}/a/status", json={"status": {"x": 2}}, headers=MERGE).status_code == 200
    assert kube.patch(f"{CCS}/a", json={"spec": {"x": 2}}, headers=MERGE).status_code == 500
    main.remove()

    anywhere = cluster.inject(verb="patch", resource="clientcredentials", subresource="*", status=500)
    assert kube.patch(f"{CCS}/a/status", json={"status": {"x": 3}}, headers=MERGE).status_code == 500
    assert kube.patch(f"{CCS}/a", json={"spec": {"x": 3}}, headers=MERGE).status_code == 500
    anywhere.remove()

    elsewhere = cluster.inject(resource="configmaps", namespace="other", status=500)
    operator_only = cluster.inject(resource="configmaps", client="tokensync", status=500)
    wrong_group = cluster.inject(resource="configmaps", group="apps", status=500)
    assert kube.get(CONFIGMAPS).status_code == 200
    assert kube.get("/api/v1/namespaces/other/configmaps").status_code == 500
    with connect(cluster, "tokensync") as operator:
        assert operator.get(CONFIGMAPS).status_code == 500
    assert (elsewhere.hits, operator_only.hits, wrong_group.hits) == (1, 1, 0)
    cluster.clear_faults()

    everything = cluster.inject(status=503)  # no resource: any resource and subresource
    assert kube.patch(f"{CCS}/a/status", json={"status": {"x": 4}}, headers=MERGE).status_code == 503
    assert kube.get(SECRETS).status_code == 503
    assert kube.get("/version").status_code == 200  # not a resource request
    assert everything.hits == 2


def test_a_fault_can_ask_the_client_to_retry_after(cluster: FakeCluster, kube: httpx.Client) -> None:
    cluster.inject(verb="list", resource="secrets", status=429, retry_after=7)
    response = kube.get(SECRETS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    body = response.json()
    assert (body["reason"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 7)


def test_a_fault_on_watch_answers_the_watch_request_with_its_status(cluster: FakeCluster, kube: httpx.Client) -> None:
    fault = cluster.inject(verb="watch", resource="configmaps", status=500)
    response = kube.get(CONFIGMAPS, params={"watch": "1", "timeoutSeconds": "5"})
    assert response.status_code == 500
    assert response.json()["kind"] == "Status"
    assert kube.get(CONFIGMAPS).status_code == 200  # a list is not a watch
    assert fault.hits == 1
    assert cluster.request_counts() == {("watch", "configmaps"): 1, ("list", "configmaps"): 1}


def test_inject_rejects_what_it_cannot_do(cluster: FakeCluster) -> None:
    with pytest.raises(ValueError, match="verb"):
        cluster.inject(verb="explode")
    with pytest.raises(ValueError, match="status"):
        cluster.inject(status=200)
    with pytest.raises(ValueError, match="times"):
        cluster.inject(times=0)
    with pytest.raises(ValueError, match="subresource"):
        cluster.inject(resource="clientcredentials/status", subresource="status")
    assert cluster.faults() == []


# --------------------------------------------------------------------------------------------
# Requests that get no answer.
# --------------------------------------------------------------------------------------------


def test_a_hanging_fault_holds_requests_until_it_is_removed_then_serves_them(
    cluster: FakeCluster, kube: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    fault = cluster.inject(verb="create", resource="configmaps", hang=True)
    pending = pool.submit(kube.post, CONFIGMAPS, json=configmap("held"))
    wait_for(lambda: fault.waiting == 1)
    assert stays_pending(pending)
    assert fault.hits == 1
    assert cluster.request_counts() == {("create", "configmaps"): 1}
    assert cluster.get("v1", "configmaps", NS, "held") is None
    assert kube.get(CONFIGMAPS).status_code == 200  # other verbs are served meanwhile

    fault.remove()
    assert pending.result(timeout=20).status_code == 201  # served as if nothing happened
    assert cluster.get("v1", "configmaps", NS, "held") is not None
    assert fault.waiting == 0


def test_a_client_that_gives_up_on_a_hanging_request_is_let_go(cluster: FakeCluster, kube: httpx.Client) -> None:
    fault = cluster.inject(hang=True, times=1)
    with pytest.raises(httpx.ReadTimeout):
        kube.get(CONFIGMAPS, timeout=0.5)
    wait_for(lambda: fault.waiting == 0)
    assert fault.hits == 1
    assert not fault.active  # used up: the next request is served at once
    assert cluster.faults() == [fault]  # but held ones would wait until it is removed
    assert kube.get(CONFIGMAPS).status_code == 200
    assert cluster.request_counts() == {("list", "configmaps"): 2}


def test_clear_faults_releases_held_requests(
    cluster: FakeCluster, kube: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    hang = cluster.inject(verb="list", hang=True)
    failing = cluster.inject(verb="get", status=500)
    pending = pool.submit(kube.get, CONFIGMAPS)
    wait_for(lambda: hang.waiting == 1)
    cluster.clear_faults()
    assert pending.result(timeout=20).status_code == 200
    assert kube.get(f"{CONFIGMAPS}/missing").status_code == 404
    assert (hang.removed, failing.removed, cluster.faults()) == (True, True, [])


def test_held_requests_end_when_the_cluster_stops(pool: ThreadPoolExecutor) -> None:
    fake = FakeCluster()
    fake.start()
    client = connect(fake)
    try:
        fault = fake.inject(hang=True)
        pending = pool.submit(client.get, CONFIGMAPS)
        wait_for(lambda: fault.waiting == 1)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 5
        # A 503, or a closed connection: either way the client is not left hanging.
        with contextlib.suppress(httpx.HTTPError):
            assert pending.result(timeout=20).status_code == 503
    finally:
        client.close()
        fake.stop()


# --------------------------------------------------------------------------------------------
# A frozen API server.
# --------------------------------------------------------------------------------------------


def test_a_freeze_holds_every_request_until_the_thaw(
    cluster: FakeCluster, kube: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    assert kube.post(CONFIGMAPS, json=configmap("before")).status_code == 201
    cluster.reset_counts()
    cluster.freeze()
    assert cluster.frozen
    held = [
        pool.submit(kube.get, CONFIGMAPS),
        pool.submit(kube.post, SECRETS, json={"metadata": {"name": "s"}}),
        pool.submit(kube.get, "/version"),  # not a resource request: held too
    ]
    wait_for(lambda: cluster.request_counts() == {("list", "configmaps"): 1, ("create", "secrets"): 1})
    assert all(stays_pending(future, QUIET / 3) for future in held)
    # Tests can still look: the inspection methods and the request counts over HTTP answer.
    assert [cm["metadata"]["name"] for cm in cluster.list("v1", "configmaps")] == ["before"]
    assert httpx.get(cluster.url + "/_devcluster/requests", trust_env=False).status_code == 200
    assert cluster.get("v1", "secrets", NS, "s") is None

    cluster.thaw()
    assert not cluster.frozen
    assert [future.result(timeout=20).status_code for future in held] == [200, 201, 200]
    assert cluster.get("v1", "secrets", NS, "s") is not None


def test_a_freeze_holds_open_watch_streams_and_delivers_what_happened_after_the_thaw(
    cluster: FakeCluster, kube: httpx.Client
) -> None:
    rv = list_rv(kube, CONFIGMAPS)
    # A 1 s watch with 0.3 s bookmarks: while frozen it must send neither events, bookmarks nor its end.
    watch = WatchReader(cluster, CONFIGMAPS, resourceVersion=rv, timeoutSeconds="1", allowWatchBookmarks="true")
    watch.start()
    wait_for(lambda: "BOOKMARK" in watch.types())  # streaming
    cluster.freeze(client="watcher")  # only the watcher's client: the test can still write
    frozen_at = time.monotonic()
    assert kube.post(CONFIGMAPS, json=configmap("during")).status_code == 201
    time.sleep(QUIET + 0.5)  # past the watch's timeout and several bookmark intervals
    assert watch.types(since=frozen_at) == []
    assert watch.ended is None
    assert cluster.open_watches("configmaps") == 1

    thawed_at = time.monotonic()
    cluster.thaw()
    wait_for(lambda: watch.ended is not None)
    assert watch.error is None
    assert watch.events() == [("ADDED", "during")]
    after = watch.types(since=thawed_at)
    assert after[0] == "ADDED"
    assert after[-1] == "BOOKMARK"  # the closing bookmark, after the held event


def test_a_new_watch_of_a_frozen_client_waits_for_the_thaw(cluster: FakeCluster, kube: httpx.Client) -> None:
    rv = list_rv(kube, CONFIGMAPS)
    cluster.freeze(client="watcher")
    watch = WatchReader(cluster, CONFIGMAPS, resourceVersion=rv, timeoutSeconds="2")
    watch.start()
    wait_for(lambda: cluster.request_counts().get(("watch", "configmaps")) == 1)
    assert kube.post(CONFIGMAPS, json=configmap("meanwhile")).status_code == 201
    time.sleep(QUIET)
    assert watch.lines == []
    cluster.thaw()
    wait_for(lambda: watch.events() == [("ADDED", "meanwhile")])


# --------------------------------------------------------------------------------------------
# Watches that expire or break.
# --------------------------------------------------------------------------------------------


def test_expired_watches_get_a_410_error_event_and_older_versions_are_gone(
    cluster: FakeCluster, kube: httpx.Client
) -> None:
    old_rv = list_rv(kube, CONFIGMAPS)
    watch = WatchReader(cluster, CONFIGMAPS, resourceVersion=old_rv, timeoutSeconds="60")
    watch.start()
    wait_for(lambda: cluster.open_watches("configmaps") == 1)
    assert kube.post(CONFIGMAPS, json=configmap("seen")).status_code == 201
    wait_for(lambda: watch.events() == [("ADDED", "seen")])

    assert cluster.expire_watches("configmaps") == 1
    wait_for(lambda: watch.ended is not None)
    assert watch.error is None  # a clean end after the ERROR event, as the apiserver does it
    kind, error = watch.lines[-1][1]["type"], watch.lines[-1][1]["object"]
    assert kind == "ERROR"
    assert (error["kind"], error["status"], error["code"], error["reason"]) == ("Status", "Failure", 410, "Expired")
    assert "too old resource version" in error["message"]
    assert cluster.open_watches("configmaps") == 0

    # Resuming from what the client saw is too old now: it must list again.
    resumed = kube.get(CONFIGMAPS, params={"watch": "1", "resourceVersion": old_rv, "timeoutSeconds": "5"})
    [line] = [json.loads(text) for text in resumed.text.splitlines() if text.strip()]
    assert (line["type"], line["object"]["code"]) == ("ERROR", 410)
    # A watch from a fresh list works.
    fresh = WatchReader(cluster, CONFIGMAPS, resourceVersion=list_rv(kube, CONFIGMAPS), timeoutSeconds="60")
    fresh.start()
    wait_for(lambda: cluster.open_watches("configmaps") == 1)
    assert kube.post(CONFIGMAPS, json=configmap("after")).status_code == 201
    wait_for(lambda: fresh.events() == [("ADDED", "after")])
    assert cluster.expire_watches("secrets") == 0  # other resources are untouched
    assert cluster.open_watches("configmaps") == 1
    cluster.expire_watches("configmaps")
    wait_for(lambda: fresh.ended is not None)


def test_dropped_watches_are_cut_off_abruptly_and_can_resume(cluster: FakeCluster, kube: httpx.Client) -> None:
    rv = list_rv(kube, CONFIGMAPS)
    watch = WatchReader(cluster, CONFIGMAPS, resourceVersion=rv, timeoutSeconds="60")
    other = WatchReader(cluster, SECRETS, resourceVersion=rv, timeoutSeconds="60")
    watch.start()
    other.start()
    wait_for(lambda: cluster.open_watches() == 2)
    assert kube.post(CONFIGMAPS, json=configmap("one")).status_code == 201
    wait_for(lambda: watch.events() == [("ADDED", "one")])
    last_seen = watch.lines[-1][1]["object"]["metadata"]["resourceVersion"]

    assert cluster.drop_watches("configmaps") == 1
    wait_for(lambda: watch.ended is not None)
    # No terminating chunk: the client sees a broken stream, not an end.
    assert isinstance(watch.error, httpx.RemoteProtocolError)
    assert cluster.open_watches("configmaps") == 0
    assert other.ended is None  # the Secrets watch goes on

    # Unlike an expiry, the client may resume from what it saw, and misses nothing.
    assert kube.post(CONFIGMAPS, json=configmap("two")).status_code == 201
    resumed = WatchReader(cluster, CONFIGMAPS, resourceVersion=last_seen, timeoutSeconds="60")
    resumed.start()
    wait_for(lambda: resumed.events() == [("ADDED", "two")])
    assert cluster.handler.watch_connections["configmaps"] == 2
    cluster.drop_watches("configmaps")
    cluster.drop_watches("secrets")
    wait_for(lambda: resumed.ended is not None and other.ended is not None)
