"""The issuer: single flight, sharing of recent tokens, per-host concurrency, counting, cancellation.

The network is ``httpx.MockTransport`` behind a ``ClientPool`` whose ``get()`` always returns one
mock-backed client. Handlers that must hold a request open wait on an ``asyncio.Event``, so every
interleaving here is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tokensync.core import StoredToken
from tokensync.exchange import (
    ClientCredentials,
    ClientPool,
    EndpointFailedError,
    EndpointRejectedError,
    HostNotAllowedError,
)
from tokensync.issuer import Issuer, IssueRequest
from tokensync.metrics import Metrics
from tokensync.models import ClientCredentialSpec, Reason

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
HOST_A, HOST_B = "a.example.com", "b.example.com"
URL_A, URL_B = f"https://{HOST_A}/token", f"https://{HOST_B}/token"
ALLOWED = (HOST_A, HOST_B)
SPEC = ClientCredentialSpec.model_validate({"credentialsRef": {"name": "creds"}})
CREDS = ClientCredentials("client-1234", "s3cr3t-Zq9Kx7Wm")

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def request(fingerprint: str = "fp-1", url: str = URL_A) -> IssueRequest:
    return IssueRequest(SPEC, url, CREDS, None, fingerprint)


def token_response(access_token: str, expires_in: int = 3600) -> httpx.Response:
    body = {"accessToken": access_token, "scope": "balances:read", "expiresIn": expires_in, "tokenType": "Bearer"}
    return httpx.Response(200, json=body)


class Endpoint:
    """A token endpoint: numbered tokens, optional gate, scripted failures, in-flight accounting."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.failures: list[httpx.Response] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.host_entered: dict[str, asyncio.Event] = {HOST_A: asyncio.Event(), HOST_B: asyncio.Event()}

    async def __call__(self, http_request: httpx.Request) -> httpx.Response:
        host = http_request.url.host
        self.requests.append(http_request)
        number = len(self.requests)
        self.in_flight[host] += 1
        self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
        self.entered.set()
        self.host_entered[host].set()
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight[host] -= 1
        if self.failures:
            return self.failures.pop(0)
        return token_response(f"tok-{number}")

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate


class MockPool(ClientPool):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    def get(self, ca_pem: str | None) -> httpx.AsyncClient:
        return self.client

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def issuer(endpoint: Endpoint, metrics: Metrics) -> AsyncIterator[Issuer]:
    issuer = Issuer(MockPool(endpoint), ALLOWED, max_per_host=8, clock=lambda: T0, metrics=metrics)
    yield issuer
    await issuer.aclose()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(2):
        await event.wait()


def exchanges_metric(metrics: Metrics, host: str, reason: str) -> float | None:
    return metrics.registry.get_sample_value("tokensync_exchanges_total", {"host": host, "reason": reason})


# Single flight -------------------------------------------------------------------------------


async def test_concurrent_callers_with_one_fingerprint_share_one_exchange(issuer: Issuer, endpoint: Endpoint) -> None:
    gate = endpoint.hold()
    tasks = [asyncio.create_task(issuer.issue(request())) for _ in range(10)]
    await wait(endpoint.entered)
    await settle()
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert len(endpoint.requests) == 1
    assert issuer.exchanges == 1
    assert {t.access_token for t in tokens} == {"tok-1"}
    assert all(t is tokens[0] for t in tokens)


async def test_the_token_is_built_from_the_response_and_the_clock(issuer: Issuer) -> None:
    token = await issuer.issue(request("fp-x"))
    assert token == StoredToken(
        access_token="tok-1",
        token_type="Bearer",
        scope="balances:read",
        issued_at=T0,
        expires_at=T0 + timedelta(hours=1),
        fingerprint="fp-x",
    )
    assert issuer.recent("fp-x") is token


async def test_a_failure_is_shared_by_all_waiters_and_not_cached(issuer: Issuer, endpoint: Endpoint) -> None:
    gate = endpoint.hold()
    endpoint.failures.append(httpx.Response(503, json={"code": 14, "message": "down"}))
    tasks = [asyncio.create_task(issuer.issue(request())) for _ in range(10)]
    await wait(endpoint.entered)
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len(endpoint.requests) == 1
    assert all(isinstance(r, EndpointFailedError) for r in results)
    assert {r.reason for r in results if isinstance(r, EndpointFailedError)} == {Reason.ENDPOINT_UNAVAILABLE}
    assert issuer.recent("fp-1") is None
    # Not cached: the next caller makes a new exchange, which succeeds.
    token = await issuer.issue(request(), accept=lambda _: True)
    assert token.access_token == "tok-2"
    assert len(endpoint.requests) == 2


