"""The controller: watch events in, resource keys through one work queue, reconcile rounds out.

Four caches feed it (see ``informer.py`` and ``references.py``):

- ClientCredentials, compacted to what a round reads;
- target Secrets, by the server-side label selector ``app.kubernetes.io/managed-by=tokensync``;
- the metadata of all Secrets and ConfigMaps, with the data of only those a resource refers to.

An event enqueues the keys it concerns — a new generation or refresh request of a resource,
a change of a Secret or ConfigMap that some resource reads or writes (not our own write) —
and a bounded pool of workers runs rounds (``reconciler.py``), each key by one worker at a
time. A round returns when it wants to run next; the queue re-adds the key then. No
finalizer: the target Secret's ownerReference lets the garbage collector clean up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import models
from .core import Clock
from .informer import Informer, Key, serving
from .issuer import Issuer
from .kubeapi import CLIENTCREDENTIALS, CONFIGMAPS, SECRETS, JsonDict, KubeClient, KubeError
from .metrics import Metrics
from .reconciler import REFRESH_ANNOTATION, EventSink, Reconciler, Record, seconds_until
from .references import Loaded, Pending, ReferencedObjects, newer_or_same, resource_version
from .secrets import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from .workqueue import ShutDown, WorkQueue

logger = logging.getLogger("tokensync.controller")

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
#: What tokensync's kopf-based versions left on resources: removed once, on the first round.
LEGACY_FINALIZER = f"{models.GROUP}/finalizer"
LEGACY_ANNOTATIONS = (f"{models.GROUP}/last-handled-configuration", f"{models.GROUP}/keep-fresh")
#: Annotations of a ClientCredential that the operator reads; the others are not kept in memory.
KEPT_ANNOTATIONS = (REFRESH_ANNOTATION, *LEGACY_ANNOTATIONS)

Dependency = tuple[str, str, str]  # (kind: "target" | "Secret" | "ConfigMap", namespace, name)


def compact_resource(obj: JsonDict, *, keep_status: bool = True) -> JsonDict:
    """A ClientCredential as the cache keeps it: no managedFields, no other tools' annotations.

    Without ``keep_status`` the status is left out: once a resource has a record, the record
    holds the status as last written, and a second copy per resource would only cost memory.
    """
    meta = obj.get("metadata") or {}
    kept: JsonDict = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "generation": meta.get("generation"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in KEPT_ANNOTATIONS}
    if annotations:
        kept["annotations"] = annotations
    if LEGACY_FINALIZER in (meta.get("finalizers") or []):
        kept["finalizers"] = meta["finalizers"]
    if meta.get("deletionTimestamp"):
        kept["deletionTimestamp"] = meta["deletionTimestamp"]
    compact = {"metadata": kept, "spec": obj.get("spec") or {}}
    if keep_status:
        compact["status"] = obj.get("status") or {}
    return compact


def compact_secret(obj: JsonDict) -> JsonDict:
    """A target Secret as the cache keeps it: what ownership, reading and patching need."""
    meta = obj.get("metadata") or {}
    kept = {
        k: meta[k]
        for k in ("name", "namespace", "resourceVersion", "labels", "annotations", "ownerReferences")
        if k in meta
    }
    return {"metadata": kept, "type": obj.get("type"), "data": obj.get("data") or {}}


def dependencies(resource: Mapping[str, Any]) -> frozenset[Dependency]:
    """The objects a resource reads or writes, from its raw spec (defaults as in ``models``)."""
    meta, spec = resource.get("metadata") or {}, resource.get("spec") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    found: set[Dependency] = {("target", namespace, (spec.get("target") or {}).get("name") or name)}
    credentials = (spec.get("credentialsRef") or {}).get("name")
    if credentials:
        found.add(("Secret", namespace, credentials))
    ca = spec.get("caBundleRef") or {}
    if ca.get("name"):
        found.add((ca.get("kind") or "ConfigMap", namespace, ca["name"]))
    return frozenset(found)


def news_key(resource: Mapping[str, Any]) -> tuple[Any, Any]:
    """What makes an event about a resource worth a round: its generation and refresh request."""
    meta = resource.get("metadata") or {}
    return meta.get("generation"), (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)


def renewal_order(resource: Mapping[str, Any]) -> str:
    """A sort key: the status's renewalTime (RFC 3339 UTC sorts as text); "" when there is none."""
    renewal = (resource.get("status") or {}).get("renewalTime")
    return renewal if isinstance(renewal, str) else ""


