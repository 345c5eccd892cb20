"""The issue's targets, checked against the numbers, and the table that shows them.

Only count targets (requests, writes, reads, exchanges) decide the exit status: they are exact
on any machine. Times and memory depend on the machine's load; they are shown, never enforced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Results = Mapping[str, Any]
Kind = Literal["count", "time", "memory"]


def _key(name: str) -> Callable[[Results], float | None]:
    return lambda r: r.get(name)


def _ratio(top: str, bottom: str) -> Callable[[Results], float | None]:
    def value(r: Results) -> float | None:
        a, b = r.get(top), r.get(bottom)
        return round(a / b, 2) if a is not None and b else None

    return value


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[Results], float | None]
    limit: float
    kind: Kind
    strict: bool = False  # "<" instead of "<="
    stretch: float | None = None
    whole: bool = False  # compare rounded to whole requests (a ratio of counts over a window)

    def passes(self, value: float | None, limit: float | None = None) -> bool | None:
        if value is None:
            return None
        bound = self.limit if limit is None else limit
        compared = round(value) if self.whole else value
        return compared < bound if self.strict else compared <= bound

    @property
    def limit_text(self) -> str:
        text = f"{'<' if self.strict else '≤'} {self.limit:g}"
        return f"{text} (stretch {self.stretch:g})" if self.stretch is not None else text


TARGETS: tuple[Target, ...] = (
    Target("API requests per refresh", _key("api_requests_per_refresh"), 2, "count"),
    Target("API writes per refresh", _key("api_writes_per_refresh"), 2, "count"),
    Target("API reads per refresh", _key("api_reads_per_refresh"), 0, "count"),
    Target("restart: token requests", _key("restart_token_requests"), 0, "count"),
    Target("restart: API writes", _key("restart_api_writes"), 0, "count"),
    # Not per resource: one GET in all (the credentials-hash key, hashkey.py). LISTs are paged
    # (500 objects a page, to bound the operator's memory): one more per 500 objects.
    Target("restart: GETs (none per resource)", _key("restart_api_gets"), 1, "count"),
    Target("dedupe: token requests per lifetime", _key("dedupe_token_requests_per_lifetime"), 1, "count", whole=True),
    Target("dedupe: token requests for K new resources", _key("dedupe_initial_token_requests"), 1, "count"),
    Target("failover: duplicate exchanges", _key("failover_duplicate_exchanges"), 0, "count"),
    Target("steady RSS, MiB", _key("rss_mib_idle"), 256, "memory", stretch=150),
    Target("peak RSS, MiB", _key("rss_mib_peak"), 256, "memory", stretch=150),
    Target("empty operator RSS, MiB", _key("rss_mib_empty"), 80, "memory"),
    Target("RSS growth from unrelated Secrets, MiB", _key("unrelated_secret_rss_growth_mib"), 10, "memory"),
    Target("wave: all Ready / floor", _ratio("ready_all_seconds", "ready_floor_seconds"), 1.5, "time"),
    Target("wave: event-loop lag p99, ms", _key("loop_lag_p99_ms"), 100, "time", strict=True),
    Target("failover after SIGKILL, s", _key("failover_seconds"), 20, "time"),
)

#: Shown under the table: measured, with no target of their own (or the inputs of a ratio above).
INFO_KEYS = (
    "ready_floor_seconds", "ready_all_seconds", "ready_p99_seconds", "wave_resources", "wave_create_seconds",
    "idle_resources", "restart_resources", "restart_api_requests", "restart_api_reads", "restart_api_watches",
    "restart_seconds",
    "refresh_window_token_requests", "refresh_window_watches", "dedupe_resources",
    "unrelated_secrets", "unrelated_secret_mib", "rss_mib_before_unrelated_secrets", "rss_mib_with_unrelated_secrets",
    "peak_token_rps",
    "failover_lease_seconds", "failover_act_seconds", "failover_exchanges_before_kill",
    "failover_token_requests_after_kill",
)  # fmt: skip


def evaluate(results: Results) -> list[dict[str, Any]]:
    """One entry per target: its value, limit and verdict (None: not measured)."""
    rows = []
    for target in TARGETS:
        value = target.value(results)
        row: dict[str, Any] = {
            "target": target.label,
            "kind": target.kind,
            "value": value,
            "limit": target.limit_text,
            "pass": target.passes(value),
        }
        if target.stretch is not None:
            row["stretch_pass"] = target.passes(value, target.stretch)
        rows.append(row)
    return rows


def count_failures(rows: list[dict[str, Any]]) -> list[str]:
    """Count targets that failed or were not measured: these fail the run (and CI)."""
    return [row["target"] for row in rows if row["kind"] == "count" and row["pass"] is not True]


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 and not math.isclose(value, round(value)) else f"{value:.1f}"
    return str(value)


def _verdict(row: Mapping[str, Any]) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
    if row.get("stretch_pass") is not None:
        verdict += f" (stretch {'PASS' if row['stretch_pass'] else 'FAIL'})"
    if row["kind"] != "count" and row["pass"] is False:
        verdict += " *"
    return verdict


def table(results: Results, baseline: Results | None) -> str:
    """The PASS/FAIL table: tokensync's value and verdict, with the naive baseline's value beside it."""
    rows = evaluate(results)
    base = evaluate(baseline) if baseline is not None else [{"value": None}] * len(rows)
    header = ("target", "limit", "tokensync", "baseline", "result")
    lines = [header] + [
        (row["target"], row["limit"], _show(row["value"]), _show(b["value"]), _verdict(row))
        for row, b in zip(rows, base, strict=True)
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    out.append("")
    out.append("* times and memory are reported, never enforced: only count targets fail the run")
    out.append("")
    out.append("also measured (tokensync / baseline):")
    for key in INFO_KEYS:
        other = _show(baseline.get(key)) if baseline is not None else "-"
        out.append(f"  {key}: {_show(results.get(key))} / {other}")
    return "\n".join(out)
