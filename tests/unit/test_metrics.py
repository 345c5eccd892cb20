"""Prometheus metrics: per-resource gauges and their removal, exchange counting, the HTTP endpoint."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from tokensync.metrics import Metrics

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
T0_UNIX = 1893499200  # 2030-01-01T12:00:00Z
RESOURCE_GAUGES = (
    "tokensync_ready",
    "tokensync_failed_attempts",
    "tokensync_token_expiry_timestamp_seconds",
    "tokensync_token_renewal_timestamp_seconds",
)


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


def series(metrics: Metrics) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample in the registry, as (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in metrics.registry.collect()
        for sample in family.samples
    }


def observe(metrics: Metrics, namespace: str = "team-a", name: str = "palisade", **changes: object) -> None:
    fields: dict[str, object] = {
        "ready": True,
        "failed_attempts": 0,
        "expires_at": T0 + timedelta(hours=1),
        "renewal_at": T0 + timedelta(minutes=40),
    }
    metrics.resource_observed(namespace, name, **{**fields, **changes})  # type: ignore[arg-type]


def test_t0_unix_is_right() -> None:
    assert T0.timestamp() == T0_UNIX


# resource_observed() -------------------------------------------------------------------------


def test_resource_observed_sets_the_gauges() -> None:
    metrics = Metrics()
    observe(metrics)
    labels = {"namespace": "team-a", "name": "palisade"}
    assert value(metrics, "tokensync_ready", **labels) == 1
    assert value(metrics, "tokensync_failed_attempts", **labels) == 0
    assert value(metrics, "tokensync_token_expiry_timestamp_seconds", **labels) == T0_UNIX + 3600
    assert value(metrics, "tokensync_token_renewal_timestamp_seconds", **labels) == T0_UNIX + 2400


def test_resource_observed_updates_a_failing_resource() -> None:
    metrics = Metrics()
    observe(metrics)
    observe(metrics, ready=False, failed_attempts=3)
    labels = {"namespace": "team-a", "name": "palisade"}
    assert value(metrics, "tokensync_ready", **labels) == 0
    assert value(metrics, "tokensync_failed_attempts", **labels) == 3


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(T0 + timedelta(microseconds=999_999), id="microseconds are dropped"),
        pytest.param(datetime(2030, 1, 1, 14, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=2))), id="any zone"),
    ],
)
def test_times_are_whole_second_unix_times(moment: datetime) -> None:
    metrics = Metrics()
    observe(metrics, expires_at=moment, renewal_at=moment)
    labels = {"namespace": "team-a", "name": "palisade"}
    assert value(metrics, "tokensync_token_expiry_timestamp_seconds", **labels) == T0_UNIX
    assert value(metrics, "tokensync_token_renewal_timestamp_seconds", **labels) == T0_UNIX


def test_a_resource_without_a_token_has_no_time_series() -> None:
    metrics = Metrics()
    observe(metrics)
    observe(metrics, ready=False, expires_at=None, renewal_at=None)
    labels = {"namespace": "team-a", "name": "palisade"}
    assert value(metrics, "tokensync_token_expiry_timestamp_seconds", **labels) is None
    assert value(metrics, "tokensync_token_renewal_timestamp_seconds", **labels) is None
    assert value(metrics, "tokensync_ready", **labels) == 0


def test_a_first_observation_without_a_token_is_fine() -> None:
    metrics = Metrics()
    observe(metrics, ready=False, expires_at=None, renewal_at=None)
    assert value(metrics, "tokensync_ready", namespace="team-a", name="palisade") == 0
    assert value(metrics, "tokensync_token_expiry_timestamp_seconds", namespace="team-a", name="palisade") is None


# resource_gone() -----------------------------------------------------------------------------


def test_resource_gone_removes_every_series_of_that_resource_only() -> None:
    metrics = Metrics()
    observe(metrics, "team-a", "palisade")
    observe(metrics, "team-a", "other")
    observe(metrics, "team-b", "palisade")
    metrics.exchange_done("api.palisade.co", "TokenIssued", 0.2)
    before = series(metrics)
    metrics.resource_gone("team-a", "palisade")
    removed = before - series(metrics)
    assert {name for name, _ in removed} == set(RESOURCE_GAUGES)
    assert {labels for _, labels in removed} == {(("name", "palisade"), ("namespace", "team-a"))}
    assert value(metrics, "tokensync_ready", namespace="team-a", name="other") == 1
    assert value(metrics, "tokensync_ready", namespace="team-b", name="palisade") == 1
    assert value(metrics, "tokensync_exchanges_total", host="api.palisade.co", reason="TokenIssued") == 1


def test_resource_gone_for_an_unknown_resource_is_harmless() -> None:
    metrics = Metrics()
    observe(metrics)
    before = series(metrics)
    metrics.resource_gone("team-z", "never-seen")
    assert series(metrics) == before


def test_resource_gone_after_a_tokenless_observation_is_harmless() -> None:
    metrics = Metrics()
    observe(metrics, expires_at=None, renewal_at=None)
    metrics.resource_gone("team-a", "palisade")
    assert value(metrics, "tokensync_ready", namespace="team-a", name="palisade") is None


# exchange_done() and secret_written() --------------------------------------------------------


def test_exchange_done_counts_by_host_and_reason_and_times_it() -> None:
    metrics = Metrics()
    metrics.exchange_done("a.example.com", "TokenIssued", 0.07)
    metrics.exchange_done("a.example.com", "TokenIssued", 0.3)
    metrics.exchange_done("a.example.com", "RateLimited", 2.0)
    metrics.exchange_done("b.example.com", "TokenIssued", 12.0)
    assert value(metrics, "tokensync_exchanges_total", host="a.example.com", reason="TokenIssued") == 2
    assert value(metrics, "tokensync_exchanges_total", host="a.example.com", reason="RateLimited") == 1
    assert value(metrics, "tokensync_exchanges_total", host="b.example.com", reason="TokenIssued") == 1
    assert value(metrics, "tokensync_exchanges_total", host="b.example.com", reason="RateLimited") is None
    duration = "tokensync_exchange_duration_seconds"
    assert value(metrics, f"{duration}_count", host="a.example.com") == 3
    assert value(metrics, f"{duration}_sum", host="a.example.com") == pytest.approx(2.37)
    assert value(metrics, f"{duration}_bucket", host="a.example.com", le="0.1") == 1
    assert value(metrics, f"{duration}_bucket", host="a.example.com", le="0.5") == 2
    assert value(metrics, f"{duration}_bucket", host="b.example.com", le="10.0") == 0
    assert value(metrics, f"{duration}_bucket", host="b.example.com", le="30.0") == 1


def test_secret_written_counts_by_namespace() -> None:
    metrics = Metrics()
    metrics.secret_written("team-a")
    metrics.secret_written("team-a")
    metrics.secret_written("team-b")
    assert value(metrics, "tokensync_secret_writes_total", namespace="team-a") == 2
    assert value(metrics, "tokensync_secret_writes_total", namespace="team-b") == 1


def test_two_instances_do_not_share_values() -> None:
    first, second = Metrics(), Metrics()
    observe(first)
    first.exchange_done("a.example.com", "TokenIssued", 0.1)
    first.secret_written("team-a")
    # Only the operator-wide series (no labels of their own) exist from the start, at zero.
    operator_wide = ("tokensync_event_loop_lag_seconds", "tokensync_leader", "tokensync_workqueue_depth")
    assert {name for name, _ in series(second) if not name.startswith(operator_wide)} == set()
    assert value(first, "tokensync_ready", namespace="team-a", name="palisade") == 1
    assert value(second, "tokensync_ready", namespace="team-a", name="palisade") is None
    assert first.registry is not second.registry


# serve() and close() -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics()
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    try:
        yield metrics, port
    finally:
        metrics.close()


def test_serve_answers_metrics_over_http(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    observe(metrics)
    metrics.exchange_done("a.example.com", "TokenIssued", 0.1)
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    text = response.text
    for name in (*RESOURCE_GAUGES, "tokensync_exchanges_total", "tokensync_exchange_duration_seconds"):
        assert f"# TYPE {name} " in text
    assert 'tokensync_ready{name="palisade",namespace="team-a"} 1.0' in text
    assert 'tokensync_exchanges_total{host="a.example.com",reason="TokenIssued"} 1.0' in text


def test_close_stops_serving() -> None:
    metrics = Metrics()
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    metrics.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    metrics.close()  # a second close is harmless


def test_close_without_serve_is_harmless() -> None:
    metrics = Metrics()
    metrics.close()
    observe(metrics)
    assert value(metrics, "tokensync_ready", namespace="team-a", name="palisade") == 1
