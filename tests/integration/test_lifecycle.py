"""A ClientCredential's life: created, refreshed, edited, restarted, deleted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tokensync.core import parse_rfc3339
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CLIENT_SECRET, Api, LogCapture, OperatorRunner, assert_clean, cc_spec, eventually


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


async def test_a_new_resource_gets_a_secret_with_the_token_and_ready_status(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    seeded.create_cc("palisade", cc_spec(token_server))

    await eventually(lambda: ready(seeded, "palisade"), message="Ready=True")
    data = seeded.secret_data("palisade")
    assert data["accessToken"] == token_server.tokens[-1]
    assert data["tokenType"] == "Bearer"
    assert data["scope"] == token_server.scope
    expires_at = parse_rfc3339(data["expiresAt"])
    assert 3590 <= (expires_at - before).total_seconds() <= 3610

    status = seeded.status("palisade")
    assert status["secretName"] == "palisade"
    assert status["tokenType"] == "Bearer"
    assert parse_rfc3339(status["expiresAt"]) == expires_at
    issued_at = parse_rfc3339(status["issuedAt"])
    renewal = parse_rfc3339(status["renewalTime"])
    # 67 % of an hour after issue, moved earlier by at most the jitter (5 %, ≤ 60 s).
    assert 0.67 * 3600 - 61 <= (renewal - issued_at).total_seconds() <= 0.67 * 3600
    assert status["failedAttempts"] == 0
    assert status["observedGeneration"] == seeded.cc("palisade")["metadata"]["generation"]
    ready_condition = seeded.condition("palisade", "Ready")
    assert ready_condition["reason"] == "TokenIssued"
    assert seeded.condition("palisade", "Stalled")["status"] == "False"
    assert seeded.condition("palisade", "Reconciling")["status"] == "False"

    secret = seeded.secret("palisade")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tokensync"
    annotations = secret["metadata"]["annotations"]
    assert annotations["tokensync.io/expires-at"] == data["expiresAt"]
    assert CLIENT_SECRET not in str(annotations)
    owner = secret["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ClientCredential"
    assert owner["uid"] == seeded.cc("palisade")["metadata"]["uid"]
    assert owner["controller"] is True
    assert token_server.issued == 1
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_the_token_is_refreshed_before_expiry_and_never_served_expired(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    token_server.lifetime = 4
    seeded.create_cc("short", cc_spec(token_server, renewal={"percent": 75}))
    await eventually(lambda: ready(seeded, "short"))

    seen: set[str] = set()
    deadline = datetime.now(UTC).timestamp() + 9
    while datetime.now(UTC).timestamp() < deadline:
        data = seeded.secret_data("short")
        # Whole-second expiry: the token must be valid for the rest of the current second.
        assert parse_rfc3339(data["expiresAt"]) > datetime.now(UTC), "the Secret held an expired token"
        seen.add(data["accessToken"])
        await asyncio.sleep(0.05)
    # Refreshed at 75 % of the 4 s lifetime (counted from the whole second of issue): about
    # one new token every 2-3 s, so several in 9 s, and no hot loop.
    assert len(seen) >= 3
    assert token_server.issued <= 6, "refreshed far more often than the policy says"
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_an_operator_restart_with_valid_tokens_makes_no_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    for name in ("one", "two", "three"):
        seeded.create_cc(name, cc_spec(token_server, target={"name": f"{name}-token"}))
    for name in ("one", "two", "three"):
        await eventually(lambda name=name: ready(seeded, name))
    # Identical credentials share one exchange.
    assert token_server.issued == 1
    tokens = {name: seeded.secret_data(f"{name}-token")["accessToken"] for name in ("one", "two", "three")}

    await operator.stop()
    token_server.reset()
    await operator.start()
    await asyncio.sleep(3)
    assert token_server.requests == []
    for name in ("one", "two", "three"):
        assert seeded.secret_data(f"{name}-token")["accessToken"] == tokens[name]
        assert ready(seeded, name)
    assert_clean(logs, CLIENT_SECRET, *tokens.values())


async def test_a_refresh_costs_one_secret_write_one_status_write_and_one_event(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    seeded.create_cc("frugal", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "frugal"))
    await asyncio.sleep(0.5)  # let the first round's own watch events settle
    seeded.cluster.reset_counts()
    seeded.request_refresh("frugal", "1")
    await eventually(lambda: token_server.issued == 2)
    await eventually(lambda: seeded.status("frugal").get("lastRefreshRequest") == "1")
    await asyncio.sleep(1)  # nothing else may follow
    writes = seeded.cluster.write_counts()
    writes.pop(("clientcredentials", "PATCH"), None)  # the test's own annotation
    assert writes == {
        ("secrets", "PATCH"): 1,
        ("clientcredentials/status", "PATCH"): 1,
        ("events", "POST"): 1,
    }
