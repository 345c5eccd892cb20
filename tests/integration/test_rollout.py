"""rolloutRestartTargets: workloads are restarted when — and only when — a new token replaces another."""

from __future__ import annotations

import asyncio

import kubernetes

from tokensync.dev.tokenserver import DevTokenServer

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    NAMESPACE,
    Api,
    LogCapture,
    OperatorRunner,
    assert_clean,
    cc_spec,
    eventually,
)
from .observe import has_condition, has_event

RESTARTED_AT = "tokensync.io/restartedAt"
TARGETS = [{"kind": "Deployment", "name": "web"}, {"kind": "StatefulSet", "name": "db"}]


def apps(api: Api) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api.client)


def create_workloads(api: Api) -> None:
    template = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
    spec = {"selector": {"matchLabels": {"app": "x"}}, "template": template}
    apps(api).create_namespaced_deployment(
        NAMESPACE, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": spec}
    )
    apps(api).create_namespaced_stateful_set(
        NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {**spec, "serviceName": "db"},
        },
    )


def restarted_at(api: Api, plural: str, name: str) -> str | None:
    workload = api.cluster.get("apps/v1", plural, NAMESPACE, name) or {}
    annotations = (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")
    return (annotations or {}).get(RESTARTED_AT)


def both(api: Api) -> tuple[str | None, str | None]:
    return restarted_at(api, "deployments", "web"), restarted_at(api, "statefulsets", "db")


async def test_the_first_token_restarts_nothing_and_a_refresh_restarts_each_workload_once(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    create_workloads(seeded)
    seeded.create_cc("palisade", cc_spec(token_server, rolloutRestartTargets=TARGETS))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    assert both(seeded) == (None, None), "the first token is no change: nothing restarts"

    seeded.request_refresh("palisade", "1")
    await eventually(lambda: seeded.status("palisade").get("lastRefreshRequest") == "1")
    first = await eventually(lambda: all(both(seeded)) and both(seeded))
    record = seeded.status("palisade")["lastRolloutRestart"]
    assert record["restarted"] == ["Deployment/web", "StatefulSet/db"]
    assert record.get("failed", []) == []
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "RolloutRestarted"))

    # Once per token: later rounds (a cosmetic spec change, a while) do not restart again.
    seeded.patch_cc("palisade", {"spec": {"target": {"labels": {"team": "a"}}}})
    await eventually(lambda: ((seeded.secret("palisade") or {}).get("metadata") or {}).get("labels", {}).get("team"))
    await asyncio.sleep(1.0)
    assert both(seeded) == first
    assert token_server.issued == 2
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_an_operator_restart_with_the_token_unchanged_restarts_nothing(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    create_workloads(seeded)
    seeded.create_cc("palisade", cc_spec(token_server, rolloutRestartTargets=TARGETS))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    seeded.request_refresh("palisade", "1")
    first = await eventually(lambda: all(both(seeded)) and both(seeded))
    await operator.stop()
    await operator.start()
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    await asyncio.sleep(2.0)  # a window for a wrong restart to show
    assert both(seeded) == first
    assert token_server.issued == 2
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_credentials_change_restarts_the_workloads(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    create_workloads(seeded)
    seeded.create_cc("palisade", cc_spec(token_server, rolloutRestartTargets=TARGETS[:1]))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    token_server.credentials = {CLIENT_ID: CLIENT_SECRET, "client-b": "s3cond-S3cret-value"}
    seeded.put_secret("palisade-credentials", {"clientId": "client-b", "clientSecret": "s3cond-S3cret-value"})
    await eventually(lambda: restarted_at(seeded, "deployments", "web") is not None)
    assert token_server.issued == 2
    assert_clean(logs, CLIENT_SECRET, "s3cond-S3cret-value", *token_server.tokens)


async def test_a_missing_workload_is_a_warning_and_a_status_note_not_a_failure(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    create_workloads(seeded)
    targets = [{"kind": "Deployment", "name": "web"}, {"kind": "DaemonSet", "name": "gone"}]
    seeded.create_cc("palisade", cc_spec(token_server, rolloutRestartTargets=targets))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    seeded.request_refresh("palisade", "1")
    event = await eventually(lambda: has_event(seeded, "palisade", "Warning", "RolloutRestartFailed"))
    assert "DaemonSet/gone: not found" in event["message"]
    record = seeded.status("palisade")["lastRolloutRestart"]
    assert record["restarted"] == ["Deployment/web"]
    assert record["failed"] == ["DaemonSet/gone: not found"]
    assert has_condition(seeded, "palisade", "Ready", "True", "TokenIssued")
    assert seeded.status("palisade")["failedAttempts"] == 0
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)
