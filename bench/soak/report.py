"""From what the soak saw to numbers, verdicts and the table.

**Expired-token-seconds** count the time Secrets held a token past its ``expiresAt`` (see reader.py).
A lapse is *excused* when, during its token's **retry window**, the endpoint was faulty or the
operator was not serving; every other lapse is *unexcused*, and unexcused seconds must be 0:

- the retry window of a token issued at I that expires at E is [I + 63.65 % x (E - I), E]: from
  the earliest renewal point the default policy can pick (67 % of the lifetime, less at most 5 %
  of that as jitter) to expiry. Every attempt to replace that token falls inside it;
- the endpoint was faulty from the moment a fault window was switched on until it was switched
  off, with no aftermath: a request a fault shaped (a ``slow`` answer returning after the window,
  a 429 whose Retry-After reaches past it) was sent inside the window and, being an attempt for
  that token, inside its retry window, which excuses that token already;
- the operator was not serving from the restart signal (or the moment a crash was noticed) until
  the next process answered /readyz with 200.

**Exchanges per renewal** = tokens issued during the chaos phase / the renewal cycles due in it:
per resource, the integral of dt / (67 % x the lifetime of the token its Secret holds). An
operator that exchanges exactly once per renewal scores 1; SIGKILLs (a token minted but never
written) and the renewal jitter add a little. Per token *lifetime* the same operator scores
1 / 0.67 = 1.49, since it renews at 67 %: that is reported as ``exchanges_per_lifetime``.
Requests the injected faults failed are not exchanges; they are reported
(``requests_per_renewal``) and checked on their own: **retry storms** count (fault window,
resource) pairs with more failed requests than 2 + the window's seconds (the policy waits at
least 1 s between attempts, and at least Retry-After).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokensync.renewal import MIN_RETRY_DELAY

from ..measure import histogram_quantile
from .chaos import Interval
from .config import EARLIEST_RENEWAL_SHARE
from .reader import Lapse, Token
from .run import Outcome

LAG_HISTOGRAM = "tokensync_event_loop_lag_seconds"
EXCHANGE_HISTOGRAM = "tokensync_exchange_duration_seconds"
EXCHANGES = "tokensync_exchanges_total"
#: The JSON keeps the evidence of at most this many lapses (unexcused first).
MAX_LAPSE_DETAILS = 50
#: The level field of the operator's text log ("DATE TIME LEVEL logger message") or of its JSON log.
_ERROR_LINE = re.compile(r'^\S+ \S+ (ERROR|CRITICAL) |"level(name)?": "(ERROR|CRITICAL)"')


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    at_least: bool = False  # a floor instead of a ceiling

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def retry_window(token: Token) -> tuple[float, float]:
    return token.issued_at + EARLIEST_RENEWAL_SHARE * token.lifetime, token.expires_at


def _causes(intervals: list[Interval], start: float, end: float) -> list[Interval]:
    return [i for i in intervals if i.overlaps(start, end)]


def _kind(interval: Interval) -> str:
    return "operator restart" if interval.what.startswith(("restart", "crash")) else "endpoint fault"


def analyse(o: Outcome) -> dict[str, Any]:
    reader = o.reader
    assert reader is not None
    start, end = o.soak_start, o.settle_end  # lapses: the chaos and the settling after it

    def rel(moment: float) -> float:
        """Seconds since the chaos began: how times appear in the evidence."""
        return round(moment - start, 2)

    intervals = sorted([*o.unhealthy, *o.down], key=lambda i: i.start)
    client_of = {r.key: r.client_id for r in o.resources}

    # ----- lapses -----
    unexcused = excused = 0.0
    excused_by: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    longest = longest_recovery = 0.0
    for lapse in reader.lapses:
        if lapse.started_at >= end:
            continue  # after the run: the operator is being stopped
        seconds = max(0.0, min(lapse.ended_at or end, end) - lapse.started_at)
        w_start, w_end = retry_window(lapse.token)
        causes = _causes(intervals, w_start, w_end)
        longest = max(longest, seconds)
        if causes:
            excused += seconds
            kinds = {_kind(c) for c in causes}
            kind = kinds.pop() if len(kinds) == 1 else "both"
            excused_by[kind] = excused_by.get(kind, 0.0) + seconds
            recovered = max(lapse.started_at, *(c.end for c in _causes(intervals, w_start, lapse.started_at + seconds)))
            longest_recovery = max(longest_recovery, lapse.started_at + seconds - recovered)
        else:
            unexcused += seconds
        rows.append(_lapse_row(lapse, seconds, causes, o, client_of[lapse.key], intervals, rel))
    rows.sort(key=lambda r: (r["excused"], -r["seconds"]))

    # ----- coverage: renewals whose whole retry window was clean -----
    due = [t for t in reader.tokens if start <= t.expires_at < end]
    clean = sum(1 for t in due if not _causes(intervals, *retry_window(t)))

    # ----- exchanges, over the chaos phase (the reader integrated the cycles due over it) -----
    requests = [r for r in o.token_requests if start <= r.at <= o.soak_end]
    issued = sum(1 for r in requests if r.status == 200)
    failed_kinds = Counter(
        f"{r.status} ({r.failure})" if r.failure else str(r.status) for r in requests if r.status != 200
    )
    cycles = reader.cycles_due
    fault_rows = [_fault_row(i, o, rel) for i in o.unhealthy]

    # ----- the operator's own metrics, summed over its processes -----
    lag_buckets: dict[float, float] = {}
    exchange_buckets: dict[float, float] = {}
    lag_per_process: list[float | None] = []
    by_reason: Counter[str] = Counter()
    for life in o.lives:
        if life.scrape is None:
            lag_per_process.append(None)
            continue
        for bound, count in life.scrape.buckets(EXCHANGE_HISTOGRAM).items():
            exchange_buckets[bound] = exchange_buckets.get(bound, 0.0) + count
        buckets = life.scrape.buckets(LAG_HISTOGRAM)
        for bound, count in buckets.items():
            lag_buckets[bound] = lag_buckets.get(bound, 0.0) + count
        p99 = histogram_quantile(0.99, {}, buckets) if buckets else None
        lag_per_process.append(_ms(p99))
        for labels, value in life.scrape.samples.get(EXCHANGES, []):
            by_reason[labels.get("reason", "?")] += int(value)
    lag_p99 = histogram_quantile(0.99, {}, lag_buckets) if lag_buckets else None
    exchange_p50, exchange_p99 = (
        (histogram_quantile(0.5, {}, exchange_buckets), histogram_quantile(0.99, {}, exchange_buckets))
        if exchange_buckets
        else (None, None)
    )
    scraped = sum(1 for life in o.lives if life.scrape is not None)
    if scraped < len(o.lives):
        o.notes.append(f"metrics read from {scraped} of {len(o.lives)} operator processes")

    restarts = Counter(life.how for life in o.lives if life.how in ("SIGTERM", "SIGKILL"))
    downtimes = [i.end - i.start for i in o.down]
    stops = [life.stop_seconds for life in o.lives if life.stop_seconds is not None]
    hwm = [life.hwm_mib for life in o.lives if life.hwm_mib is not None]
    log_errors, log_tracebacks, first_errors = _log_errors(o)

    results: dict[str, Any] = {
        "expired_token_seconds": _round(unexcused),
        "expired_token_seconds_excused": _round(excused),
        "expired_token_seconds_excused_by": {k: _round(v) for k, v in sorted(excused_by.items())},
        "lapses": len(rows),
        "lapses_unexcused": sum(1 for r in rows if not r["excused"]),
        "longest_lapse_seconds": _round(longest),
        "longest_lapse_after_its_cause_seconds": _round(longest_recovery),
        "recovery_seconds": _round(o.recovery_seconds),
        "renewals_due": len(due),
        "renewals_with_clean_retry_window": clean,
        "token_requests": len(requests),
        "tokens_issued": issued,
        "failed_token_requests": len(requests) - issued,
        "renewal_cycles_due": _round(cycles),
        "exchanges_per_renewal": _ratio(issued, cycles),
        "requests_per_renewal": _ratio(len(requests), cycles),
        "exchanges_per_lifetime": _ratio(issued, reader.lifetimes_elapsed),
        "requests_per_lifetime": _ratio(len(requests), reader.lifetimes_elapsed),
        "retry_storms": sum(row["storming_clients"] for row in fault_rows),
        "lost_secrets": len(reader.lost),
        "duplicated_secrets": len(reader.duplicated),
        "token_regressions": len(reader.regressions),
        "stray_secrets": len(reader.strays),
        "loop_lag_p99_ms": _ms(lag_p99),
        "exchange_ms_p50": _ms(exchange_p50),
        "exchange_ms_p99": _ms(exchange_p99),
        "rss_mib_peak": _round(max(hwm)) if hwm else None,
        "operator_processes": len(o.lives),
        "restarts": dict(sorted(restarts.items())),
        "operator_crashes": len(o.crashes),
        "downtime_seconds_max": _round(max(downtimes)) if downtimes else None,
        "downtime_seconds_total": _round(sum(downtimes)),
        "sigterm_stop_seconds_max": _round(max(stops)) if stops else None,
        "fault_windows": dict(sorted(Counter(w.what.split(" (")[0] for w in o.unhealthy).items())),
        "faulty_seconds": _round(o.faulty_seconds),
        "faulty_share": _round(o.faulty_seconds / max(o.soak_end - start, 1e-9), 3),
        "operator_log_error_lines": log_errors,
        "operator_log_tracebacks": log_tracebacks,
        "setup_seconds": _round(o.setup_seconds),
        "reader": {
            "polls": reader.polls,
            "failed_polls": reader.failed_polls,
            "slowest_poll_seconds": _round(reader.slowest_poll, 2),
            "longest_gap_seconds": _round(reader.longest_gap, 2),
        },
    }
    checks = [
        Check("expired-token-seconds, endpoint healthy and operator up", results["expired_token_seconds"], 0),
        Check("lost Secrets", results["lost_secrets"], 0),
        Check("duplicated Secrets", results["duplicated_secrets"], 0),
        Check("tokens replaced by earlier-expiring ones", results["token_regressions"], 0),
        Check("operator crashes", results["operator_crashes"], 0),
        # DESIGN.md: a green run must not hide errors the operator logged (uncontained exceptions).
        Check("ERROR lines and tracebacks in the operator's log", log_errors + log_tracebacks, 0),
        Check("exchanges per renewal", results["exchanges_per_renewal"], o.config.max_exchanges_per_renewal),
        Check("retry storms during fault windows", results["retry_storms"], 0),
        Check("event-loop lag p99 (ms)", results["loop_lag_p99_ms"], o.config.max_lag_p99 * 1000),
        # The first check means something only if renewals were tried with nothing wrong around them.
        Check("renewals with a clean retry window", clean, math.ceil(len(o.resources) / 2), at_least=True),
    ]
    results["checks"] = [{**asdict(c), "passed": c.passed} for c in checks]
    results["passed"] = all(c.passed for c in checks)
    results["details"] = {
        "lapses": rows[:MAX_LAPSE_DETAILS],
        "lost": [_incident(i, rel) for i in reader.lost[:MAX_LAPSE_DETAILS]],
        "duplicated": [_incident(i, rel) for i in reader.duplicated[:MAX_LAPSE_DETAILS]],
        "regressions": [_incident(i, rel) for i in reader.regressions[:MAX_LAPSE_DETAILS]],
        "stray_secrets": sorted(reader.strays)[:MAX_LAPSE_DETAILS],
        "failed_token_requests_by_kind": dict(sorted(failed_kinds.items())),
        "operator_exchanges_by_reason": dict(sorted(by_reason.items())),
        "loop_lag_p99_ms_per_process": lag_per_process,
        "operator_processes": [
            {
                "started": rel(life.started_at),
                "ready_after_seconds": _round(life.ready_at - life.started_at, 2),
                "stopped": rel(life.stopped_at) if life.stopped_at is not None else None,
                "how": life.how,
                "exit_code": life.exit_code,
                "sigterm_stop_seconds": _round(life.stop_seconds, 2),
                "vmhwm_mib": _round(life.hwm_mib),
                "cpu_seconds": _round(life.cpu_seconds),
            }
            for life in o.lives
        ],
        "operator_down": [_interval(i, rel) for i in o.down],
        "endpoint_faulty": fault_rows,
        "standin_cpu_seconds": _round(o.standin_cpu_seconds),
        "operator_log": display_path(o.operator_log) if o.operator_log else None,
        "operator_log_first_errors": first_errors,
        "crashes": o.crashes,
    }
    results["notes"] = o.notes
    return results


def _lapse_row(
    lapse: Lapse,
    seconds: float,
    causes: list[Interval],
    o: Outcome,
    client: str,
    intervals: list[Interval],
    rel: Callable[[float], float],
) -> dict[str, Any]:
    """A lapse and the evidence around it: the resource's token requests, faults and restarts nearby."""
    w_start, w_end = retry_window(lapse.token)
    until = lapse.started_at + seconds
    requests = [
        {"at": rel(r.at), "status": r.status, **({"fault": r.failure} if r.failure else {})}
        for r in o.token_requests
        if r.client_id == client and lapse.token.issued_at - 1 <= r.at <= until + 1
    ]
    nearby = [_interval(i, rel) for i in intervals if i.overlaps(w_start - 5, until)]
    return {
        "resource": lapse.key,
        "excused": bool(causes),
        "causes": sorted({c.what for c in causes}),
        "seconds": _round(seconds, 2),
        "lifetime": _round(lapse.token.lifetime),
        "issued_at": rel(lapse.token.issued_at),
        "retry_window": [rel(w_start), rel(w_end)],
        "expired_at": rel(lapse.started_at),
        "first_seen_expired_at": rel(lapse.seen_at) if lapse.seen_at is not None else None,
        "fresh_token_seen_at": rel(until),
        "token_requests": requests,
        "faults_and_restarts_nearby": nearby,
        "status_when_seen": _status_summary(lapse.status),
    }


