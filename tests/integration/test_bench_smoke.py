"""The benchmark's quick run meets every count target; its times and memory are printed, never asserted.

Counts (API requests, writes, reads, token exchanges) are exact on any machine, so CI can fail on
them; times depend on the machine's load. The naive baseline is skipped to save time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.processes import run_to_end

COUNTS = (
    "api_requests_per_refresh",
    "api_writes_per_refresh",
    "api_reads_per_refresh",
    "restart_token_requests",
    "restart_api_writes",
    "restart_api_requests",
    "restart_api_gets",
    "dedupe_initial_token_requests",
    "dedupe_token_requests_per_lifetime",
    "failover_duplicate_exchanges",
)


def test_the_quick_bench_meets_the_count_targets(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    command = [sys.executable, "-m", "bench", "--quick", "--no-baseline", "--output", str(output)]
    code, stdout, stderr = run_to_end([*command, "--log-dir", str(tmp_path / "logs")], timeout=110)
    print(stdout)  # the table, times included, for the CI log
    context = f"\n{stdout}\n{stderr[-3000:]}"
    assert output.exists(), context
    r = json.loads(output.read_text())
    assert [key for key in COUNTS if r[key] is None] == [], "not measured" + context

    # Steady refresh: at most 2 API requests per token request, both writes.
    assert r["api_requests_per_refresh"] <= 2, context
    assert r["api_writes_per_refresh"] <= 2, context
    assert r["api_reads_per_refresh"] == 0, context
    # Restart with valid tokens: no exchange, no write, one GET (the credentials-hash key, never
    # one per resource); one LIST page (500 objects) and one WATCH per informer at this size.
    assert r["restart_token_requests"] == 0, context
    assert r["restart_api_writes"] == 0, context
    assert r["restart_api_gets"] == 1, context
    assert r["restart_api_requests"] <= 9, context
    # K resources with identical credentials: one exchange, then one per lifetime.
    assert r["dedupe_initial_token_requests"] == 1, context
    assert round(r["dedupe_token_requests_per_lifetime"]) == 1, context
    # Two replicas: only the leader exchanges.
    assert r["failover_duplicate_exchanges"] == 0, context
    assert code == 0, context
