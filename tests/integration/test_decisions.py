"""Decisions that survive restarts, and the exact lifecycle of the target Secret.

- a fix made while the operator is down takes effect within seconds of its start, however long
  the backoff that status records (the inputs of the failed attempt are kept in status);
- a refresh request whose exchange failed is still pending after a restart;
- only our owner annotation or controller reference make a Secret ours, never the label;
- labels and annotations dropped from ``target`` leave the Secret, other tools' stay;
- renaming ``target.name`` deletes (Delete) or releases (Retain) the old Secret;
- two resources naming one Secret: the first keeps it;
- renewal settings that would refresh too often are clamped and reported.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import trustme

from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CLIENT_SECRET, NAMESPACE, Api, LogCapture, OperatorRunner, assert_clean, cc_spec, eventually
from .observe import has_condition, has_event, last_failure

WRONG_SECRET = "wr0ng-D-8c1e2f3a4b5c6d7e"


def patch_status(api: Api, name: str, status: dict[str, Any]) -> None:
    api.custom.patch_namespaced_custom_object_status(
        "tokensync.io",
        "v1alpha1",
        NAMESPACE,
        "clientcredentials",
        name,
        {"status": status},
        _content_type="application/merge-patch+json",
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def stays(check: Any, seconds: float) -> bool:
    """Whether ``check`` stays true for ``seconds`` (polled)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if not check():
            return False
        await asyncio.sleep(0.1)
    return True


# Decisions survive restarts ------------------------------------------------------------------


async def test_a_credential_fixed_while_the_operator_was_down_takes_effect_at_its_start(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_secret("palisade-credentials", {"clientId": "client-a", "clientSecret": WRONG_SECRET})
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: last_failure(seeded, "palisade").get("reason") == "InvalidCredentials")
    assert last_failure(seeded, "palisade").get("inputsHash"), "the failed inputs are kept in status"
    await operator.stop()
    # As after many failures: the next attempt is an hour away.
    patch_status(seeded, "palisade", {"failedAttempts": 12, "lastFailureTime": now_rfc3339()})

    # A restart alone honours that backoff: no request.
    requests = len(token_server.requests)
    await operator.start()
    assert await stays(lambda: len(token_server.requests) == requests, 3.0), "a restart ignored the backoff"
    await operator.stop()

    seeded.put_secret("palisade-credentials", {"clientId": "client-a", "clientSecret": CLIENT_SECRET})
    await operator.start()
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"), timeout=20)
    assert token_server.issued == 1
    assert seeded.status("palisade")["failedAttempts"] == 0
    assert_clean(logs, CLIENT_SECRET, WRONG_SECRET, *token_server.tokens)


async def test_a_failed_refresh_request_is_still_pending_after_a_restart(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    token_server.fail("unavailable")
    seeded.request_refresh("palisade", "rotate-1")
    await eventually(lambda: seeded.status("palisade").get("pendingRefreshRequest") == "rotate-1")
    assert seeded.status("palisade").get("lastRefreshRequest") != "rotate-1"
    await operator.stop()

    token_server.fail(None)
    await operator.start()
    await eventually(lambda: seeded.status("palisade").get("lastRefreshRequest") == "rotate-1", timeout=30)
    assert "pendingRefreshRequest" not in seeded.status("palisade")
    assert token_server.issued == 2, "the pending request was fulfilled with a new token"
    await eventually(lambda: seeded.secret_data("palisade").get("accessToken") == token_server.tokens[-1])
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_refresh_request_is_never_satisfied_by_a_token_minted_before_it(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    # Two resources with the same inputs share tokens; a refresh of one must still mint a new one.
    seeded.create_cc("first", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "first", "Ready", "True"))
    seeded.create_cc("second", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "second", "Ready", "True"))
    assert token_server.issued == 1, "identical inputs share one token"
    seeded.request_refresh("second", "now")
    await eventually(lambda: seeded.status("second").get("lastRefreshRequest") == "now")
    assert token_server.issued == 2
    assert seeded.secret_data("second")["accessToken"] == token_server.tokens[-1]
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# The Secret's lifecycle ----------------------------------------------------------------------


async def test_a_secret_that_only_carries_our_label_is_not_adopted(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_secret("palisade", {"password": "hunter2"}, labels={"app.kubernetes.io/managed-by": "tokensync"})
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "SecretConflict"))
    assert seeded.secret_data("palisade") == {"password": "hunter2"}
    assert token_server.issued == 0
    assert_clean(logs, CLIENT_SECRET)