def _status_summary(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if not status:
        return None
    conditions = {
        c.get("type"): f"{c.get('status')}/{c.get('reason')}: {c.get('message', '')}"
        for c in status.get("conditions") or []
    }
    keep = {k: v for k, v in status.items() if k not in ("conditions", "observedGeneration")}
    return {"conditions": conditions, **keep}


def _interval(i: Interval, rel: Callable[[float], float]) -> dict[str, Any]:
    return {"from": rel(i.start), "to": rel(i.end), "what": i.what}


def _fault_row(window: Interval, o: Outcome, rel: Callable[[float], float]) -> dict[str, Any]:
    """A fault window with the requests it answered: how hard clients retried while it lasted."""
    answered = [r for r in o.token_requests if window.start <= r.at <= window.end]
    failed = Counter(r.client_id for r in answered if r.status != 200)
    allowed = 2 + (window.end - window.start) / MIN_RETRY_DELAY.total_seconds()
    return {
        **_interval(window, rel),
        "requests": len(answered),
        "failed": sum(failed.values()),
        "clients_failed": len(failed),
        "most_failures_of_one_client": max(failed.values(), default=0),
        "storming_clients": sum(1 for n in failed.values() if n > allowed),
    }


def _incident(incident: Any, rel: Callable[[float], float]) -> dict[str, Any]:
    return {"resource": incident.key, "at": rel(incident.at), "what": incident.what}


def _log_errors(o: Outcome) -> tuple[int, int, list[str]]:
    if o.operator_log is None or not o.operator_log.exists():
        return 0, 0, []
    errors, tracebacks, first = 0, 0, list[str]()
    for line in o.operator_log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            tracebacks += 1
        if _ERROR_LINE.search(line):
            errors += 1
            if len(first) < 10:
                first.append(line[:400])
    return errors, tracebacks, first


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it (the committed results name no home directory)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else _round(seconds * 1000)


def _ratio(top: float, bottom: float) -> float | None:
    return round(top / bottom, 3) if bottom > 0 else None


def _round(value: float | None, digits: int = 1) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits) + 0.0


