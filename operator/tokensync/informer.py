"""Informers: a local, compact copy of one kind of object, kept current by list + watch.

As client-go's reflector does it: list once (paged), then watch from the list's
resourceVersion with bookmarks; when the server ends the stream, watch again from the last
resourceVersion seen (no relist); relist only when the server says that version is gone
(410). A silent connection is replaced after a timeout. Every object passes through a
``transform`` before it is stored, so the cache holds only what the operator reads
(managedFields and other tools' annotations never stay in memory).

Handlers run in the event loop, once per event, and must be cheap: they index and enqueue.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .kubeapi import JsonDict, KubeClient, KubeError, Resource

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)
#: (event type: ADDED | MODIFIED | DELETED, key, the stored object or None once deleted)
Handler = Callable[[str, Key, Any], None]

logger = logging.getLogger("tokensync.informer")

#: Server-side watch timeout; each watch picks a value in [WATCH_TIMEOUT, 2 x WATCH_TIMEOUT) so
#: many informers do not reconnect in lockstep.
WATCH_TIMEOUT = 300
#: No line at all (not even a bookmark) for this long past the server-side timeout: the connection is dead.
SILENCE_GRACE = 30.0
RETRY_BASE, RETRY_CAP = 1.0, 30.0


def retry_delay(failures: int) -> float:
    """Capped exponential backoff for a failing list or watch (failures >= 1)."""
    return float(min(RETRY_BASE * 2 ** min(failures - 1, 10), RETRY_CAP))


def object_key(obj: JsonDict) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def serving(informers: Iterable[Informer[T]], namespace: str) -> Informer[T] | None:
    """The informer whose scope covers ``namespace`` (one per namespace, or one for all)."""
    return next((i for i in informers if i.namespace in (None, namespace)), None)


class Informer(Generic[T]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespace: str | None,
        *,
        transform: Callable[[JsonDict], T],
        on_event: Handler,
        label_selector: str | None = None,
        metadata_only: bool = False,
        watch_timeout: int = WATCH_TIMEOUT,
    ) -> None:
        self._client = client
        self.resource = resource
        self.namespace = namespace
        self._transform = transform
        self._on_event = on_event
        self._label_selector = label_selector
        self._metadata_only = metadata_only
        self._watch_timeout = watch_timeout
        self.store: dict[Key, T] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.where = f"{resource.plural} in {namespace}" if namespace else f"{resource.plural} (all namespaces)"

    async def run(self) -> None:
        """List and watch until cancelled; errors are logged and retried, never raised."""
        failures = 0
        while True:
            try:
                if not self.resource_version:
                    await self._relist()
                    self.synced.set()
                await self._watch()
                failures = 0
            except KubeError as exc:
                if exc.gone:  # the version we resume from was compacted away: start over
                    logger.debug("Watch of %s expired; relisting.", self.where)
                    self.resource_version = ""
                    continue
                failures += 1
                delay = retry_delay(failures)
                logger.warning("Watching %s failed (%s); retrying in %.0fs.", self.where, exc, delay)
                await asyncio.sleep(delay)
            except (ValueError, KeyError, TypeError) as exc:  # a garbled event: start over cleanly
                failures += 1
                logger.warning("Watching %s got a malformed event (%s); relisting.", self.where, type(exc).__name__)
                self.resource_version = ""
                await asyncio.sleep(retry_delay(failures))

    async def _relist(self) -> None:
        # Paged (500 a page), not one resourceVersion=0 answer from the watch cache: at 10,000
        # target Secrets that single answer is 25 MiB of JSON and ~100 MiB of transient objects,
        # enough to cross the pod's memory limit. A page costs a request, not memory.
        items, version = await self._client.list(
            self.resource, self.namespace, label_selector=self._label_selector, metadata_only=self._metadata_only
        )
        fresh = {object_key(obj): self._transform(obj) for obj in items}
        gone = [key for key in self.store if key not in fresh]
        self.store = fresh
        self.resource_version = version
        for key in gone:
            self._on_event("DELETED", key, None)
        for key, value in fresh.items():
            self._on_event("ADDED", key, value)

    async def _watch(self) -> None:
        timeout = self._watch_timeout + random.randrange(self._watch_timeout)  # noqa: S311 - spreading, not security
        events = self._client.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self._label_selector,
            metadata_only=self._metadata_only,
            timeout_seconds=timeout,
            silence_timeout=timeout + SILENCE_GRACE,
        )
        async for event in events:
            self._apply(event)

    def _apply(self, event: JsonDict) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            raise KubeError(
                int(obj.get("code") or 500), str(obj.get("reason") or "Error"), str(obj.get("message") or "")
            )
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK":
            key = object_key(obj)
            if kind == "DELETED":
                self.store.pop(key, None)
                self._on_event(kind, key, None)
            else:
                value = self._transform(obj)
                self.store[key] = value
                self._on_event(kind, key, value)
        if version:
            self.resource_version = str(version)
