"""A small Kubernetes API client for the bench (httpx, no auth: the stand-in has none), and object bodies.

The bench talks to the API directly rather than through the kubernetes client: it is lighter, and
the bench must know exactly which requests it sends, since the stand-in counts every request.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import httpx

JsonDict = dict[str, Any]

CC_GROUP, CC_VERSION, CC_PLURAL = "tokensync.io", "v1alpha1", "clientcredentials"
REFRESH_ANNOTATION = "tokensync.io/refresh-requested-at"
GROUP_LABEL = "bench.tokensync.io/group"  # on everything the bench creates, to find or delete a group
HELM_SECRET_TYPE = "helm.sh/release.v1"


def cc_path(namespace: str | None = None, name: str | None = None) -> str:
    base = f"/apis/{CC_GROUP}/{CC_VERSION}"
    path = f"{base}/namespaces/{namespace}/{CC_PLURAL}" if namespace else f"{base}/{CC_PLURAL}"
    return f"{path}/{name}" if name else path


def core_path(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}" if namespace else f"/api/v1/{plural}"
    return f"{path}/{name}" if name else path


def lease_path(namespace: str, name: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"


class ApiError(RuntimeError):
    pass


class Api:
    """Blocking JSON calls to the stand-in; safe to share between threads (httpx pools connections)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        # trust_env=False: no proxy from the environment; every request stays on 127.0.0.1.
        self.http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(60.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
            trust_env=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> JsonDict:
        if response.status_code >= 400:
            request = response.request
            raise ApiError(f"{request.method} {request.url.path}: {response.status_code} {response.text[:300]}")
        body: JsonDict = response.json()
        return body

    def create(self, path: str, body: JsonDict) -> JsonDict:
        return self._json(self.http.post(path, json=body))

    def get(self, path: str) -> JsonDict | None:
        response = self.http.get(path)
        return None if response.status_code == 404 else self._json(response)

    def list_objects(self, path: str, **params: str) -> JsonDict:
        return self._json(self.http.get(path, params=params))

    def merge_patch(self, path: str, patch: JsonDict) -> JsonDict:
        headers = {"Content-Type": "application/merge-patch+json"}
        return self._json(self.http.patch(path, content=json.dumps(patch), headers=headers))

    def delete_collection(self, path: str, label_selector: str) -> None:
        self._json(self.http.delete(path, params={"labelSelector": label_selector}))

    def create_many(self, items: Iterable[tuple[str, JsonDict]], concurrency: int) -> dict[str, float]:
        """Create objects with ``concurrency`` requests in flight; returns when each create was sent."""
        sent: dict[str, float] = {}

        def one(item: tuple[str, JsonDict]) -> None:
            path, body = item
            sent[object_key(body)] = time.monotonic()
            self.create(path, body)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for _ in pool.map(one, items):
                pass
        return sent

    # The stand-in's request accounting (not a resource URL, so it does not count itself).

    def request_counts(self) -> list[JsonDict]:
        rows: list[JsonDict] = self._json(self.http.get("/_devcluster/requests"))["requests"]
        return rows

    def reset_request_counts(self) -> None:
        response = self.http.delete("/_devcluster/requests")
        if response.status_code >= 400:
            raise ApiError(f"DELETE /_devcluster/requests: {response.status_code}")

    def has_request_accounting(self) -> bool:
        return self.http.get("/_devcluster/requests").status_code == 200


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def is_ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# ----- bodies -----


def namespace(name: str) -> JsonDict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def credentials_secret(ns: str, name: str, client_id: str, client_secret: str, group: str) -> JsonDict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": {GROUP_LABEL: group}},
        "type": "Opaque",
        "data": {"clientId": _b64(client_id), "clientSecret": _b64(client_secret)},
    }


def ca_configmap(ns: str, name: str, ca_pem: str) -> JsonDict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {GROUP_LABEL: "ca"}},
        "data": {"ca.crt": ca_pem},
    }


