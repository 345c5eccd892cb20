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


LIVENESS_PORT = free_port()


@pytest.mark.operator_settings(liveness_port=LIVENESS_PORT)
async def test_the_liveness_endpoint_answers_while_the_operator_runs(operator: OperatorRunner) -> None:
    async def healthy() -> bool:
        async with httpx.AsyncClient() as client:
            try:
                response = await client.get(f"http://127.0.0.1:{LIVENESS_PORT}/healthz", timeout=2)
            except httpx.TransportError:
                return False
        return response.status_code == 200

    for _ in range(100):
        if await healthy():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("/healthz did not answer 200")
