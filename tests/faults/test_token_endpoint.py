"""Faults of the token endpoint: outages, rate limits, silence, broken TLS, and answers that are not a token.

Each test drives the real operator against the dev token server in one failure mode and checks
what a user sees (Secret, status, events) and what the endpoint saw (how many exchanges, when):
a failing endpoint never costs a still-valid token, never gets a hot loop, and is reported
with the right reason.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import REDIRECT_PREFIX, DevTokenServer

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    NAMESPACE,
    Always,
    Api,
    LogCapture,
    OperatorRunner,
    TokenRecorder,
    assert_no_leaks,
    backoff_ceiling,
    cc_spec,
    condition,
    event_reasons,
    eventually,
    exchanges,
    has_condition,
    has_event,
    honest,
    is_ready,
    last_failure,
    secret_expiry,
    secret_token,
    settled,
)

#: A bounded look for something that must not happen (a quick retry): shorter than the first
#: backoff after a failed exchange (5 s, jittered down by at most 20 %).
NO_RETRY_WINDOW = 1.5


async def no_retry_within(token_server: DevTokenServer, seconds: float = NO_RETRY_WINDOW) -> None:
    """Exactly one exchange was tried, and no second one comes within ``seconds``."""
    assert len(exchanges(token_server)) == 1
    await asyncio.sleep(seconds)
    assert len(exchanges(token_server)) == 1, f"retried within {seconds:.0f}s: {exchanges(token_server)}"


def assert_not_issued(api: Api, name: str) -> None:
    """No Secret, no token in status, no Issued event: nothing claims a token exists."""
    assert api.secret(name) is None
    status = api.status(name)
    assert "expiresAt" not in status
    assert "issuedAt" not in status
    assert not has_event(api, name, "Normal", "Issued")


# Outages ----------------------------------------------------------------------------------


async def test_intermittent_5xx_over_many_refresh_cycles_never_let_the_token_lapse(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    # A 6 s token refreshed at half-life: a failed refresh is retried 2 s before expiry.
    token_server.lifetime = 6
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: settled(seeded, "palisade"))
    reads = sum(
        n for (verb, res), n in cluster.request_counts().items() if verb in ("get", "list") and res == "secrets"
    )
    started, failures, cycles = time.monotonic(), 0, 5

    def valid_and_ready() -> str | None:
        if not is_ready(seeded, "palisade"):
            return f"Ready turned {condition(seeded, 'palisade', 'Ready')}"
        expiry = secret_expiry(seeded, "palisade")
        if expiry is None or expiry <= datetime.now(UTC):
            return f"the Secret's token lapsed (expiresAt {expiry})"
        if secret_token(seeded, "palisade") not in token_server.tokens:
            return "the Secret holds no token the endpoint issued"
        return None

    async with Always(valid_and_ready):
        for cycle in range(cycles):
            issued = token_server.issued
            if cycle % 2 == 0:  # every other refresh: its first attempt gets a 503
                token_server.fail("unavailable", times=1)
                failures += 1
            await eventually(lambda issued=issued: token_server.issued > issued, timeout=15, message="a refresh")
        await eventually(lambda: settled(seeded, "palisade", token_server.tokens[-1]))
    elapsed = time.monotonic() - started

    records = exchanges(token_server)
    failed = [r for r in records if r.status == 503]
    # Each failure costs exactly one more exchange: one retry, no storm, no extra refresh.
    assert len(failed) == failures
    assert len(records) == token_server.issued + failures
    assert token_server.issued - 1 <= elapsed / (6 * 0.5 * 0.9) + 1, "refreshed more often than at half-life"
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[-1]
    status = seeded.status("palisade")
    assert status["failedAttempts"] == 0
    assert "lastFailure" not in status
    # Failures that never cost the token are still reported, once each, and their recovery too.
    events = event_reasons(seeded, "palisade")
    assert 1 <= events[("Warning", "EndpointUnavailable")] <= failures
    assert events[("Normal", "Recovered")] >= 1
    assert events[("Warning", "NotReady")] == 0
    # The Kubernetes side: one Secret, patched once per refresh, no reads on the hot path.
    counts = cluster.object_request_counts(NAMESPACE, "palisade")
    assert counts.get(("create", "secrets")) == 1
    assert counts.get(("patch", "secrets"), 0) <= token_server.issued - 1
    reads_now = sum(
        n for (verb, res), n in cluster.request_counts().items() if verb in ("get", "list") and res == "secrets"
    )
    assert reads_now == reads, "refreshes read Secrets from the API instead of the caches"
    assert_no_leaks(seeded, logs, minted)


async def test_an_outage_longer_than_the_lifetime_keeps_the_token_until_expiry_and_recovers_within_the_backoff(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    token_server.lifetime = 6
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: settled(seeded, "palisade"))
    old_token = secret_token(seeded, "palisade")
    expires_at = secret_expiry(seeded, "palisade")
    assert expires_at is not None
    token_server.fail("unavailable")
    outage_start = time.time()

    # Until expiry: the old token stays and Ready stays True (while the operator retries).
    async with Always(lambda: honest(seeded, "palisade")):
        while time.time() < expires_at.timestamp() - 0.3:
            assert secret_token(seeded, "palisade") == old_token, "a failed refresh replaced the token"
            assert is_ready(seeded, "palisade"), "Ready turned False before the token expired"
            await asyncio.sleep(0.05)
        assert any(r.status == 503 for r in exchanges(token_server)), "no refresh was tried before expiry"

        # Past expiry: not Ready, for the endpoint's reason; still retrying, not stalled.
        await eventually(
            lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"),
            timeout=expires_at.timestamp() + 5 - time.time(),
        )
        assert has_condition(seeded, "palisade", "Stalled", "False")
        assert has_condition(seeded, "palisade", "Reconciling", "True")
        failure = last_failure(seeded, "palisade")
        assert (failure["reason"], failure["httpStatus"], failure["code"]) == ("EndpointUnavailable", 503, 14)
        assert secret_token(seeded, "palisade") == old_token  # kept, even expired: nothing better exists
        await eventually(lambda: has_event(seeded, "palisade", "Warning", "EndpointUnavailable"))

        # The outage goes on past the lifetime, then the endpoint returns.
        await asyncio.sleep(max(0.0, outage_start + 8 - time.time()))
        failed = [r for r in exchanges(token_server) if r.status == 503]
        token_server.fail(None)
        restored = time.time()
        # The next attempt comes at the latest one backoff (5 s x 2^(n-1)) after the last one.
        deadline = max(restored, failed[-1].at + backoff_ceiling(len(failed))) + 3.0
        await eventually(
            lambda: settled(seeded, "palisade", token_server.tokens[-1]) and token_server.issued == 2,
            timeout=deadline - time.time() + 5,
            message="recovery after the outage",
        )
    recovered = time.time()
    assert recovered <= deadline + 1, f"recovered {recovered - restored:.1f}s after the endpoint returned"

    outage = restored - outage_start
    assert 2 <= len(failed) <= 5, f"{len(failed)} attempts in a {outage:.0f}s outage"
    gaps = [b.at - a.at for a, b in itertools.pairwise(failed)]
    assert all(gap >= 0.5 for gap in gaps), f"attempts closer than the minimum retry delay: {gaps}"
    assert len(exchanges(token_server)) == len(failed) + 2  # plus the first token and the recovery
    status = seeded.status("palisade")
    assert status["failedAttempts"] == 0
    assert "lastFailure" not in status
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "Recovered"))
    assert_no_leaks(seeded, logs, minted)


# Rate limits ------------------------------------------------------------------------------


async def test_a_429_storm_with_retry_after_is_retried_no_sooner_than_the_endpoint_asks(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    # Retry-After (6 s) is longer than the first backoff (4-5 s): it is the lower bound.
    token_server.fail("rate-limited", retry_after=6)
    seeded.create_cc("palisade", cc_spec(token_server))

    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "RateLimited"))
    failure = last_failure(seeded, "palisade")
    assert (failure["httpStatus"], failure["code"], failure["retryAfterSeconds"]) == (429, 8, 6)
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert has_condition(seeded, "palisade", "Reconciling", "True")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "RateLimited"))
    await eventually(lambda: len(exchanges(token_server)) >= 2, timeout=20, message="a second attempt")
    token_server.fail(None)  # the storm ends after two answers

    await eventually(lambda: settled(seeded, "palisade"), timeout=25)
    records = exchanges(token_server)
    assert [r.status for r in records] == [429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(records)]
    # A little slack: the operator may count from just before it sent the request.
    assert all(gap >= 5.9 for gap in gaps), f"retried sooner than Retry-After: {gaps}"
    assert gaps[1] >= 0.8 * 10 - 0.1, f"the second backoff (8-10 s) was not kept: {gaps}"
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[0]
    assert "lastFailure" not in seeded.status("palisade")
    assert event_reasons(seeded, "palisade")[("Warning", "RateLimited")] == 1  # once per failure, not per attempt
    assert_no_leaks(seeded, logs, minted)


async def test_a_429_storm_without_retry_after_backs_off_exponentially(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    token_server.fail("rate-limited-no-retry-after")
    seeded.create_cc("palisade", cc_spec(token_server))

    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "RateLimited"))
    failure = last_failure(seeded, "palisade")
    assert (failure["httpStatus"], failure["code"]) == (429, 8)
    assert "retryAfterSeconds" not in failure
    assert has_condition(seeded, "palisade", "Stalled", "False")
    await eventually(lambda: len(exchanges(token_server)) >= 2, timeout=20, message="a second attempt")
    token_server.fail(None)

    await eventually(lambda: settled(seeded, "palisade"), timeout=25)
    records = exchanges(token_server)
    assert [r.status for r in records] == [429, 429, 200]
    first, second = (b.at - a.at for a, b in itertools.pairwise(records))
    # 5 s x 2^(n-1), jittered down by at most 20 %; generous above for a loaded machine.
    assert 4.0 - 0.1 <= first <= 5.0 + 3, f"first backoff {first:.1f}s"
    assert 8.0 - 0.1 <= second <= 10.0 + 3, f"second backoff {second:.1f}s"
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[0]
    assert_no_leaks(seeded, logs, minted)


async def test_a_long_retry_after_still_gets_one_attempt_before_the_token_expires(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    # A 10 s token refreshed at 20 %: the 429 says "come back in an hour", 8 s before expiry.
    token_server.lifetime = 10
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 20}))
    await eventually(lambda: settled(seeded, "palisade"))
    old_expiry = secret_expiry(seeded, "palisade")
    assert old_expiry is not None
    token_server.fail("rate-limited", retry_after=3600, times=1)

    async with Always(lambda: honest(seeded, "palisade") or (None if is_ready(seeded, "palisade") else "not Ready")):
        await eventually(lambda: last_failure(seeded, "palisade").get("retryAfterSeconds") == 3600, timeout=15)
        assert is_ready(seeded, "palisade")
        # One attempt is still made shortly before expiry, and it saves the token.
        await eventually(
            lambda: token_server.issued == 2 and settled(seeded, "palisade", token_server.tokens[-1]),
            timeout=old_expiry.timestamp() - time.time() + 2,
            message="a new token before the old one expired",
        )
    records = exchanges(token_server)
    assert [r.status for r in records] == [200, 429, 200]
    assert records[2].at < old_expiry.timestamp(), "the attempt came only after the token had expired"
    assert has_event(seeded, "palisade", "Warning", "RateLimited")
    assert records[2].at - records[1].at >= 2.0, "the 429 was answered with a quick retry"
    assert "lastFailure" not in seeded.status("palisade")
    assert event_reasons(seeded, "palisade")[("Warning", "NotReady")] == 0
    assert_no_leaks(seeded, logs, minted)


# Silence ----------------------------------------------------------------------------------


async def _silent_endpoint_times_out(
    mode: str, seeded: Api, token_server: DevTokenServer, logs: LogCapture, minted: TokenRecorder
) -> None:
    token_server.fail(mode)
    created = time.monotonic()
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"), timeout=20)
    took = time.monotonic() - created
    assert 2.5 <= took <= 15, f"gave up after {took:.1f}s with exchange_timeout=3"
    failure = last_failure(seeded, "palisade")
    assert failure["reason"] == "EndpointUnavailable"
    assert "3s" in failure["message"] or "timed out" in failure["message"], failure["message"]
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert has_condition(seeded, "palisade", "Reconciling", "True")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "EndpointUnavailable"))
    assert_not_issued(seeded, "palisade")
    # The server saw the operator give up (the connection closed after about 3 s).
    [abandoned] = await eventually(lambda: exchanges(token_server), message="the abandoned request recorded")
    assert abandoned.failure == mode
    assert 2.9 <= abandoned.at - abandoned.started <= 10
    assert token_server.inflight == 0

    token_server.fail(None)
    await eventually(lambda: settled(seeded, "palisade"), timeout=20)
    records = exchanges(token_server)
    assert [r.failure for r in records] == [mode, None]
    # The backoff (5 s, jittered down by at most 20 %) runs from the failure: the operator gave up 3 s
    # after it sent the request (a trickle is seen to end only at its next byte, so not `abandoned.at`).
    gave_up = abandoned.started + 3.0
    assert records[1].started - gave_up >= 0.8 * 5 - 0.2, "retried without a backoff after the timeout"
    assert seeded.secret_data("palisade")["accessToken"] == token_server.tokens[0]
    assert_no_leaks(seeded, logs, minted)


@pytest.mark.operator_settings(exchange_timeout=3)
async def test_an_endpoint_that_accepts_and_never_answers_is_endpoint_unavailable_after_the_exchange_timeout(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    await _silent_endpoint_times_out("hang", seeded, token_server, logs, minted)


@pytest.mark.operator_settings(exchange_timeout=3)
async def test_an_endpoint_that_trickles_a_byte_a_second_is_endpoint_unavailable_after_the_exchange_timeout(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    await _silent_endpoint_times_out("trickle", seeded, token_server, logs, minted)


# TLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("certificate", ["unknown-ca", "wrong-host", "expired"])
async def test_a_certificate_that_does_not_verify_is_endpoint_unavailable_and_gets_no_credentials(
    seeded: Api, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder, tmp_path: Path, certificate: str
) -> None:
    with DevTokenServer(
        credentials={CLIENT_ID: CLIENT_SECRET}, certificate=certificate, cert_dir=tmp_path / "bad-ca"
    ) as bad:
        # The CA bundle holds the CA the server claims: only the certificate itself is wrong.
        seeded.put_configmap("bad-ca", {"ca.crt": bad.ca_pem.decode()})
        spec = cc_spec(bad, caBundleRef={"kind": "ConfigMap", "name": "bad-ca", "key": "ca.crt"})
        seeded.create_cc("palisade", spec)

        await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"))
        failure = last_failure(seeded, "palisade")
        assert "TLS" in failure["message"], failure["message"]
        assert "httpStatus" not in failure
        assert has_condition(seeded, "palisade", "Stalled", "False")
        assert has_condition(seeded, "palisade", "Reconciling", "True")
        event = await eventually(lambda: has_event(seeded, "palisade", "Warning", "EndpointUnavailable"))
        assert "TLS" in str(event.get("message"))
        assert_not_issued(seeded, "palisade")
        # The handshake failed: the endpoint never saw a request, let alone the credentials.
        await asyncio.sleep(NO_RETRY_WINDOW)
        assert bad.requests == []
        assert last_failure(seeded, "palisade")["reason"] == "EndpointUnavailable"
        assert seeded.status("palisade")["failedAttempts"] == 1, "retried within the first backoff"
    assert_no_leaks(seeded, logs, minted)


# Redirects --------------------------------------------------------------------------------


async def test_a_redirect_is_not_followed_and_stalls_as_endpoint_not_found(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture, minted: TokenRecorder
) -> None:
    token_server.fail("redirect")
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointNotFound"))
    failure = last_failure(seeded, "palisade")
    assert failure["httpStatus"] == 307
    assert "redirect" in failure["message"]
    assert has_condition(seeded, "palisade", "Stalled", "True", "EndpointNotFound")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "EndpointNotFound"))
    assert_not_issued(seeded, "palisade")
    await no_retry_within(token_server)
    # The redirect target got nothing: the credentials were not replayed to it.
    assert not any(r.path.startswith(REDIRECT_PREFIX) for r in token_server.requests)
    assert token_server.issued == 0
    assert_no_leaks(seeded, logs, minted)


# Answers that are not a token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason", "words"),
    [
        ("huge", "InvalidResponse", "exceeds"),
        ("truncated", "EndpointUnavailable", ""),
        ("not-utf8", "InvalidResponse", "JSON"),
        ("wrong-shape", "InvalidResponse", "JSON object"),
        ("gzip-broken", "InvalidResponse", "decoded"),
    ],
)
async def test_a_200_body_that_is_not_a_token_writes_no_secret(
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
    mode: str,
    reason: str,
    words: str,
) -> None:
    token_server.fail(mode)
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", reason))
    failure = last_failure(seeded, "palisade")
    assert failure["reason"] == reason
    assert words in failure["message"], failure["message"]
    if reason == "InvalidResponse":
        assert failure.get("httpStatus", 200) == 200
    assert len(failure["message"]) <= 256
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert has_condition(seeded, "palisade", "Reconciling", "True")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", reason))
    assert_not_issued(seeded, "palisade")
    await no_retry_within(token_server)
    assert minted.tokens, f"the {mode} body carried no token"
    assert_no_leaks(seeded, logs, minted)


@pytest.mark.parametrize(
    "expires_in", [0, -5, 3.5, "3600", 10 * 365 * 86400], ids=["zero", "negative", "float", "string", "ten-years"]
)
async def test_a_token_with_a_bogus_expires_in_is_an_invalid_response_and_writes_no_secret(
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
    expires_in: Any,
) -> None:
    token_server.fail("expires-in", expires_in=expires_in)
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "InvalidResponse"))
    failure = last_failure(seeded, "palisade")
    assert (failure["reason"], failure["httpStatus"]) == ("InvalidResponse", 200)
    assert "expiresIn" in failure["message"], failure["message"]
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "InvalidResponse"))
    assert_not_issued(seeded, "palisade")
    assert "renewalTime" not in seeded.status("palisade")
    await no_retry_within(token_server)
    assert_no_leaks(seeded, logs, minted)


# Error classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason", "stalled"),
    [
        (400, 16, "InvalidCredentials", True),  # UNAUTHENTICATED behind a gateway that says 400
        (400, 8, "RateLimited", False),  # RESOURCE_EXHAUSTED
        (503, 14, "EndpointUnavailable", False),  # UNAVAILABLE
    ],
    ids=["400-unauthenticated", "400-resource-exhausted", "503-unavailable"],
)
async def test_palisade_grpc_codes_refine_the_http_status(
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
    status: int,
    code: int,
    reason: str,
    stalled: bool,
) -> None:
    token_server.fail("error", status=status, code=code, message="the request was refused")
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", reason))
    failure = last_failure(seeded, "palisade")
    assert (failure["reason"], failure["httpStatus"], failure["code"]) == (reason, status, code)
    assert "the request was refused" in failure["message"]
    if stalled:
        assert has_condition(seeded, "palisade", "Stalled", "True", reason)
    else:
        assert has_condition(seeded, "palisade", "Stalled", "False")
        assert has_condition(seeded, "palisade", "Reconciling", "True")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", reason))
    assert_not_issued(seeded, "palisade")
    await no_retry_within(token_server)
    assert_no_leaks(seeded, logs, minted)


@pytest.mark.parametrize("status", [408, 425])
async def test_request_timeout_and_too_early_are_transient(
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
    status: int,
) -> None:
    # As a proxy answers them: no Palisade body at all.
    token_server.fail("raw", status=status)
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", "EndpointUnavailable"))
    failure = last_failure(seeded, "palisade")
    assert (failure["reason"], failure["httpStatus"]) == ("EndpointUnavailable", status)
    assert has_condition(seeded, "palisade", "Stalled", "False")
    assert has_condition(seeded, "palisade", "Reconciling", "True")
    assert await eventually(lambda: has_event(seeded, "palisade", "Warning", "EndpointUnavailable"))
    assert_not_issued(seeded, "palisade")
    await no_retry_within(token_server)

    token_server.fail(None)  # transient indeed: the next retry (within the first backoff) succeeds
    await eventually(lambda: settled(seeded, "palisade"), timeout=10)
    assert [r.status for r in exchanges(token_server)] == [status, 200]
    assert_no_leaks(seeded, logs, minted)