def client_credential(ns: str, name: str, token_url: str, credentials: str, ca: str, group: str) -> JsonDict:
    return {
        "apiVersion": f"{CC_GROUP}/{CC_VERSION}",
        "kind": "ClientCredential",
        "metadata": {"name": name, "namespace": ns, "labels": {GROUP_LABEL: group}},
        "spec": {
            "tokenURL": token_url,
            "credentialsRef": {"name": credentials},
            "caBundleRef": {"kind": "ConfigMap", "name": ca, "key": "ca.crt"},
        },
    }


def helm_release_secret(ns: str, index: int, size: int) -> JsonDict:
    """What Helm stores per release revision: a big, opaque, unrelated Secret (random, so incompressible)."""
    release = f"app-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"sh.helm.release.v1.{release}.v1",
            "namespace": ns,
            "labels": {"owner": "helm", "name": release, "status": "deployed", GROUP_LABEL: "unrelated"},
        },
        "type": HELM_SECRET_TYPE,
        "data": {"release": _b64(os.urandom(size))},
    }


def secret_expiry(secret: Mapping[str, Any] | None) -> str | None:
    """The ``expiresAt`` the operator wrote into a target Secret (RFC 3339), if any."""
    data = (secret or {}).get("data") or {}
    return base64.b64decode(data["expiresAt"]).decode() if "expiresAt" in data else None


# ----- watching readiness -----


class ReadyTracker:
    """Watches every ClientCredential and notes when each first turns Ready (a thread of its own).

    Only used outside measured windows: its LIST and WATCH requests count in the stand-in too.
    """

    def __init__(self, api: Api) -> None:
        self.api = api
        self.ready_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rv = ""
        self.error: BaseException | None = None

    def __enter__(self) -> Self:
        self._relist()
        self._thread = threading.Thread(target=self._run, name="ready-tracker", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _observe(self, obj: Mapping[str, Any], now: float) -> None:
        if is_ready(obj):
            with self._lock:
                self.ready_at.setdefault(object_key(obj), now)

    def _relist(self) -> None:
        listing = self.api.list_objects(cc_path())
        now = time.monotonic()
        for item in listing.get("items") or []:
            self._observe(item, now)
        self._rv = str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        # Short server-side timeouts: the thread notices a stop request within a couple of seconds.
        # No bookmarks: resuming only from events actually seen cannot skip an event (the stand-in's
        # closing bookmark can carry a resourceVersion past events still queued for the stream).
        params = {"watch": "true", "timeoutSeconds": "2"}
        try:
            while not self._stop.is_set():
                with self.api.http.stream("GET", cc_path(), params={**params, "resourceVersion": self._rv}) as response:
                    if response.status_code >= 400:
                        raise ApiError(f"watch: {response.status_code}")
                    for line in response.iter_lines():
                        if line.strip():
                            self._event(json.loads(line))
        except BaseException as exc:  # reported to the waiting thread, which raises it
            self.error = exc

    def _event(self, event: Mapping[str, Any]) -> None:
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":  # 410 Gone: the event log moved on; start over from a LIST
            self._relist()
            return
        self._rv = str(obj.get("metadata", {}).get("resourceVersion", self._rv))
        if event.get("type") in ("ADDED", "MODIFIED"):
            self._observe(obj, time.monotonic())

    def ready(self, keys: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for key in keys if key in self.ready_at)

    def wait_ready(self, keys: list[str], timeout: float, what: str) -> float:
        """Wait until every key is Ready; returns the monotonic time the last one turned Ready."""
        wait_until(
            lambda: self.ready(keys) == len(keys),
            timeout,
            lambda: f"{what}: {self.ready(keys)}/{len(keys)} Ready",
            check=self._check,
        )
        with self._lock:
            return max(self.ready_at[key] for key in keys)

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the readiness watch failed") from self.error


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    describe: Callable[[], str] | str,
    *,
    interval: float = 0.1,
    check: Callable[[], None] | None = None,
) -> float:
    """Poll ``condition`` until it holds (returns the seconds waited) or raise TimeoutError with a description."""
    started = time.monotonic()
    while True:
        if check is not None:
            check()
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            text = describe() if callable(describe) else describe
            raise TimeoutError(f"{text} (gave up after {timeout:.0f}s)")
        time.sleep(interval)
