"""The comparison baseline: a deliberately naive kopf operator. Not tokensync; it lives here only for the bench.

It does what a first kopf operator for this job typically does, and what tokensync must beat:

- a fixed timer per object (every ``NAIVE_INTERVAL`` seconds), whatever the token's lifetime;
- synchronous kubernetes-client and HTTP calls inline in async handlers (they block the event loop);
- reads its inputs (credentials, CA, target Secret) from the API on every round, no caches;
- a fresh exchange on every start: the timer fires at once for every object it sees;
- no sharing of identical credentials; kopf's default events and progress annotations.

Run: ``KUBECONFIG=... kopf run bench/naive_operator.py --all-namespaces`` (the bench does).
It serves the two metrics the bench reads from tokensync on ``NAIVE_METRICS_PORT``:
``tokensync_event_loop_lag_seconds``, and ``tokensync_reconcile_total``, which here counts objects
refreshed at least once since start (the bench waits for it to reach the number of objects after
a restart; a count of timer rounds would get there early, with some objects never reached).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import kopf
import kubernetes
from prometheus_client import Counter, Histogram, start_http_server

INTERVAL = float(os.environ.get("NAIVE_INTERVAL", "10"))
METRICS_PORT = int(os.environ.get("NAIVE_METRICS_PORT", "0"))
TICK = 0.1  # the lag probe's period

LOOP_LAG = Histogram(
    "tokensync_event_loop_lag_seconds",
    "How late a periodic event-loop tick ran.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILES = Counter("tokensync_reconcile_total", "Objects refreshed at least once since start.", ("result",))
ROUNDS = Counter("naive_timer_rounds_total", "Timer rounds.", ("result",))
_refreshed: set[str] = set()  # uids refreshed since start


async def _probe_loop_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(TICK)
        LOOP_LAG.observe(max(0.0, loop.time() - started - TICK))


@kopf.on.startup()
async def startup(memo: kopf.Memo, **_: Any) -> None:
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.core = kubernetes.client.CoreV1Api()
    if METRICS_PORT:
        start_http_server(METRICS_PORT, addr="127.0.0.1")
    memo.lag_probe = asyncio.create_task(_probe_loop_lag())


def _secret_value(secret: Any, key: str) -> str:
    return base64.b64decode(secret.data[key]).decode()


@kopf.timer("tokensync.io", "v1alpha1", "clientcredentials", interval=INTERVAL)
async def refresh(
    spec: kopf.Spec, name: str, namespace: str | None, uid: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    assert namespace is not None  # ClientCredentials are namespaced
    core = memo.core
    try:
        # Everything below blocks the event loop: the naive part.
        credentials = core.read_namespaced_secret(spec["credentialsRef"]["name"], namespace)
        ca_ref = spec["caBundleRef"]
        ca_pem = core.read_namespaced_config_map(ca_ref["name"], namespace).data[ca_ref.get("key", "ca.crt")]
        context = ssl.create_default_context(cadata=ca_pem)
        body = {key: _secret_value(credentials, key) for key in ("clientId", "clientSecret")}
        response = httpx.post(spec["tokenURL"], json=body, verify=context, timeout=30.0, trust_env=False)  # noqa: ASYNC210
        response.raise_for_status()
        token = response.json()
        expires = datetime.now(UTC) + timedelta(seconds=int(token["expiresIn"]))
        secret = {
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": {
                "accessToken": token["accessToken"],
                "tokenType": token["tokenType"],
                "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "scope": token["scope"],
            },
        }
        try:
            core.read_namespaced_secret(name, namespace)
            core.replace_namespaced_secret(name, namespace, secret)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            core.create_namespaced_secret(namespace, secret)
    except Exception:
        ROUNDS.labels(result="error").inc()
        raise
    ROUNDS.labels(result="success").inc()
    if uid not in _refreshed:
        _refreshed.add(uid)
        RECONCILES.labels(result="success").inc()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "", "lastTransitionTime": now}
    patch.status["conditions"] = [ready]
