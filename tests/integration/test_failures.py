"""What a ClientCredential shows when things go wrong: the real operator against a real HTTPS token server.

Every test drives the operator through a failure path (a rejected secret, an endpoint
that is down, rate-limits, answers garbage or redirects, missing inputs, a foreign
Secret, a disallowed host) and checks the status, events and Secret a user would see,
that the operator recovers when the cause goes away, that it never leaks a secret or
a token, and that it logs no ERROR line on the way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets as std_secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest

import tokensync.dev.tokenserver
from tokensync.core import parse_rfc3339
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer, RequestRecord

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
from .observe import events_for, has_condition, has_event, last_failure

WRONG_SECRET = "wr0ng-B-5e3d9c1a7b2f4e6d"
CREDENTIALS = "palisade-credentials"
#: What ``secrets.token_urlsafe(32)`` makes: a token-shaped string, for messages that must not hold one.
TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_-]{40,}")


# Helpers -------------------------------------------------------------------------------------


class TokenRecorder:
    """Every token the dev server puts in a response body, including the ones it does not count as
    issued (``missing-fields`` answers a token without a lifetime): a leak of those must show too."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        token = std_secrets.token_urlsafe(nbytes)
        self.tokens.append(token)
        return token


@pytest.fixture
def minted(monkeypatch: pytest.MonkeyPatch) -> TokenRecorder:
    recorder = TokenRecorder()
    monkeypatch.setattr(tokensync.dev.tokenserver, "secrets", recorder)
    return recorder


class ReadCounter:
    """Counts the operator's reads of Secrets at the API stand-in (a spinning round shows here)."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    @property
    def count(self) -> int:
        counts = self.cluster.request_counts()
        return sum(n for (verb, resource), n in counts.items() if verb in ("get", "list") and resource == "secrets")


@pytest.fixture
def secret_reads(cluster: FakeCluster) -> ReadCounter:
    return ReadCounter(cluster)


def condition(api: Api, name: str, type_: str) -> dict[str, Any]:
    return api.condition(name, type_)


def event_text(event: dict[str, Any]) -> str:
    return event.get("message") or event.get("note") or ""


def exchanges(token_server: DevTokenServer) -> list[RequestRecord]:
    return [r for r in token_server.requests if r.path == tokensync.dev.tokenserver.PALISADE_TOKEN_PATH]


async def refresh(api: Api, name: str, value: str) -> dict[str, Any]:
    """Ask for a refresh and wait until the operator has acted on it (fulfilled it, or failed and
    keeps it pending in status); returns the status then."""
    api.request_refresh(name, value)

    def handled() -> dict[str, Any] | None:
        status = api.status(name)
        return status if value in (status.get("lastRefreshRequest"), status.get("pendingRefreshRequest")) else None

    return await eventually(handled, message=f"refresh request {value!r} handled")


async def becomes(check: Any, *, timeout: float) -> bool:
    """Whether ``check`` turns true within ``timeout`` (``eventually`` without the failure)."""
    try:
        await eventually(check, timeout=timeout)
    except AssertionError:
        return False
    return True


def spelled(*values: str) -> list[str]:
    """A value as it could leak: as is, and base64-encoded as in a Secret's data."""
    return [form for v in values for form in (v, base64.b64encode(v.encode()).decode())]


# 1. Rejected credentials ---------------------------------------------------------------------


async def test_a_wrong_client_secret_stalls_with_invalid_credentials_and_creates_no_secret(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_secret(CREDENTIALS, {"clientId": CLIENT_ID, "clientSecret": WRONG_SECRET})
    seeded.create_cc("palisade", cc_spec(token_server))

    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "InvalidCredentials"))
    assert has_condition(seeded, "palisade", "Stalled", "True", "InvalidCredentials")
    assert has_condition(seeded, "palisade", "Reconciling", "False")
    status = seeded.status("palisade")
    assert status["failedAttempts"] >= 1
    assert "lastFailureTime" in status
    failure = status["lastFailure"]
    assert failure["httpStatus"] == 401
    assert failure["code"] == 16
    assert failure["reason"] == "InvalidCredentials"
    assert "credentials" in failure["message"]
    assert "401" in failure["message"]
    assert seeded.condition("palisade", "Ready")["message"] == failure["message"]

    event = await eventually(lambda: has_event(seeded, "palisade", "Warning", "InvalidCredentials"))
    assert "401" in event_text(event)
    assert seeded.secret("palisade") is None
    assert token_server.issued == 0
    assert [r.status for r in exchanges(token_server)] == [401]  # stalled: no quick retry
    assert_clean(logs, CLIENT_SECRET, WRONG_SECRET)