async def test_two_resources_naming_one_secret_the_first_keeps_it(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("first", cc_spec(token_server, target={"name": "shared"}))
    await eventually(lambda: has_condition(seeded, "first", "Ready", "True"))
    owner_before = seeded.secret("shared")["metadata"]["annotations"]["tokensync.io/owner"]  # type: ignore[index]
    seeded.create_cc("second", cc_spec(token_server, target={"name": "shared"}))
    await eventually(lambda: has_condition(seeded, "second", "Ready", "False", "SecretConflict"))
    assert await eventually(lambda: has_event(seeded, "second", "Warning", "SecretConflict"))
    shared = seeded.secret("shared")
    assert shared is not None
    assert shared["metadata"]["annotations"]["tokensync.io/owner"] == owner_before == f"{NAMESPACE}/first"
    assert has_condition(seeded, "first", "Ready", "True")
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_labels_and_annotations_dropped_from_the_target_leave_the_secret_and_others_stay(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    target = {"labels": {"team": "payments", "tier": "gold"}, "annotations": {"note": "hello"}}
    seeded.create_cc("palisade", cc_spec(token_server, target=target))
    await eventually(lambda: (seeded.secret("palisade") or {}).get("metadata", {}).get("labels", {}).get("tier"))
    seeded.core.patch_namespaced_secret(
        "palisade",
        NAMESPACE,
        {"metadata": {"labels": {"gitops": "tracked"}, "annotations": {"other-tool/seen": "1"}}},
        _content_type="application/merge-patch+json",
    )
    seeded.patch_cc("palisade", {"spec": {"target": {"labels": {"tier": None}, "annotations": {"note": None}}}})

    def cleaned() -> bool:
        meta = (seeded.secret("palisade") or {}).get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        return "tier" not in labels and "note" not in annotations

    await eventually(cleaned)
    meta = seeded.secret("palisade")["metadata"]  # type: ignore[index]
    assert meta["labels"]["team"] == "payments"
    assert meta["labels"]["gitops"] == "tracked", "another tool's label stays"
    assert meta["annotations"]["other-tool/seen"] == "1", "another tool's annotation stays"
    assert token_server.issued == 1, "metadata changes cost no exchange"
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_renaming_the_target_deletes_the_old_secret_under_delete(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server, target={"name": "old-name"}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    seeded.patch_cc("palisade", {"spec": {"target": {"name": "new-name"}}})
    await eventually(lambda: seeded.secret("new-name") is not None and seeded.secret("old-name") is None)
    await eventually(lambda: seeded.status("palisade").get("secretName") == "new-name")
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "SecretDeleted"))
    assert seeded.secret_data("new-name")["accessToken"] == token_server.tokens[-1]
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_renaming_the_target_releases_the_old_secret_under_retain(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server, target={"name": "old-name", "deletionPolicy": "Retain"}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    seeded.patch_cc("palisade", {"spec": {"target": {"name": "new-name"}}})
    await eventually(lambda: has_event(seeded, "palisade", "Normal", "SecretReleased"))
    released = seeded.secret("old-name")
    assert released is not None, "Retain keeps the old Secret"
    meta = released["metadata"]
    assert "app.kubernetes.io/managed-by" not in (meta.get("labels") or {})
    assert not meta.get("ownerReferences")
    assert "tokensync.io/owner" not in (meta.get("annotations") or {})
    assert seeded.secret_data("old-name")["accessToken"], "its data stays for the workloads still mounting it"
    assert seeded.secret("new-name") is not None
    # Released means no longer ours: renaming back does not adopt it.
    seeded.patch_cc("palisade", {"spec": {"target": {"name": "old-name"}}})
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "SecretConflict"))
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_renewal_that_would_refresh_too_often_is_clamped_and_reported(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    # before 19.5s on a 20 s token asks for a refresh every half second; the floor is 2 s (10 %).
    token_server.lifetime = 20
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"before": "19500ms"}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    event = await eventually(lambda: has_event(seeded, "palisade", "Warning", "RenewalClamped"))
    assert "clamped to 2s" in event["message"]
    assert "clamped to 2s" in seeded.condition("palisade", "Ready")["message"]
    start = token_server.issued
    await asyncio.sleep(6)
    assert token_server.issued - start <= 4, "more than one refresh per 2 s"
    assert token_server.issued - start >= 2, "the clamped schedule still refreshes"
    clamped = [e for e in seeded.events() if e.get("reason") == "RenewalClamped"]
    assert sum(e.get("count") or 1 for e in clamped) == 1, "reported once, not on every refresh"
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# CA bundles in ConfigMaps are watched --------------------------------------------------------


async def test_a_ca_bundle_configmap_created_later_is_picked_up_at_once(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    spec = cc_spec(token_server, caBundleRef={"kind": "ConfigMap", "name": "late-ca", "key": "ca.crt"})
    seeded.create_cc("palisade", spec)
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "InvalidSpec"))
    seeded.put_configmap("late-ca", {"ca.crt": token_server.ca_pem.decode()})
    # The stalled backoff would be 4-5 s at least; the ConfigMap's watch event wakes it sooner.
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"), timeout=4)
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_fixing_the_ca_bundle_retries_a_tls_failure_at_once(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_configmap("corp-ca", {"ca.crt": trustme.CA().cert_pem.bytes().decode()})
    spec = cc_spec(token_server, caBundleRef={"kind": "ConfigMap", "name": "corp-ca", "key": "ca.crt"})
    seeded.create_cc("palisade", spec)
    # Three TLS failures: the next attempt is 16-20 s away.
    await eventually(lambda: seeded.status("palisade").get("failedAttempts", 0) >= 3, timeout=40)
    assert "TLS" in last_failure(seeded, "palisade")["message"]
    seeded.core.patch_namespaced_config_map("corp-ca", NAMESPACE, {"data": {"ca.crt": token_server.ca_pem.decode()}})
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"), timeout=8)
    assert token_server.issued == 1
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)
