"""``python -m bench [--size small|large] [--quick] [--no-baseline]``: run the benchmark, print the table.

Writes every number to ``--output`` (bench/results/latest.json); the children's logs go to
``--log-dir``. Exits 1 when a count target fails (those are exact); times never fail the run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from .operators import Naive, Tokensync
from .procs import Children
from .scenario import Run
from .sizes import SIZES
from .targets import count_failures, evaluate, table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", choices=("small", "large"), default="small", help="large: 10,000 resources")
    parser.add_argument("--quick", action="store_true", help="a tiny run for the CI smoke test (counts only)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive kopf operator")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--log-dir", type=Path, default=RESULTS_DIR / "logs")
    parser.add_argument(
        "--operator-cmd", default=None, help="the command that starts tokensync (default: the venv's `tokensync run`)"
    )
    parser.add_argument("--standin-module", default="tokensync.dev.cluster", help="the API stand-in to run")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C does, so every `finally` kills its children.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = SIZES["quick" if args.quick else args.size]
    signal.signal(signal.SIGTERM, _terminate)
    started = time.time()
    for old in args.log_dir.glob("*.log"):  # each child appends to its log: start from empty ones
        old.unlink()
    baseline: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="tokensync-bench-") as tmp, Children(args.log_dir) as children:
        workdir = Path(tmp)
        results = Run(size, Tokensync(args.operator_cmd), children, workdir, args.standin_module, "tokensync").execute()
        if not args.no_baseline:
            # A fixed timer: half the short token lifetime, but no shorter than it takes the naive
            # operator to go round the population at about 20 refreshes a second. (A shorter one
            # only measures its overload: timers starve, and some objects are never reached.)
            naive = Naive(interval=max(size.short_lifetime / 2, size.population / 20))
            baseline = Run(size, naive, children, workdir, args.standin_module, "baseline").execute()

    rows = evaluate(results)
    report = {
        **results,
        "baseline": baseline,
        "targets": rows,
        "size": size.name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_seconds": round(time.time() - started),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\ntokensync bench, size {size.name} ({size.population} resources); results in {args.output}\n")
    for note in results["notes"]:
        print(f"note: {note}")
    if baseline is not None:
        for note in baseline["notes"]:
            print(f"note (baseline): {note}")
    print()
    print(table(results, baseline))
    for label, run in (("tokensync", results), ("baseline", baseline)):
        cpu = (run or {}).get("details", {}).get("wave_cpu_seconds")
        if cpu:
            print(f"  CPU seconds during the wave ({label}): " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    failures = count_failures(rows)
    if failures:
        print(f"\nFAIL: count targets not met: {', '.join(failures)}")
        return 1
    print("\nall count targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