# 2. A refresh rejected while the token is still valid ----------------------------------------


async def test_a_rejected_refresh_keeps_ready_and_the_stored_token_untouched(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"))
    before = seeded.secret("palisade")
    assert before is not None

    token_server.fail("unauthorized")
    status = await refresh(seeded, "palisade", "1")

    assert status["lastFailure"]["reason"] == "InvalidCredentials"
    assert status["lastFailure"]["httpStatus"] == 401
    assert status["failedAttempts"] >= 1
    ready = seeded.condition("palisade", "Ready")
    assert ready["status"] == "True"
    assert ready["reason"] == "TokenIssued"
    assert "InvalidCredentials" in ready["message"]
    assert "failed" in ready["message"]
    assert has_condition(seeded, "palisade", "Stalled", "True", "InvalidCredentials")
    after = seeded.secret("palisade")
    assert after is not None
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[0]
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "InvalidCredentials"))
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_failed_manual_refresh_is_retried_after_a_backoff_without_spinning_on_the_api(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, secret_reads: ReadCounter
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    token_server.fail("unavailable")
    status = await refresh(seeded, "palisade", "1")
    assert "retrying at" in status["conditions"][0]["message"]
    reads_before = secret_reads.count

    # The status promises a retry after the first backoff (4-5 s).
    retried = await becomes(lambda: len(exchanges(token_server)) >= 3, timeout=8)
    reads = secret_reads.count - reads_before
    # Rounds read from the caches: a retry costs no Secret read at all.
    assert reads == 0, f"{reads} Secret reads while waiting for one retry"
    assert retried, "the failed refresh was never retried"
    assert has_condition(seeded, "palisade", "Ready", "True")
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 3. Endpoint down: keep the old token, back off, recover -------------------------------------


async def test_an_unavailable_endpoint_keeps_the_old_token_backs_off_and_recovers(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    token_server.lifetime = 6
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    old_token = seeded.secret_data("palisade")["accessToken"]
    expires_at = parse_rfc3339(seeded.status("palisade")["expiresAt"])
    token_server.fail("unavailable")

    # Until it expires the old token stays in the Secret and Ready stays True, while retrying.
    saw_retrying_while_ready = False
    while datetime.now(UTC).timestamp() < expires_at.timestamp() - 0.3:
        assert seeded.secret_data("palisade")["accessToken"] == old_token, "a failed refresh replaced the token"
        assert has_condition(seeded, "palisade", "Ready", "True"), "Ready turned False before the token expired"
        if has_condition(seeded, "palisade", "Reconciling", "True", "Retrying"):
            saw_retrying_while_ready = True
            assert "EndpointUnavailable" in condition(seeded, "palisade", "Ready")["message"]
        await asyncio.sleep(0.05)
    assert saw_retrying_while_ready, "Reconciling=True/Retrying was never shown before the token expired"
    assert any(r.failure == "unavailable" for r in token_server.requests), "no refresh was tried before expiry"

    # Past expiry: not Ready, for the endpoint's reason; still retrying, not stalled.
    await eventually(
        lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"),
        timeout=expires_at.timestamp() + 3 - time.time(),
    )
    assert has_condition(seeded, "palisade", "Reconciling", "True", "Retrying")
    assert has_condition(seeded, "palisade", "Stalled", "False")
    status = seeded.status("palisade")
    assert status["lastFailure"]["httpStatus"] == 503
    assert status["lastFailure"]["code"] == 14
    assert status["failedAttempts"] >= 2
    failed = [r for r in token_server.requests if r.failure == "unavailable"]
    first_failure = failed[0].at

    # Recovery, at the next retry, once the endpoint is back.
    await asyncio.sleep(max(0.0, first_failure + 10 - time.time()))
    failed = [r for r in token_server.requests if r.failure == "unavailable"]
    assert len(failed) <= 8, f"{len(failed)} attempts in 10 s: a hot loop, not a backoff"
    token_server.fail(None)
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"), timeout=25)
    gaps = [b.at - a.at for a, b in zip(failed, [*failed[1:], token_server.requests[-1]], strict=True)]
    assert gaps[-1] > 3 * min(gaps), f"the gaps between attempts do not grow: {gaps}"
    assert all(gap >= 0.5 for gap in gaps), f"attempts closer than the minimum retry delay: {gaps}"

    new_token = seeded.secret_data("palisade")["accessToken"]
    assert new_token != old_token
    assert new_token == token_server.tokens[-1]
    status = seeded.status("palisade")
    assert status["failedAttempts"] == 0
    assert "lastFailure" not in status
    assert has_condition(seeded, "palisade", "Reconciling", "False")
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "Recovered"))
    assert has_event(seeded, "palisade", "Warning", "EndpointUnavailable")
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 4. Rate limits ------------------------------------------------------------------------------


