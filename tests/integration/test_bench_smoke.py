"""The scale benchmark runs (small) and reports what it promises to report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def test_the_scale_benchmark_prints_its_numbers_and_ratios() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--resources", "12", "--groups", "3", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"all Ready after [\d.]+s", out)
    assert re.search(r"ratio: time to Ready / baseline creates = [\d.]+x", out)
    # Identical credentials share exchanges: 3 groups, 12 resources.
    assert "exchanges: 3 (one per resource would be 12" in out
    assert "restart: 0 exchanges, {} API writes, 12/12 still Ready" in out
