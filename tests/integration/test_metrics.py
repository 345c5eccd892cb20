"""Prometheus metrics move as tokens are issued, refreshed and fail; they never carry a secret."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokensync.core import parse_rfc3339
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CLIENT_SECRET, NAMESPACE, Api, OperatorRunner, cc_spec, eventually, free_port

METRICS_PORT = free_port()


def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


@pytest.mark.operator_settings(metrics_port=METRICS_PORT)
async def test_metrics_follow_issue_refresh_failure_and_deletion(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    port = METRICS_PORT
    host = "127.0.0.1"
    resource = {"namespace": NAMESPACE, "name": "measured"}

    seeded.create_cc("measured", cc_spec(token_server))
    await eventually(lambda: value(scrape(port)[1], "tokensync_ready", **resource) == 1.0, message="ready=1")
    _, samples = scrape(port)
    expires_at = parse_rfc3339(seeded.status("measured")["expiresAt"])
    assert value(samples, "tokensync_token_expiry_timestamp_seconds", **resource) == expires_at.timestamp()
    renewal = value(samples, "tokensync_token_renewal_timestamp_seconds", **resource)
    assert renewal is not None
    assert renewal < expires_at.timestamp()
    assert value(samples, "tokensync_exchanges_total", host=host, reason="TokenIssued") == 1.0
    assert value(samples, "tokensync_exchange_duration_seconds_count", host=host) == 1.0
    assert value(samples, "tokensync_secret_writes_total", namespace=NAMESPACE) == 1.0
    assert value(samples, "tokensync_failed_attempts", **resource) == 0.0

    token_server.fail("unavailable")
    seeded.request_refresh("measured", "1")
    await eventually(
        lambda: value(scrape(port)[1], "tokensync_exchanges_total", host=host, reason="EndpointUnavailable") == 1.0,
        message="a failed exchange is counted by reason",
    )
    await eventually(lambda: value(scrape(port)[1], "tokensync_failed_attempts", **resource) == 1.0)
    assert value(scrape(port)[1], "tokensync_ready", **resource) == 1.0  # the old token is still valid

    token_server.fail(None)
    seeded.request_refresh("measured", "2")
    await eventually(
        lambda: value(scrape(port)[1], "tokensync_exchanges_total", host=host, reason="TokenIssued") == 2.0
    )
    await eventually(lambda: value(scrape(port)[1], "tokensync_secret_writes_total", namespace=NAMESPACE) == 2.0)

    text, _ = scrape(port)
    assert CLIENT_SECRET not in text
    for token in token_server.tokens:
        assert token not in text

    seeded.delete_cc("measured")
    await eventually(
        lambda: value(scrape(port)[1], "tokensync_ready", **resource) is None, message="series removed on deletion"
    )


HEALTH_PORT = free_port()


@pytest.mark.operator_settings(health_port=HEALTH_PORT)
async def test_the_health_endpoints_answer_while_the_operator_runs(operator: OperatorRunner) -> None:
    """/healthz: the process serves; /readyz: its caches are synced (the runner waited for that)."""
    async with httpx.AsyncClient() as client:
        for path in ("/healthz", "/readyz"):
            response = await eventually_response(client, f"http://127.0.0.1:{HEALTH_PORT}{path}")
            assert response.status_code == 200, path
            assert response.text == "ok"
        missing = await client.get(f"http://127.0.0.1:{HEALTH_PORT}/nothing", timeout=10)
        assert missing.status_code == 404


async def eventually_response(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """The first answer from ``url`` (the server may need a moment to accept connections)."""

    async def answer() -> httpx.Response | None:
        try:
            return await client.get(url, timeout=10)
        except httpx.TransportError:
            return None

    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        response = await answer()
        if response is not None:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer within 30 s")