def has_leftovers(resource: Mapping[str, Any]) -> bool:
    meta = resource.get("metadata") or {}
    return "finalizers" in meta or any(k in LEGACY_ANNOTATIONS for k in meta.get("annotations") or {})


class Controller:
    def __init__(
        self,
        client: KubeClient,
        issuer: Issuer,
        namespaces: tuple[str, ...],
        *,
        clock: Clock,
        post_event: EventSink,
        metrics: Metrics,
    ) -> None:
        self.client = client
        self.metrics = metrics
        scopes: tuple[str | None, ...] = namespaces or (None,)
        self.resources = [
            Informer[JsonDict](client, CLIENTCREDENTIALS, ns, transform=self._compact, on_event=self._resource_event)
            for ns in scopes
        ]
        self.targets = [
            Informer[JsonDict](
                client,
                SECRETS,
                ns,
                transform=compact_secret,
                on_event=self._target_event,
                label_selector=MANAGED_SELECTOR,
            )
            for ns in scopes
        ]
        self.secrets = ReferencedObjects(client, SECRETS, scopes, on_change=self._secret_changed)
        self.configmaps = ReferencedObjects(client, CONFIGMAPS, scopes, on_change=self._configmap_changed)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.records: dict[Key, Record] = {}
        self._depends_on: dict[Key, frozenset[Dependency]] = {}
        self._dependents: defaultdict[Dependency, set[Key]] = defaultdict(set)
        self.reconciler = Reconciler(client, issuer, clock=clock, post_event=post_event, metrics=metrics)
        self._clock = clock

    def _compact(self, obj: JsonDict) -> JsonDict:
        meta = obj.get("metadata") or {}
        record = self.records.get((meta.get("namespace") or "", meta.get("name") or ""))
        known = record is not None and record.status_json is not None and record.uid == meta.get("uid")
        return compact_resource(obj, keep_status=not known)

    @property
    def informers(self) -> list[Informer[Any]]:
        return [*self.resources, *self.targets, *self.secrets.informers, *self.configmaps.informers]

    # Sources: what a round reads ----------------------------------------------------------------

    def resource(self, key: Key) -> JsonDict | None:
        informer = serving(self.resources, key[0])
        return informer.store.get(key) if informer else None

    def target(self, key: Key) -> JsonDict | None:
        informer = serving(self.targets, key[0])
        return informer.store.get(key) if informer else None

    def remember_secret(self, secret: JsonDict) -> None:
        meta = secret.get("metadata") or {}
        informer = serving(self.targets, meta.get("namespace") or "")
        if informer is None or (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE:
            return
        key = (meta.get("namespace") or "", meta.get("name") or "")
        cached = informer.store.get(key)
        version = str(meta.get("resourceVersion") or "")
        if cached is None or newer_or_same(version, resource_version(cached)):
            informer.store[key] = compact_secret(secret)

    def secret_version(self, key: Key) -> str | None:
        return self.secrets.version(key)

    def secret_data(self, key: Key) -> Loaded | None:
        return self.secrets.data(key)

    def configmap_version(self, key: Key) -> str | None:
        return self.configmaps.version(key)

    def configmap_data(self, key: Key) -> Loaded | None:
        return self.configmaps.data(key)

    # events in ------------------------------------------------------------------------------

    def _resource_event(self, kind: str, key: Key, resource: JsonDict | None) -> None:
        if resource is None:  # deleted: the garbage collector takes the Secret (ownerReference)
            self._forget(key)
            return
        record = self.records.get(key)
        meta = resource["metadata"]
        if (
            record is None
            or record.uid != meta.get("uid")
            or record.seen != news_key(resource)
            or has_leftovers(resource)
        ):
            self.queue.add(key)

    def _target_event(self, kind: str, key: Key, secret: JsonDict | None) -> None:
        version = resource_version(secret) if secret is not None else None
        for dependent in self._dependents.get(("target", *key), ()):
            record = self.records.get(dependent)
            if record is None or version is None or record.secret_version != version:
                self.queue.add(dependent)

    def _secret_changed(self, kind: str, key: Key) -> None:
        self._wake(("Secret", *key))
        if kind in ("ADDED", "DELETED"):
            # A Secret without our label (a foreign one in the target's place) appearing or going:
            # the label-selected cache cannot see it, the metadata cache can.
            self._wake(("target", *key))

    def _configmap_changed(self, kind: str, key: Key) -> None:
        self._wake(("ConfigMap", *key))

    def _wake(self, dependency: Dependency) -> None:
        for dependent in self._dependents.get(dependency, ()):
            self.queue.add(dependent)

    def _track(self, key: Key, found: frozenset[Dependency]) -> None:
        before = self._depends_on.get(key, frozenset())
        if found == before:
            return
        for dependency in before - found:
            self._untrack(key, dependency)
        for dependency in found - before:
            self._dependents[dependency].add(key)
        self._depends_on[key] = found

    def _untrack(self, key: Key, dependency: Dependency) -> None:
        dependents = self._dependents.get(dependency)
        if dependents is None:
            return
        dependents.discard(key)
        if not dependents:
            del self._dependents[dependency]
            kind, namespace, name = dependency
            if kind == "Secret":
                self.secrets.release((namespace, name))
            elif kind == "ConfigMap":
                self.configmaps.release((namespace, name))

    def _forget(self, key: Key) -> None:
        self.records.pop(key, None)
        for dependency in self._depends_on.pop(key, frozenset()):
            self._untrack(key, dependency)
        self.queue.drop(key)
        self.metrics.resource_gone(*key)

    # work -------------------------------------------------------------------------------------

    def enqueue_all(self) -> None:
        """Every known resource gets a round (a new leader starts from the caches), after any key
        that an event queued: a resource created during a failover is not served last.

        Soonest renewal first (none known: first of all), so that after a restart with thousands
        of resources the tokens closest to expiry are not refreshed after those with an hour left.
        """
        keys = [
            (renewal_order(resource), key) for informer in self.resources for key, resource in informer.store.items()
        ]
        for _, key in sorted(keys):
            self.queue.add(key, bulk=True)

    async def run_workers(self, count: int) -> None:
        """Run ``count`` workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(self._worker())

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: Key) -> None:
        """One round for ``key``; errors are contained: logged once and retried with backoff."""
        resource = self.resource(key)
        if resource is None:
            return
        meta = resource["metadata"]
        record = self.records.get(key)
        if record is None or record.uid != meta.get("uid"):
            record = self.records[key] = Record(uid=meta.get("uid") or "")
        record.seen = news_key(resource)
        where = {"resource": f"{key[0]}/{key[1]}"}
        try:
            if has_leftovers(resource):
                await self._remove_leftovers(resource)
            if meta.get("deletionTimestamp"):
                return
            self._track(key, dependencies(resource))
            wake_at = await self.reconciler.reconcile(resource, record, self)
        except Pending:
            self.metrics.reconciled("pending")
            return  # the fetch re-queues the key when the data is in
        except KubeError as exc:
            delay = self.queue.retry(key)
            self.metrics.reconciled("error")
            logger.warning("Kubernetes API error, retrying in %.0fs: %s", delay, exc, extra=where)
            return
        except Exception:
            delay = self.queue.retry(key)
            self.metrics.reconciled("error")
            logger.exception("Unexpected error, retrying in %.0fs.", delay, extra=where)
            return
        self.metrics.reconciled("ok")
        self.queue.forget(key)
        self._schedule(key, wake_at)
        logger.debug("Round done; next at %s.", wake_at.isoformat() if wake_at else "the next change", extra=where)

    def _schedule(self, key: Key, wake_at: datetime | None) -> None:
        delay = seconds_until(wake_at, self._clock())
        if delay is None:
            self.queue.unschedule(key)
        else:
            self.queue.schedule(key, delay)

    async def _remove_leftovers(self, resource: JsonDict) -> None:
        """Take off what the kopf-based versions left (their finalizer would block deletion forever)."""
        meta = resource["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != LEGACY_FINALIZER]
        patch: JsonDict = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {k: None for k in LEGACY_ANNOTATIONS if k in (meta.get("annotations") or {})},
            }
        }
        if "finalizers" in meta:
            patch["metadata"]["finalizers"] = finalizers or None
        try:
            await self.client.merge_patch(CLIENTCREDENTIALS, meta["namespace"], meta["name"], patch)
        except KubeError as exc:
            if not (exc.conflict or exc.not_found):
                raise
            return  # a newer version is on its way through the watch; its round tries again
        logger.info(
            "Removed the finalizer and annotations left by tokensync 0.1.",
            extra={"resource": f"{meta['namespace']}/{meta['name']}"},
        )
