"""The one-minute soak (``python -m bench.soak --profile ci``) passes every check of the long one.

50 resources with 8-14 s tokens, random token-endpoint faults and operator restarts (SIGTERM and
SIGKILL) for 60 s: no Secret holds an expired token unless the endpoint was failing or the
operator was down during that token's retry window; about one exchange per renewal; no Secret
lost or duplicated; the event loop keeps up. bench/README.md ("The soak test") defines each number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import run_to_end


@pytest.mark.timeout(420)
def test_the_one_minute_soak_passes_its_checks(tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--profile", "ci", "--output", str(output)]
    code, stdout, stderr = run_to_end([*command, "--log-dir", str(tmp_path / "logs")], timeout=360)
    print(stdout)  # the table, for the CI log
    context = f"\n{stdout}\n{stderr[-3000:]}"
    assert output.exists(), context
    r = json.loads(output.read_text())
    assert r["error"] is None, context
    failed = {c["name"]: c["value"] for c in r["checks"] if not c["passed"]}
    assert failed == {}, f"failed checks {failed}; unexcused lapses: {_unexcused(r)}" + context

    # The same checks, spelled out.
    assert r["expired_token_seconds"] == 0, context
    assert r["lost_secrets"] == 0, context
    assert r["duplicated_secrets"] == 0, context
    assert r["token_regressions"] == 0, context
    assert r["operator_crashes"] == 0, context
    assert r["retry_storms"] == 0, context
    assert r["operator_log_error_lines"] == r["operator_log_tracebacks"] == 0, context
    assert 0.5 < r["exchanges_per_renewal"] <= 1.5, context
    assert r["loop_lag_p99_ms"] is not None, context
    assert r["loop_lag_p99_ms"] <= 1000, context
    # The chaos happened: restarts, fault windows, and renewals tried with nothing wrong around them.
    assert sum(r["restarts"].values()) >= 1, context
    assert sum(r["fault_windows"].values()) >= 1, context
    assert r["renewals_with_clean_retry_window"] >= 25, context
    assert code == 0, context


def _unexcused(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The evidence of the first unexcused lapses (the JSON has them all)."""
    return [lapse for lapse in r["details"]["lapses"] if not lapse["excused"]][:5]
