"""The operator's Kubernetes API client: async, over httpx, with a timeout on every call.

Why not the ``kubernetes`` client for calls: it is synchronous (a thread per call), it has no
metadata-only lists or watches, and it keeps whole typed models per object. It is still used
for what it does well: reading a kubeconfig or the in-cluster service account
(``load_configuration``), including exec plugins and token rotation.

Objects travel as plain dicts (raw JSON). API errors become :class:`KubeError`, whose text is
built from the Status body's reason and message only: never from request or response bodies,
which may hold Secret data.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import kubernetes

from . import models

MERGE_PATCH = "application/merge-patch+json"
#: What a metadata-only client asks for (cert-manager's and client-go's metadata informers do the same).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
#: A single API call (not a watch) never takes longer than this.
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

JsonDict = dict[str, Any]


class KubeError(Exception):
    """A failed API call: ``status`` is the HTTP status (0: no answer), ``str()`` is safe to log."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"HTTP {status} {reason}: {message}"[:300] if status else f"{reason}: {message}"[:300])

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


def _error(response: httpx.Response) -> KubeError:
    reason, message = response.reason_phrase, ""
    try:
        body = response.json()
        reason = body.get("reason") or reason
        message = str(body.get("message") or "")
    except (ValueError, AttributeError):
        pass
    return KubeError(response.status_code, reason, message)


def _transport_error(exc: httpx.HTTPError) -> KubeError:
    # The class name says what failed (ConnectError, ReadTimeout...); httpx messages hold no bodies.
    return KubeError(0, type(exc).__name__, str(exc)[:200] or "no details")


@dataclass(frozen=True)
class Resource:
    """An API resource: where its objects live."""

    group: str  # "" for the core group
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


CLIENTCREDENTIALS = Resource(models.GROUP, models.VERSION, models.PLURAL)
SECRETS = Resource("", "v1", "secrets")
CONFIGMAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")
LEASES = Resource("coordination.k8s.io", "v1", "leases")


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def bearer_token(configuration: kubernetes.client.Configuration) -> str | None:
    """The current bearer token; the client's refresh hook re-reads a rotated service account token."""
    header: str | None = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    if not header:
        return None
    return header.split(" ", 1)[-1]


class _ConfigurationAuth(httpx.Auth):
    """Credentials from the kubernetes Configuration, looked up per request (tokens rotate)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = bearer_token(self._configuration)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        elif self._configuration.username and self._configuration.password:
            pair = f"{self._configuration.username}:{self._configuration.password}".encode()
            request.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        yield request


def _ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:  # the kubeconfig said insecure-skip-tls-verify
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeClient:
    """The API calls tokensync makes: a small connection pool for calls, and one for watches."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, max_connections: int = 10) -> None:
        verify = _ssl_context(configuration)  # built once: loading CA files is costly
        auth = _ConfigurationAuth(configuration)

        def client(limits: httpx.Limits) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=configuration.host,
                verify=verify,
                auth=auth,
                timeout=REQUEST_TIMEOUT,
                limits=limits,
                headers={"User-Agent": "tokensync"},
                trust_env=False,
            )

        # Calls and watches use two pools. A watch holds its connection for minutes, and the
        # pool's per-request cost grows with its idle connections (httpcore checks each one):
        # a small pool for calls keeps a burst cheap; watches get a connection each.
        self._http = client(httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))
        self._streams = client(httpx.Limits(max_connections=None, max_keepalive_connections=0))

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._streams.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> JsonDict:
        headers = {"Accept": accept}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body).encode()
        try:
            response = await self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        if response.status_code >= 400:
            raise _error(response)
        try:
            result: JsonDict = response.json()
        except ValueError:
            raise KubeError(
                response.status_code, "InvalidResponse", "the API answered with something not JSON"
            ) from None
        return result

    async def get(self, resource: Resource, namespace: str, name: str) -> JsonDict | None:
        try:
            return await self.request("GET", resource.path(namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        page_size: int = 500,
    ) -> tuple[list[JsonDict], str]:
        """All objects (paged, so a huge namespace never arrives as one response) and the list's resourceVersion."""
        params = {"limit": str(page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        items: list[JsonDict] = []
        while True:
            page = await self.request(
                "GET",
                resource.path(namespace),
                params=params,
                accept=METADATA_LIST if metadata_only else "application/json",
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            params["continue"] = meta["continue"]

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
        silence_timeout: float = 330.0,
    ) -> AsyncIterator[JsonDict]:
        """Watch events from ``resource_version`` until the server ends the stream.

        ``silence_timeout`` bounds the wait for the next line: the server sends bookmarks and
        closes the stream after ``timeout_seconds``, so a longer silence is a dead connection.
        """
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        headers = {"Accept": METADATA_ONE if metadata_only else "application/json"}
        timeout = httpx.Timeout(connect=10.0, read=silence_timeout, write=10.0, pool=10.0)
        try:
            async with self._streams.stream(
                "GET", resource.path(namespace), params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None

    async def create(self, resource: Resource, namespace: str, body: JsonDict) -> JsonDict:
        return await self.request("POST", resource.path(namespace), body=body)

    async def merge_patch(
        self, resource: Resource, namespace: str, name: str, patch: JsonDict, *, subresource: str | None = None
    ) -> JsonDict:
        # Merge patch, not strategic merge: lists (ownerReferences, finalizers) are replaced whole,
        # and the same patch type works for custom resources.
        return await self.request(
            "PATCH", resource.path(namespace, name, subresource), body=patch, content_type=MERGE_PATCH
        )

    async def replace(self, resource: Resource, namespace: str, name: str, body: JsonDict) -> JsonDict:
        return await self.request("PUT", resource.path(namespace, name), body=body)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", resource.path(namespace, name))
        except KubeError as exc:
            if not exc.not_found:
                raise

    # The calls the reconciler makes, named for what they do.

    async def get_secret(self, namespace: str, name: str) -> JsonDict | None:
        return await self.get(SECRETS, namespace, name)

    async def create_secret(self, namespace: str, body: JsonDict) -> JsonDict:
        return await self.create(SECRETS, namespace, body)

    async def patch_secret(self, namespace: str, name: str, patch: JsonDict) -> JsonDict:
        return await self.merge_patch(SECRETS, namespace, name, patch)

    async def patch_status(self, namespace: str, name: str, patch: JsonDict) -> JsonDict:
        return await self.merge_patch(CLIENTCREDENTIALS, namespace, name, {"status": patch}, subresource="status")
