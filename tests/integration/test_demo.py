"""`make demo` / `tokensync demo`: runs by itself, exits 0, shows the story, leaks nothing."""

from __future__ import annotations

import subprocess
import sys

from tokensync.dev.demo import DEMO_CLIENT_SECRET, WRONG_SECRET


def test_the_demo_runs_end_to_end_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokensync.dev.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "created with token #1" in output
    assert "refreshed to token #2" in output
    assert "reason=InvalidCredentials" in output
    assert "is still in Secret palisade-token" in output
    assert "demo finished: OK" in output
    assert DEMO_CLIENT_SECRET not in output
    assert WRONG_SECRET not in output
    assert "Traceback" not in output