# ----- the table -----


def table(results: dict[str, Any], title: str) -> str:
    lines = [title, ""]
    width = max(len(c["name"]) for c in results["checks"]) + 2
    lines.append(f"  {'check':<{width}}{'value':>10}  {'limit':>8}  result")
    for c in results["checks"]:
        sign = ">=" if c["at_least"] else "<="
        value = "n/a" if c["value"] is None else f"{c['value']:g}"
        lines.append(f"  {c['name']:<{width}}{value:>10}  {sign} {c['limit']:<5g}  {'PASS' if c['passed'] else 'FAIL'}")
    r = results
    excused_by = ", ".join(f"{k} {v:g}" for k, v in r["expired_token_seconds_excused_by"].items()) or "none"
    reader = r["reader"]
    info = [
        ("expired-token-seconds, excused", f"{r['expired_token_seconds_excused']:g} ({excused_by})"),
        ("lapses (unexcused)", f"{r['lapses']} ({r['lapses_unexcused']})"),
        ("longest lapse", f"{r['longest_lapse_seconds']:g} s"),
        ("longest lapse after its cause ended", f"{r['longest_lapse_after_its_cause_seconds']:g} s"),
        ("every Secret valid again after the chaos", "not within settle-max" if r["recovery_seconds"] is None
         else f"{r['recovery_seconds']:g} s later"),
        ("renewals due", f"{r['renewals_due']}"),
        ("token requests", f"{r['token_requests']} ({r['tokens_issued']} issued, {r['failed_token_requests']} failed)"),
        ("renewal cycles due", f"{r['renewal_cycles_due']}"),
        ("token requests per renewal", f"{r['requests_per_renewal']}"),
        ("per token lifetime: exchanges, requests", f"{r['exchanges_per_lifetime']}, {r['requests_per_lifetime']} "
         "(renewal at 67 %: 1.49 ideal)"),
        ("restarts", _kv(r["restarts"])),
        ("operator down: longest, total", f"{r['downtime_seconds_max'] or 0:g} s, {r['downtime_seconds_total']:g} s"),
        ("SIGTERM stop, longest", f"{r['sigterm_stop_seconds_max'] or 0:g} s"),
        ("fault windows", f"{_kv(r['fault_windows'])} ({r['faulty_share']:.0%} of the time)"),
        ("exchange duration p50, p99", f"{r['exchange_ms_p50']} ms, {r['exchange_ms_p99']} ms (slow windows included)"),
        ("operator RSS peak (VmHWM)", f"{r['rss_mib_peak']} MiB"),
        ("reader: polls, slowest LIST, longest gap", f"{reader['polls']}, {reader['slowest_poll_seconds']} s, "
         f"{reader['longest_gap_seconds']} s"),
    ]  # fmt: skip
    lines.append("")
    label_width = max(len(label) for label, _ in info) + 2
    lines += [f"  {label:<{label_width}}{value}" for label, value in info]
    return "\n".join(lines)


def _kv(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"
