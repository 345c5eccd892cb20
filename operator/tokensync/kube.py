"""Thin async access to the Kubernetes API through the official client.

The ``kubernetes`` client is synchronous; every call runs in a worker thread so
the operator's event loop never blocks. Objects travel as plain dicts (raw
JSON), and API errors become ``KubeError`` with a short message built from the
Status body only — an ApiException's own text carries headers and bodies that
may hold Secret data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from . import models

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """A failed API call: ``status`` is the HTTP status, ``str()`` is safe to log."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"HTTP {status} {reason}: {message}"[:300])

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def _kube_error(exc: ApiException) -> KubeError:
    reason, message = str(exc.reason or ""), ""
    try:
        body = json.loads(exc.body or "{}")
        reason = body.get("reason") or reason
        message = body.get("message") or ""
    except (ValueError, TypeError, AttributeError):
        pass
    return KubeError(int(exc.status or 0), reason, message)


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config).

    The operator's API calls and kopf's own login both come from here, so they can never
    point at two different clusters.
    """
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Many resources refresh at once after a restart: let the worker threads share enough connections.
    configuration.connection_pool_maxsize = 32
    return configuration


def bearer_token(configuration: kubernetes.client.Configuration) -> str | None:
    """The bearer token of a configuration (the client moved it between versions)."""
    header: str | None = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    if not header:
        return None
    return header.split(" ", 1)[-1]


class Kube:
    """The handful of API calls tokensync makes, each in a worker thread."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        api_client = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    @staticmethod
    async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            try:
                response = fn(*args, _preload_content=False, **kwargs)
            except ApiException as exc:
                raise _kube_error(exc) from None
            return json.loads(response.data)

        return await asyncio.to_thread(run)

    async def _get_or_none(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(fn, *args)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise
        return result

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(self.core.read_namespaced_secret, name, namespace)

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(self.core.read_namespaced_config_map, name, namespace)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(self.core.create_namespaced_secret, namespace, body)
        return result

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        # Merge patch, not the client's default strategic merge: lists (ownerReferences) must be
        # replaced whole, and the same patch type works for custom resources.
        result: dict[str, Any] = await self._call(
            self.core.patch_namespaced_secret, name, namespace, patch, _content_type=MERGE_PATCH
        )
        return result

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            models.GROUP,
            models.VERSION,
            namespace,
            models.PLURAL,
            name,
            {"status": patch},
            _content_type=MERGE_PATCH,
        )
        return result
