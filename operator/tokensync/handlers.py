"""kopf wiring only: events in, a reconciler round per wake-up, status out.

One kopf daemon per ClientCredential sleeps until the policy's next wake-up
time (the renewal point, a retry, an expiry) or until something it depends on
changes. Changes arrive as watch events: the ClientCredential itself (a new
generation or a refresh request) and the Secrets it reads or writes. Those
handlers only poke the daemon; all decisions are in ``renewal.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import kopf

from . import models
from .core import utcnow
from .exchange import ClientPool
from .issuer import Issuer
from .kube import Kube, KubeError, bearer_token, load_configuration
from .metrics import Metrics
from .reconciler import REFRESH_ANNOTATION, Reconciler, ResourceState, seconds_until
from .settings import Settings
from .status import Event

Logger = logging.Logger | logging.LoggerAdapter[Any]

#: After an unexpected Kubernetes API error, look again after this long.
API_ERROR_RETRY = timedelta(seconds=10)


class Runtime:
    """Operator-wide state: the reconciler's dependencies and the per-resource wake-ups."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube = Kube(load_configuration(settings.kubeconfig))
        self.metrics = Metrics()
        self.issuer = Issuer(
            ClientPool(),
            settings.allowed_token_hosts,
            max_per_host=settings.max_exchanges_per_host,
            metrics=self.metrics,
        )
        self.states: dict[str, ResourceState] = {}
        #: (namespace, secret name) -> uids of the resources that read or write that Secret.
        self._by_secret: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self._secrets_of: dict[str, set[tuple[str, str]]] = {}
        #: uid -> (generation, refresh annotation) last seen, to tell news from our own status writes.
        self.seen: dict[str, tuple[Any, Any]] = {}

    def reconciler(self, logger: Logger) -> Reconciler:
        return Reconciler(
            self.kube, self.issuer, clock=utcnow, post_event=post_event, metrics=self.metrics, logger=logger
        )

    def track(self, uid: str, namespace: str, state: ResourceState) -> None:
        """Index the Secrets a resource depends on, so their events wake it."""
        keys = {(namespace, name) for name in state.watched_secrets}
        for key in self._secrets_of.get(uid, set()) - keys:
            self._by_secret[key].discard(uid)
        for key in keys:
            self._by_secret[key].add(uid)
        self._secrets_of[uid] = keys

    def forget(self, uid: str) -> None:
        for key in self._secrets_of.pop(uid, set()):
            self._by_secret[key].discard(uid)
            if not self._by_secret[key]:
                del self._by_secret[key]
        self.states.pop(uid, None)
        self.seen.pop(uid, None)

    def dependents(self, namespace: str, name: str) -> list[ResourceState]:
        uids = self._by_secret.get((namespace, name), set())
        return [self.states[uid] for uid in uids if uid in self.states]

    async def aclose(self) -> None:
        self.metrics.close()
        await self.issuer.aclose()


def post_event(body: Mapping[str, Any], event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message)  # type: ignore[arg-type]


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo["config"]
    # Our own names for kopf's bookkeeping, so it is clear who put them on the resource.
    settings.persistence.finalizer = f"{models.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=models.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=models.GROUP, key="last-handled-configuration"
    )
    # Only our explicit events (issued, refreshed, failed, recovered) become Kubernetes Events.
    settings.posting.loggers = False
    # Recycle watches now and then: a silently dead connection must not stop reactions for long.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    runtime = memo["runtime"] = Runtime(config)
    if config.metrics_port is not None:
        runtime.metrics.serve(config.metrics_port)


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf connects exactly as the operator's own API calls do (``--kubeconfig`` included)."""
    config: Settings = memo["config"]
    cfg = load_configuration(config.kubeconfig)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme="Bearer" if bearer_token(cfg) else None,
        token=bearer_token(cfg),
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        username=cfg.username or None,
        password=cfg.password or None,
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await _runtime(memo).aclose()


@kopf.daemon(models.GROUP, models.VERSION, models.PLURAL, id="keep-fresh", cancellation_timeout=5.0)
async def keep_fresh(
    body: kopf.Body,
    meta: kopf.Meta,
    memo: kopf.Memo,
    logger: Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    uid, namespace = meta["uid"], meta["namespace"]
    state = runtime.states.setdefault(uid, ResourceState())
    runtime.seen[uid] = _news_key(body)
    reconciler = runtime.reconciler(logger)
    try:
        while not stopped:
            state.wake.clear()  # before the round: a change during it wakes the next one
            try:
                wake_at = await reconciler.reconcile(body, state)
            except KubeError as exc:
                logger.warning("Kubernetes API error, retrying in %ss: %s", API_ERROR_RETRY.seconds, exc)
                wake_at = utcnow() + API_ERROR_RETRY
            runtime.track(uid, namespace, state)
            await _sleep(state.wake, stopped, seconds_until(wake_at, utcnow()))
    finally:
        runtime.forget(uid)
        runtime.metrics.resource_gone(namespace, meta["name"])


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float | None) -> None:
    """Sleep until ``delay`` passes, a change wakes us, or kopf stops the daemon."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _news_key(body: Mapping[str, Any]) -> tuple[Any, Any]:
    meta = body.get("metadata") or {}
    return meta.get("generation"), (meta.get("annotations") or {}).get(REFRESH_ANNOTATION)


def _is_news(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> bool:
    """A new generation or refresh request of a resource with a running daemon (not our own status write)."""
    uid = meta.get("uid")
    runtime: Runtime | None = memo.get("runtime")
    return bool(runtime and uid in runtime.states and runtime.seen.get(uid) != _news_key(body))


# The `when=` filters keep kopf from invoking (and logging) a handler for every unrelated event.
@kopf.on.event(models.GROUP, models.VERSION, models.PLURAL, when=_is_news)
async def resource_changed(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """A spec change or a refresh request wakes the resource's daemon.

    Async on purpose: kopf runs sync handlers in threads, and asyncio.Event is not thread-safe.
    """
    runtime = _runtime(memo)
    uid = meta["uid"]
    runtime.seen[uid] = _news_key(body)
    if uid in runtime.states:
        runtime.states[uid].wake.set()


def _is_dependency(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> bool:
    runtime: Runtime | None = memo.get("runtime")
    return bool(runtime and runtime.dependents(meta.get("namespace", ""), meta.get("name", "")))


@kopf.on.event("", "v1", "secrets", when=_is_dependency)
async def secret_changed(type: str | None, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Credential rotation, and deletion or tampering of a target Secret, wake the resources involved."""
    version = meta.get("resourceVersion")
    for state in _runtime(memo).dependents(meta.get("namespace", ""), meta.get("name", "")):
        if type == "DELETED" or version != state.secret_version:
            state.wake.set()