async def test_a_retry_after_past_expiry_still_gets_one_attempt_shortly_before_the_token_lapses(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    # Renewal at 5 s of a 10 s token; the 429 asks for a minute. Honouring it would let the token
    # lapse, so one attempt is made 2 s before expiry, and it succeeds: no expired token in the Secret.
    token_server.lifetime = 10
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    first_expiry = parse_rfc3339(seeded.status("palisade")["expiresAt"])
    token_server.fail("rate-limited", retry_after=60, times=1)

    failure = await eventually(lambda: last_failure(seeded, "palisade"), message="the 429 is recorded")
    assert failure["reason"] == "RateLimited"
    assert failure["retryAfterSeconds"] == 60
    assert has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"), "the old token is still valid"
    assert has_condition(seeded, "palisade", "Stalled", "False")

    await eventually(lambda: token_server.issued == 2, timeout=15, message="one attempt before expiry")
    records = exchanges(token_server)
    limited = next(i for i, r in enumerate(records) if r.status == 429)
    assert len(records) == limited + 2, "exactly one attempt between the 429 and the new token"
    retried_at = datetime.fromtimestamp(records[limited + 1].at, UTC)
    assert retried_at < first_expiry, "the last attempt came after the token had lapsed"
    await eventually(lambda: seeded.secret_data("palisade").get("accessToken") == token_server.tokens[-1])
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "RateLimited"))
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_retry_after_longer_than_the_backoff_is_honoured_to_the_second(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    # 6 s is more than the first backoff (4-5 s) and ends before the 20 s token's last chance.
    # Created at about .4 s past a second, so the 429 lands well inside a second (cutting it off matters).
    token_server.lifetime = 20
    await asyncio.sleep((0.4 - time.time()) % 1)
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))
    token_server.fail("rate-limited", retry_after=6, times=1)

    await eventually(lambda: last_failure(seeded, "palisade").get("retryAfterSeconds") == 6, timeout=20)
    await eventually(lambda: token_server.issued == 2, timeout=12, message="a token after the 429")
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"))
    records = exchanges(token_server)
    limited = next(i for i, r in enumerate(records) if r.status == 429)
    waited = records[limited + 1].at - records[limited].at
    # A little slack: the operator may count from just before it sent the request.
    assert waited >= 5.9, f"retried {waited:.2f} s after a 429 that said Retry-After: 6"
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 5. 200 answers that are not a token ---------------------------------------------------------


async def test_a_200_that_is_not_a_token_is_an_invalid_response_with_a_clear_message(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    token_server.fail("not-json")
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "InvalidResponse"))
    failure = last_failure(seeded, "palisade")
    assert failure["reason"] == "InvalidResponse"
    assert failure["httpStatus"] == 200
    assert "JSON" in failure["message"]
    assert "<" not in failure["message"]
    assert "password" not in failure["message"]
    assert has_condition(seeded, "palisade", "Reconciling", "True", "Retrying")

    token_server.fail("missing-fields")
    status = await refresh(seeded, "palisade", "1")
    failure = status["lastFailure"]
    assert failure["reason"] == "InvalidResponse"
    assert "expiresIn" in failure["message"]
    assert minted.tokens, "the server sent no token-bearing body"
    for text in (failure["message"], condition(seeded, "palisade", "Ready")["message"]):
        assert not any(token in text for token in minted.tokens), "a token reached the status"
        assert not TOKEN_SHAPED.search(text), f"something token-shaped in {text!r}"
    assert has_condition(seeded, "palisade", "Ready", "False", "InvalidResponse")
    assert seeded.secret("palisade") is None
    assert_clean(logs, CLIENT_SECRET, *minted.tokens)


# 6. Proxies answering instead of the endpoint ------------------------------------------------


