"""Prometheus metrics. Labels are namespaces, names, hosts and reasons: never a secret or a token.

Per-resource series are removed when the resource goes away, so the cardinality is
bounded by the number of ClientCredentials (hosts are bounded by the allowlist, reasons
by the ``Reason`` enum).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RESOURCE_LABELS = ("namespace", "name")


class Metrics:
    """One registry per operator instance (tests run several in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Per-resource series come from one compact row per resource, rendered at scrape time:
        # a labelled Gauge child per resource and metric costs ~0.7 KiB, 27 MiB at 10,000 resources.
        self._resources: dict[tuple[str, str], _ResourceRow] = {}
        self.registry.register(_ResourceCollector(self._resources))
        self.exchanges = Counter(
            "tokensync_exchanges_total",
            "Token exchanges sent, by result (TokenIssued or the failure reason).",
            ("host", "reason"),
            registry=self.registry,
        )
        self.exchange_duration = Histogram(
            "tokensync_exchange_duration_seconds",
            "Duration of token exchanges.",
            ("host",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.secret_writes = Counter(
            "tokensync_secret_writes_total",
            "Writes (creates and patches) of target Secrets.",
            ("namespace",),
            registry=self.registry,
        )
        self.reconciles = Counter(
            "tokensync_reconcile_total",
            "Reconcile rounds, by result (ok, error, pending: waiting for a referenced object's data).",
            ("result",),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tokensync_workqueue_depth", "Resource keys waiting for a worker.", registry=self.registry
        )
        self.leader = Gauge(
            "tokensync_leader",
            "1 while this replica is the leader (or runs without election), else 0.",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "tokensync_event_loop_lag_seconds",
            "How late a periodic tick of the event loop runs: high values mean the operator is overloaded.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def exchange_done(self, host: str, reason: str, seconds: float) -> None:
        self.exchanges.labels(host=host, reason=reason).inc()
        self.exchange_duration.labels(host=host).observe(seconds)

    def reconciled(self, result: str) -> None:
        self.reconciles.labels(result=result).inc()

    def secret_written(self, namespace: str) -> None:
        self.secret_writes.labels(namespace=namespace).inc()

    def resource_observed(
        self,
        namespace: str,
        name: str,
        *,
        ready: bool,
        failed_attempts: int,
        expires_at: datetime | None,
        renewal_at: datetime | None,
    ) -> None:
        self._resources[(namespace, name)] = _ResourceRow(
            ready, failed_attempts, _seconds(expires_at), _seconds(renewal_at)
        )

    def resource_gone(self, namespace: str, name: str) -> None:
        self._resources.pop((namespace, name), None)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ResourceRow(NamedTuple):
    ready: bool
    failed_attempts: int
    expires_at: int | None
    renewal_at: int | None


def _seconds(moment: datetime | None) -> int | None:
    # Whole seconds, as status and the Secret show them.
    return int(moment.timestamp()) if moment is not None else None


class _ResourceCollector(Collector):
    """The per-resource gauges, built from the rows on each scrape."""

    def __init__(self, rows: dict[tuple[str, str], _ResourceRow]) -> None:
        self._rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = list(self._rows.items())  # one atomic copy: the event loop's thread writes the dict
        families = {
            "ready": GaugeMetricFamily(
                "tokensync_ready",
                "1 when the target Secret holds a valid token for the current spec, else 0.",
                labels=RESOURCE_LABELS,
            ),
            "failed_attempts": GaugeMetricFamily(
                "tokensync_failed_attempts", "Consecutive failed attempts (0 when healthy).", labels=RESOURCE_LABELS
            ),
            "expires_at": GaugeMetricFamily(
                "tokensync_token_expiry_timestamp_seconds",
                "When the token in the target Secret expires (Unix time).",
                labels=RESOURCE_LABELS,
            ),
            "renewal_at": GaugeMetricFamily(
                "tokensync_token_renewal_timestamp_seconds",
                "When the token will be refreshed (Unix time).",
                labels=RESOURCE_LABELS,
            ),
        }
        for (namespace, name), row in rows:
            for field, family in families.items():
                value = getattr(row, field)
                if value is not None:
                    family.add_metric([namespace, name], float(value))
        yield from families.values()