# Sharing recent tokens -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "requests", "access_token"),
    [
        pytest.param(lambda _: True, 1, "tok-1", id="an accepted recent token is reused without a request"),
        pytest.param(lambda _: False, 2, "tok-2", id="a refused recent token makes a new request"),
        pytest.param(None, 2, "tok-2", id="no accept policy always makes a new request"),
    ],
)
async def test_sharing_a_recent_token(
    issuer: Issuer,
    endpoint: Endpoint,
    accept: Callable[[StoredToken], bool] | None,
    requests: int,
    access_token: str,
) -> None:
    first = await issuer.issue(request())
    second = await issuer.issue(request(), accept=accept)
    assert second.access_token == access_token
    assert len(endpoint.requests) == requests
    assert issuer.exchanges == requests
    assert (second is first) == (requests == 1)
    assert issuer.recent("fp-1") is second


async def test_accept_is_asked_about_the_recent_token(issuer: Issuer) -> None:
    first = await issuer.issue(request())
    asked: list[StoredToken] = []
    await issuer.issue(request(), accept=lambda t: asked.append(t) or True)  # type: ignore[func-returns-value]
    assert asked == [first]


async def test_a_recent_token_is_not_shared_across_fingerprints(issuer: Issuer, endpoint: Endpoint) -> None:
    await issuer.issue(request("fp-1"))
    other = await issuer.issue(request("fp-2"), accept=lambda _: True)
    assert other.access_token == "tok-2"
    assert len(endpoint.requests) == 2


async def test_different_fingerprints_make_separate_concurrent_requests(issuer: Issuer, endpoint: Endpoint) -> None:
    gate = endpoint.hold()
    tasks = [asyncio.create_task(issuer.issue(request(fp))) for fp in ("fp-1", "fp-2", "fp-1", "fp-2")]
    await wait(endpoint.entered)
    await settle()
    gate.set()
    tokens = await asyncio.gather(*tasks)
    assert len(endpoint.requests) == 2
    assert tokens[0] is tokens[2]
    assert tokens[1] is tokens[3]
    assert tokens[0].access_token != tokens[1].access_token


async def test_the_recent_map_is_bounded(endpoint: Endpoint) -> None:
    issuer = Issuer(MockPool(endpoint), ALLOWED, clock=lambda: T0, remember=2)
    try:
        for fp in ("fp-1", "fp-2", "fp-3"):
            await issuer.issue(request(fp))
        assert issuer.recent("fp-1") is None
        assert issuer.recent("fp-2") is not None
        assert issuer.recent("fp-3") is not None
    finally:
        await issuer.aclose()


# Per-host concurrency ------------------------------------------------------------------------


async def test_at_most_max_per_host_requests_run_against_one_host(endpoint: Endpoint) -> None:
    issuer = Issuer(MockPool(endpoint), ALLOWED, max_per_host=2, clock=lambda: T0)
    try:
        gate = endpoint.hold()
        on_a = [asyncio.create_task(issuer.issue(request(f"a-{i}", URL_A))) for i in range(5)]
        await wait(endpoint.host_entered[HOST_A])
        await settle()
        assert endpoint.in_flight[HOST_A] == 2
        # Another host is not held up by the first one's queue.
        on_b = asyncio.create_task(issuer.issue(request("b-0", URL_B)))
        await wait(endpoint.host_entered[HOST_B])
        assert endpoint.in_flight[HOST_B] == 1
        gate.set()
        tokens = await asyncio.gather(*on_a, on_b)
    finally:
        await issuer.aclose()
    assert endpoint.max_in_flight[HOST_A] == 2
    assert sum(1 for r in endpoint.requests if r.url.host == HOST_A) == 5
    assert len({t.access_token for t in tokens}) == 6


# Counting ------------------------------------------------------------------------------------


