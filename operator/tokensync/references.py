"""Referenced objects: credentials Secrets and CA bundles, cached like cert-manager caches them.

The operator must notice when a referenced Secret or ConfigMap appears, changes or goes, but
must never hold the data of the thousands of unrelated Secrets a cluster keeps (Helm release
Secrets reach 1 MiB each). So (cert-manager's design ``20221205-memory-management``):

- a *metadata-only* informer per kind keeps each object's resourceVersion, nothing else;
- the *data* of an object is fetched with one GET when a resource first needs it, and kept
  only while some resource refers to it; a new resourceVersion drops it (fetched again when
  needed), and the dependents are woken.

A lookup never blocks: it answers from memory, or starts the fetch and says "pending"; the
caller's round is re-queued when the data arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .informer import Informer, Key, retry_delay, serving
from .kubeapi import JsonDict, KubeClient, KubeError, Resource

logger = logging.getLogger("tokensync.references")


def resource_version(obj: JsonDict) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass(frozen=True, slots=True)
class Loaded:
    """An object's data as of ``version``."""

    version: str
    data: dict[str, str]


class Pending(Exception):
    """The data is being fetched; the round is re-run when it arrives."""


def newer_or_same(version: str, than: str) -> bool:
    # resourceVersions are opaque, but etcd revisions in practice: compare numerically when possible.
    if version.isdigit() and than.isdigit():
        return int(version) >= int(than)
    return version == than


class ReferencedObjects:
    """Secrets or ConfigMaps of the watched namespaces: versions of all, data of the referenced.

    ``on_change(kind, key)`` is called for every watch event (ADDED, MODIFIED, DELETED) and when
    fetched data arrives (LOADED); it decides whether anyone cares.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        namespaces: tuple[str | None, ...],
        *,
        on_change: Callable[[str, Key], None],
        data_field: str = "data",
        max_fetches: int = 8,
    ) -> None:
        self._client = client
        self.resource = resource
        self._on_change = on_change
        self._data_field = data_field
        self.informers = [
            Informer[str](
                client, resource, namespace, transform=resource_version, on_event=self._event, metadata_only=True
            )
            for namespace in namespaces
        ]
        self._loaded: dict[Key, Loaded] = {}
        self._fetching: dict[Key, asyncio.Task[None]] = {}
        self._failures: dict[Key, int] = {}
        #: Released while their fetch was in flight: the result is not kept.
        self._dropped: set[Key] = set()
        # A wave of new resources must not become a wave of concurrent GETs: the API client's
        # connection pool would queue them all (and time them out) and the loop would churn.
        self._fetch_slots = asyncio.Semaphore(max_fetches)

    def version(self, key: Key) -> str | None:
        """The object's resourceVersion, or None if it does not exist."""
        informer = serving(self.informers, key[0])
        return informer.store.get(key) if informer else None

    def data(self, key: Key) -> Loaded | None:
        """The current data, or None if the object does not exist; raises Pending while it is fetched."""
        version = self.version(key)
        if version is None:
            return None
        self._dropped.discard(key)
        loaded = self._loaded.get(key)
        if loaded is not None and newer_or_same(loaded.version, version):
            return loaded
        if key not in self._fetching:
            self._fetching[key] = asyncio.create_task(self._fetch(key))
        raise Pending

    def release(self, key: Key) -> None:
        """No resource refers to ``key`` any more: forget its data (and a fetch in flight's result)."""
        self._loaded.pop(key, None)
        if key in self._fetching:
            self._dropped.add(key)

    @property
    def loaded_count(self) -> int:
        return len(self._loaded)

    async def _fetch(self, key: Key) -> None:
        try:
            async with self._fetch_slots:
                obj = await self._client.get(self.resource, key[0], key[1])
        except KubeError as exc:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = retry_delay(failures)
            logger.warning("Reading %s %s/%s failed (%s); retrying in %.0fs.", self.resource.plural, *key, exc, delay)
            await asyncio.sleep(delay)  # then the dependents' next round asks again
            obj = None
        else:
            self._failures.pop(key, None)
        finally:
            self._fetching.pop(key, None)
            dropped = key in self._dropped
            self._dropped.discard(key)
        if obj is not None and not dropped:
            self._loaded[key] = Loaded(resource_version(obj), dict(obj.get(self._data_field) or {}))
        self._on_change("LOADED", key)

    def _event(self, kind: str, key: Key, version: Any) -> None:
        loaded = self._loaded.get(key)
        if kind == "DELETED":
            self._loaded.pop(key, None)
        elif loaded is not None and (version == loaded.version or newer_or_same(loaded.version, version)):
            return  # the version we already hold (our own fetch raced the watch)
        elif loaded is not None:
            del self._loaded[key]  # stale: fetched again when a dependent needs it
        self._on_change(kind, key)

    async def aclose(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