async def test_an_html_502_and_an_empty_500_are_endpoint_unavailable_with_a_short_message(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    token_server.fail("html-error")
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"))
    failure = last_failure(seeded, "palisade")
    assert failure["httpStatus"] == 502
    assert "502" in failure["message"]
    assert "HTML" in failure["message"]
    assert "<" not in failure["message"]
    assert "nginx" not in failure["message"]
    assert len(failure["message"]) <= 120

    token_server.fail("empty")
    status = await refresh(seeded, "palisade", "1")
    failure = status["lastFailure"]
    assert failure["reason"] == "EndpointUnavailable"
    assert failure["httpStatus"] == 500
    assert "500" in failure["message"]
    assert "empty" in failure["message"]
    assert len(failure["message"]) <= 120
    assert has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable")
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert_clean(logs, CLIENT_SECRET)


# 7. Missing credentials ----------------------------------------------------------------------


def seed_ca(api: Api, token_server: DevTokenServer) -> None:
    api.put_configmap("test-ca", {"ca.crt": token_server.ca_pem.decode()})


async def test_a_missing_credentials_secret_is_reported_and_its_creation_is_picked_up_at_once(
    api: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seed_ca(api, token_server)
    api.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(api, "palisade", "Ready", "False", "CredentialsNotFound"))
    assert CREDENTIALS in condition(api, "palisade", "Ready")["message"]
    assert NAMESPACE in condition(api, "palisade", "Ready")["message"]
    assert has_condition(api, "palisade", "Stalled", "True", "CredentialsNotFound")
    assert await eventually(lambda: has_event(api, "palisade", "Warning", "CredentialsNotFound"))
    assert token_server.requests == []

    fixed = time.monotonic()
    api.put_secret(CREDENTIALS, {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
    # The first backoff is at least 4 s: this must come from the Secret's watch event.
    await eventually(lambda: has_condition(api, "palisade", "Ready", "True", "TokenIssued"), timeout=10)
    assert time.monotonic() - fixed < 2.0, "the new credentials Secret was only noticed after a backoff"
    assert api.secret_data("palisade")["accessToken"] == token_server.tokens[-1]
    assert api.status("palisade")["failedAttempts"] == 0
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_missing_key_in_the_credentials_secret_is_named_and_its_addition_is_picked_up_at_once(
    api: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seed_ca(api, token_server)
    api.put_secret(CREDENTIALS, {"clientId": CLIENT_ID})
    api.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(api, "palisade", "Ready", "False", "CredentialsNotFound"))
    message = condition(api, "palisade", "Ready")["message"]
    assert "clientSecret" in message
    assert CREDENTIALS in message
    assert token_server.requests == []

    fixed = time.monotonic()
    api.put_secret(CREDENTIALS, {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
    await eventually(lambda: has_condition(api, "palisade", "Ready", "True", "TokenIssued"), timeout=10)
    assert time.monotonic() - fixed < 2.0, "the added key was only noticed after a backoff"
    assert api.secret_data("palisade")["accessToken"] == token_server.tokens[-1]
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 8. The token-host allowlist -----------------------------------------------------------------


async def test_a_token_url_outside_the_allowlist_is_refused_without_a_request(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    url = f"https://example.com:{token_server.port}/v2/credentials/oauth/token"
    seeded.create_cc("elsewhere", cc_spec(token_server, tokenURL=url))
    await eventually(lambda: has_condition(seeded, "elsewhere", "Ready", "False", "HostNotAllowed"))
    assert has_condition(seeded, "elsewhere", "Stalled", "True", "HostNotAllowed")
    assert "example.com" in condition(seeded, "elsewhere", "Ready")["message"]
    assert last_failure(seeded, "elsewhere")["reason"] == "HostNotAllowed"
    assert seeded.secret("elsewhere") is None
    assert token_server.requests == []
    assert_clean(logs, CLIENT_SECRET)


async def test_an_operator_restarted_with_a_narrower_allowlist_refuses_the_hosts_it_dropped(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.create_cc("by-ip", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "by-ip", "Ready", "True"))
    stored = seeded.secret("by-ip")
    assert stored is not None

    await operator.stop()
    await operator.start(allowed_token_hosts=("localhost",))
    by_name = token_server.token_url.replace("127.0.0.1", "localhost")
    seeded.create_cc("by-name", cc_spec(token_server, tokenURL=by_name, target={"name": "by-name-token"}))

    await eventually(lambda: last_failure(seeded, "by-ip").get("reason") == "HostNotAllowed")
    assert has_condition(seeded, "by-ip", "Stalled", "True", "HostNotAllowed")
    ready = condition(seeded, "by-ip", "Ready")
    assert "HostNotAllowed" in ready["reason"] + ready["message"]
    assert "127.0.0.1" in last_failure(seeded, "by-ip")["message"]
    await eventually(lambda: has_condition(seeded, "by-name", "Ready", "True"))
    # One exchange before the restart (by-ip), one after (by-name): nothing went to 127.0.0.1.
    assert len(exchanges(token_server)) == 2
    after = seeded.secret("by-ip")
    assert after is not None
    assert after["data"] == stored["data"]
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 9. A Secret tokensync does not own ----------------------------------------------------------


async def test_a_foreign_secret_in_the_way_is_left_untouched_and_taken_over_once_deleted(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_secret("palisade", {"accessToken": "somebody-elses", "note": "hands off"}, labels={"team": "other"})
    foreign = seeded.secret("palisade")
    assert foreign is not None
    seeded.create_cc("palisade", cc_spec(token_server))

    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "SecretConflict"))
    assert has_condition(seeded, "palisade", "Stalled", "True", "SecretConflict")
    assert "palisade" in condition(seeded, "palisade", "Ready")["message"]
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "SecretConflict"))
    untouched = seeded.secret("palisade")
    assert untouched is not None
    assert untouched["data"] == foreign["data"]
    assert untouched["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    assert untouched["metadata"].get("labels") == {"team": "other"}
    assert "ownerReferences" not in untouched["metadata"]

    deleted = time.monotonic()
    seeded.delete_secret("palisade")
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True", "TokenIssued"), timeout=10)
    # The first backoff is at least 4 s: this must come from the Secret's watch event.
    assert time.monotonic() - deleted < 2.0, "the deletion was only noticed after a backoff"
    ours = seeded.secret("palisade")
    assert ours is not None
    assert ours["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tokensync"
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[-1]
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "Recovered"))
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


# 10. Redirects -------------------------------------------------------------------------------


async def test_a_redirect_is_not_followed_and_reported_as_endpoint_not_found(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    token_server.fail("redirect")
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointNotFound"))
    failure = last_failure(seeded, "palisade")
    assert failure["httpStatus"] == 307
    assert "redirect" in failure["message"]
    assert has_condition(seeded, "palisade", "Stalled", "True", "EndpointNotFound")
    assert [r.path for r in token_server.requests] == [tokensync.dev.tokenserver.PALISADE_TOKEN_PATH]
    assert not any(r.path.startswith(tokensync.dev.tokenserver.REDIRECT_PREFIX) for r in token_server.requests)
    assert token_server.issued == 0
    assert seeded.secret("palisade") is None
    assert_clean(logs, CLIENT_SECRET)


# 11. Nothing leaks ---------------------------------------------------------------------------


async def test_no_secret_or_token_leaks_into_logs_events_or_the_resource_on_any_path(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "True"))

    steps = [
        ("unauthorized", "InvalidCredentials"),
        ("unavailable", "EndpointUnavailable"),
        ("not-json", "InvalidResponse"),
        ("missing-fields", "InvalidResponse"),
        ("rate-limited", "RateLimited"),
    ]
    for number, (mode, reason) in enumerate(steps, start=1):
        token_server.fail(mode, retry_after=1)
        status = await refresh(seeded, "palisade", str(number))
        assert status["lastFailure"]["reason"] == reason, mode
    token_server.fail(None)
    await refresh(seeded, "palisade", "ok")
    await eventually(lambda: has_event(seeded, "palisade", "Normal", "Recovered"))
    assert len(set(token_server.tokens)) == 2

    # A second resource whose own (wrong) secret is rejected.
    seeded.put_secret("wrong-credentials", {"clientId": CLIENT_ID, "clientSecret": WRONG_SECRET})
    seeded.create_cc("wrong", cc_spec(token_server, credentialsRef={"name": "wrong-credentials"}))
    await eventually(lambda: has_event(seeded, "wrong", "Warning", "InvalidCredentials"))

    assert len(minted.tokens) > len(token_server.tokens), "the missing-fields body carried no token"
    leakable = spelled(CLIENT_SECRET, WRONG_SECRET, *minted.tokens)
    assert any(r.levelname == "DEBUG" and r.name.startswith("tokensync") for r in logs.records), "not at DEBUG"
    for value in leakable:
        assert value not in logs.text, "a secret or token reached the logs"
    events = [*events_for(seeded, "palisade"), *events_for(seeded, "wrong")]
    assert {e.get("reason") for e in events} >= {"InvalidCredentials", "EndpointUnavailable", "Recovered"}
    for event in seeded.events():
        text = json.dumps(event)
        assert not any(value in text for value in leakable), f"a secret or token in event {event.get('reason')}"
    for name in ("palisade", "wrong"):
        resource = seeded.cc(name)
        assert resource is not None
        for part in (resource.get("status"), resource["metadata"].get("annotations")):
            text = json.dumps(part)
            assert not any(value in text for value in leakable), f"a secret or token in {name}"
    assert_clean(logs, CLIENT_SECRET, WRONG_SECRET, *minted.tokens)
