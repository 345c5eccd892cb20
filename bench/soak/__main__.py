"""``python -m bench.soak [--profile long|ci] [--duration SECONDS] [...]``: the soak test.

Many resources with short-lived tokens, random token-endpoint faults and operator restarts for
``--duration`` seconds. Prints a table, writes ``--output`` (bench/results/soak.json) and exits 1
when a check fails or the run could not be completed. bench/README.md ("The soak test") explains
every number.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from ..procs import Children
from .chaos import Plan
from .config import PROFILES, SoakConfig
from .report import analyse, display_path, table
from .run import Soak

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="long", help="the defaults (default: long)")
    for f in fields(SoakConfig):
        default = getattr(PROFILES["long"], f.name)
        kind = (
            int
            if f.name in ("resources", "namespaces", "lifetime_min", "lifetime_max", "retry_after_max", "seed")
            else float
        )
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"(long profile: {default}; ci: {getattr(PROFILES['ci'], f.name)})",
        )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "soak.json")
    parser.add_argument("--log-dir", type=Path, default=RESULTS_DIR / "logs" / "soak")
    parser.add_argument(
        "--operator-cmd", default=None, help="how to start tokensync (default: the venv's `tokensync run`)"
    )
    parser.add_argument("--standin-module", default="tokensync.dev.cluster", help="the API stand-in to run")
    return parser.parse_args(argv)


class _DropClientResets(logging.Filter):
    """The token server's clients are SIGKILLed mid-request on purpose: no traceback for each."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionResetError))


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C does, so the Children registry kills every child.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = PROFILES[args.profile].with_overrides(vars(args))
    config.check()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    plan = Plan.draw(config, seed)
    signal.signal(signal.SIGTERM, _terminate)
    logging.getLogger("aiohttp.server").addFilter(_DropClientResets())
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for old in args.log_dir.glob("*.log"):  # each child appends to its log: start from empty ones
        old.unlink()
    print(
        f"[soak] {config.resources} resources, {config.duration:g}s, lifetimes {config.lifetime_min}-"
        f"{config.lifetime_max}s, {len(plan.faults)} fault windows, {len(plan.restarts)} restarts planned, seed {seed}",
        file=sys.stderr,
        flush=True,
    )
    started = time.time()
    report: dict[str, Any]
    error: str | None = None
    with tempfile.TemporaryDirectory(prefix="tokensync-soak-") as tmp, Children(args.log_dir) as children:
        soak = Soak(config, plan, children, Path(tmp), args.operator_cmd, args.standin_module)
        try:
            outcome = soak.execute()
        except (TimeoutError, RuntimeError, OSError, httpx.HTTPError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            outcome = None
    if outcome is not None:
        report = analyse(outcome)
    else:
        report = {"passed": False, "checks": [], "notes": [f"the run did not complete: {error}"]}
    report = {
        **report,
        "error": error,
        "profile": args.profile,
        "seed": seed,
        "config": {**asdict(config), "seed": seed},
        "plan": {
            "faults": [asdict(w) for w in plan.faults],
            "restarts": [{**asdict(s), "signal": s.signal.name} for s in plan.restarts],
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_seconds": round(time.time() - started),
        "log_dir": display_path(args.log_dir),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    title = (
        f"tokensync soak: {config.resources} resources, {config.duration:g} s of chaos, lifetimes "
        f"{config.lifetime_min}-{config.lifetime_max} s, seed {seed}; results in {display_path(args.output)}"
    )
    if error is not None:
        print(f"\n{title}\n\nFAIL: the run did not complete: {error} (logs in {args.log_dir})")
        return 1
    print()
    print(table(report, title))
    for note in report["notes"]:
        print(f"note: {note}")
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if failed:
        print(f"\nFAIL: {', '.join(failed)} (evidence under details in {args.output})")
        return 1
    print("\nall soak checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