async def test_exchanges_are_counted_by_host_and_reason(issuer: Issuer, endpoint: Endpoint, metrics: Metrics) -> None:
    endpoint.failures.append(httpx.Response(401, json={"code": 16, "message": "bad"}))
    with pytest.raises(EndpointRejectedError):
        await issuer.issue(request("fp-1", URL_A))
    await issuer.issue(request("fp-1", URL_A))
    await issuer.issue(request("fp-2", URL_B))
    assert issuer.exchanges == 3
    assert exchanges_metric(metrics, HOST_A, "InvalidCredentials") == 1
    assert exchanges_metric(metrics, HOST_A, "TokenIssued") == 1
    assert exchanges_metric(metrics, HOST_B, "TokenIssued") == 1
    assert exchanges_metric(metrics, HOST_B, "InvalidCredentials") is None
    duration = metrics.registry.get_sample_value("tokensync_exchange_duration_seconds_count", {"host": HOST_A})
    assert duration == 2


async def test_a_shared_token_is_not_counted_again(issuer: Issuer, metrics: Metrics) -> None:
    await issuer.issue(request())
    await issuer.issue(request(), accept=lambda _: True)
    assert issuer.exchanges == 1
    assert exchanges_metric(metrics, HOST_A, "TokenIssued") == 1


async def test_a_disallowed_host_raises_and_counts_nothing(
    issuer: Issuer, endpoint: Endpoint, metrics: Metrics
) -> None:
    with pytest.raises(HostNotAllowedError) as info:
        await issuer.issue(request(url="https://evil.example.net/token"))
    assert info.value.reason is Reason.HOST_NOT_ALLOWED
    assert endpoint.requests == []
    assert issuer.exchanges == 0
    assert exchanges_metric(metrics, "evil.example.net", "HostNotAllowed") is None
    assert [s for family in metrics.exchanges.collect() for s in family.samples] == []


# Cancellation --------------------------------------------------------------------------------


async def test_cancelling_the_only_waiter_lets_the_exchange_finish_for_the_next_caller(
    issuer: Issuer, endpoint: Endpoint
) -> None:
    gate = endpoint.hold()
    task = asyncio.create_task(issuer.issue(request()))
    await wait(endpoint.entered)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    async with asyncio.timeout(2):
        token = await issuer.issue(request())
    # The exchange was not abandoned half-way: the next caller gets its token, with no second request.
    assert token.access_token == "tok-1"
    assert len(endpoint.requests) == 1
    async with asyncio.timeout(2):
        again = await issuer.issue(request())  # nothing stuck in flight: a new exchange
    assert again.access_token == "tok-2"


async def test_cancelling_a_follower_does_not_disturb_the_others(issuer: Issuer, endpoint: Endpoint) -> None:
    gate = endpoint.hold()
    leader = asyncio.create_task(issuer.issue(request()))
    await wait(endpoint.entered)
    follower = asyncio.create_task(issuer.issue(request()))
    other = asyncio.create_task(issuer.issue(request()))
    await settle()
    follower.cancel()
    await settle()
    gate.set()
    results = await asyncio.gather(leader, follower, other, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[0], StoredToken)
    assert results[2] is results[0]
    assert len(endpoint.requests) == 1


async def test_cancelling_the_first_caller_does_not_cancel_the_others(issuer: Issuer, endpoint: Endpoint) -> None:
    gate = endpoint.hold()
    leader = asyncio.create_task(issuer.issue(request()))
    await wait(endpoint.entered)
    follower = asyncio.create_task(issuer.issue(request()))
    await settle()
    leader.cancel()
    await settle()
    gate.set()
    async with asyncio.timeout(2):
        (result,) = await asyncio.gather(follower, return_exceptions=True)
    assert not follower.cancelled()
    assert isinstance(result, StoredToken)


async def test_a_cancelled_exchange_is_not_counted_as_issued(
    issuer: Issuer, endpoint: Endpoint, metrics: Metrics
) -> None:
    endpoint.hold()
    task = asyncio.create_task(issuer.issue(request()))
    await wait(endpoint.entered)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not exchanges_metric(metrics, HOST_A, "TokenIssued")


async def test_the_request_is_a_palisade_exchange(issuer: Issuer, endpoint: Endpoint) -> None:
    await issuer.issue(request())
    (sent,) = endpoint.requests
    assert sent.method == "POST"
    assert str(sent.url) == URL_A
    assert json.loads(sent.content) == {"clientId": "client-1234", "clientSecret": "s3cr3t-Zq9Kx7Wm"}
