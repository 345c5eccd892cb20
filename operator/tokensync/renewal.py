"""The renewal policy: when to refresh, how long to back off, what a failure means.

Pure functions only: no I/O, no clock (``now`` is always a parameter), no
global randomness. Jitter is derived from a stable seed (the resource's UID
and the token's issue time, or the attempt number), so the same inputs give
the same schedule after an operator restart, and many resources created at
once still spread their refreshes out.

Modelled on cert-manager's trigger/readiness split: a chain of checks, the
first that applies wins; the shell (``reconciler.py``) acts on the verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .models import DEFAULT_RENEWAL_PERCENT, STALLED_REASONS, Reason, Renewal, parse_duration

#: No refresh sooner than this after issuance, however short the lifetime: a token that
#: lives for one second must not turn the operator into a hot loop against the endpoint ...
MIN_REFRESH_INTERVAL = timedelta(seconds=1)
#: ... nor sooner than this share of the lifetime: ``before: 59m59s`` on a one-hour token would
#: otherwise refresh every second. Settings that ask for more are clamped and reported.
MIN_REFRESH_SHARE = 0.10
#: Jitter moves the renewal point earlier by up to this share of the time before it ...
RENEWAL_JITTER_SHARE = 0.05
#: ... and by no more than this, so a 24 h token is not refreshed an hour early.
RENEWAL_JITTER_MAX = timedelta(seconds=60)

BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_CAP_TRANSIENT = timedelta(minutes=5)
BACKOFF_CAP_STALLED = timedelta(hours=1)
#: A refused Secret write is retried as controller-runtime retries a failed API call: it costs one
#: request, not an exchange (the token waits in memory), and should land soon after the cause goes.
BACKOFF_BASE_API = timedelta(seconds=1)
BACKOFF_CAP_API = timedelta(seconds=60)
#: Exponential delays are shortened by up to this share, so retries of many resources spread out.
BACKOFF_JITTER_SHARE = 0.2
#: A retry for a still-valid token is scheduled at least this long before it expires.
EXPIRY_MARGIN = timedelta(seconds=2)
#: The shortest wait between two attempts, whatever the clamps above say.
MIN_RETRY_DELAY = timedelta(seconds=1)
#: Retry-After values above this are treated as this (a broken header must not park us for days).
MAX_RETRY_AFTER = timedelta(hours=1)


#: The verdict of a routine refresh (every other trigger is news worth an event).
RENEWAL_DUE = "RenewalDue"


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``: jitter that survives restarts."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def min_refresh_interval(lifetime: timedelta) -> timedelta:
    """The shortest time between issuing a token and refreshing it: max(1 s, 10 % of its lifetime)."""
    return max(MIN_REFRESH_INTERVAL, lifetime * MIN_REFRESH_SHARE)


def _requested_point(issued_at: datetime, expires_at: datetime, renewal: Renewal) -> datetime:
    """The renewal point the settings ask for, before jitter and the floor."""
    lifetime = expires_at - issued_at
    if renewal.before is not None:
        before = parse_duration(renewal.before)
        if before < lifetime:
            return expires_at - before
    percent = renewal.percent if renewal.percent is not None else DEFAULT_RENEWAL_PERCENT
    return issued_at + lifetime * (percent / 100)


def renewal_time(issued_at: datetime, expires_at: datetime, renewal: Renewal, seed: str = "") -> datetime:
    """When a token issued at ``issued_at`` and expiring at ``expires_at`` should be refreshed.

    ``renewal.before`` wins when it is shorter than the lifetime; otherwise the percentage
    (default 67 %). A small jitter moves the point earlier, never later, so it never
    passes expiry; a floor (``min_refresh_interval``) keeps refreshes from coming too often.
    """
    point = _requested_point(issued_at, expires_at, renewal)
    jitter = min((point - issued_at) * RENEWAL_JITTER_SHARE, RENEWAL_JITTER_MAX)
    point -= jitter * stable_fraction(seed, issued_at.isoformat())
    # Not cut to whole seconds: the schedule is always recomputed from issuedAt/expiresAt
    # (themselves whole seconds), never read back from status.renewalTime.
    return max(point, issued_at + min_refresh_interval(expires_at - issued_at))


def clamp_note(issued_at: datetime, expires_at: datetime, renewal: Renewal) -> str | None:
    """What to tell the user when ``renewal`` asks for refreshes more often than the floor allows."""
    lifetime = expires_at - issued_at
    floor = min_refresh_interval(lifetime)
    asked = _requested_point(issued_at, expires_at, renewal) - issued_at
    if asked >= floor:
        return None
    setting = f"before: {renewal.before}" if renewal.before is not None else f"percent: {renewal.percent}"
    return (
        f"renewal {setting} would refresh {_seconds(asked)} after issue; clamped to {_seconds(floor)} "
        f"(max(1s, 10% of the token's {_seconds(lifetime)} lifetime))"
    )


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"


def is_stalled(reason: Reason) -> bool:
    """A failure a human must fix: retrying soon will not help."""
    return reason in STALLED_REASONS


def backoff_delay(attempts: int, reason: Reason, seed: str = "") -> timedelta:
    """Capped exponential backoff after ``attempts`` consecutive failures (attempts >= 1)."""
    base, cap = BACKOFF_BASE, BACKOFF_CAP_STALLED if is_stalled(reason) else BACKOFF_CAP_TRANSIENT
    if reason is Reason.SECRET_WRITE_FAILED:
        base, cap = BACKOFF_BASE_API, BACKOFF_CAP_API
    exponent = min(max(attempts, 1) - 1, 30)  # 2**30 x 5 s is past any cap; avoid huge floats
    delay: timedelta = min(base * (2**exponent), cap)
    return delay * (1 - BACKOFF_JITTER_SHARE * stable_fraction(seed, attempts))


@dataclass(frozen=True)
class FailureRecord:
    """What status says about the last failures (restart-safe: rebuilt from status)."""

    attempts: int
    at: datetime
    reason: Reason
    retry_after: timedelta | None = None


def next_attempt(failure: FailureRecord, valid_until: datetime | None, seed: str = "") -> datetime:
    """When to try again after ``failure``.

    While a still-valid token exists, the backoff is pulled in before it expires, so a
    long backoff never lets the workload's token lapse when an earlier try could save it.
    ``Retry-After`` is honoured as a lower bound (the server said when it will listen), except
    that one attempt is still made shortly before a valid token would lapse.
    """
    earliest = failure.at + MIN_RETRY_DELAY
    planned = failure.at + backoff_delay(failure.attempts, failure.reason, seed)
    last_chance = valid_until - EXPIRY_MARGIN if valid_until is not None else None
    if last_chance is not None:
        planned = min(planned, last_chance)
    if failure.retry_after is not None:
        honoured = failure.at + min(failure.retry_after, MAX_RETRY_AFTER)
        if last_chance is not None and failure.at < last_chance < honoured:
            # Honouring it would let the token lapse: one attempt is still made shortly before
            # expiry (that attempt's own failure, past the last chance, is then honoured in full).
            planned = last_chance
        else:
            planned = max(planned, honoured)
    return max(planned, earliest)


# The trigger chain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Why something should happen now: a reason for events and logs, and a message for humans."""

    reason: str
    message: str


@dataclass(frozen=True)
class TokenState:
    """What is known about the token the target Secret holds (or should hold)."""

    issued_at: datetime
    expires_at: datetime
    #: Hash of the inputs it was minted from; compared with the current inputs.
    fingerprint: str


@dataclass(frozen=True)
class Input:
    """Everything the policy looks at, gathered by the shell."""

    now: datetime
    token: TokenState | None
    fingerprint: str
    renewal: Renewal
    seed: str = ""
    failure: FailureRecord | None = None
    #: The inputs (spec or credentials) changed since the last failed attempt.
    inputs_changed_since_failure: bool = False
    #: A refresh-requested-at annotation value not yet acted on (bypasses the backoff once).
    refresh_requested: bool = False
    #: A requested refresh was tried and failed: still wanted, but subject to the backoff.
    refresh_pending: bool = False


Check = Callable[[Input], Verdict | None]


def _no_token(inp: Input) -> Verdict | None:
    if inp.token is None:
        return Verdict("NoToken", "no token has been issued yet")
    return None


def _inputs_changed(inp: Input) -> Verdict | None:
    if inp.token is not None and inp.token.fingerprint != inp.fingerprint:
        return Verdict("InputsChanged", "the token endpoint, credentials or request parameters changed")
    return None


def _refresh_requested(inp: Input) -> Verdict | None:
    if inp.refresh_requested:
        return Verdict("RefreshRequested", "a refresh was requested with tokensync.io/refresh-requested-at")
    return None


def _refresh_pending(inp: Input) -> Verdict | None:
    if inp.refresh_pending:
        return Verdict("RefreshPending", "a requested refresh failed and is retried")
    return None


def _expired(inp: Input) -> Verdict | None:
    if inp.token is not None and inp.now >= inp.token.expires_at:
        return Verdict("Expired", f"the token expired at {inp.token.expires_at.isoformat()}")
    return None


def _nearing_expiry(inp: Input) -> Verdict | None:
    if inp.token is None:
        return None
    due = renewal_time(inp.token.issued_at, inp.token.expires_at, inp.renewal, inp.seed)
    if inp.now >= due:
        return Verdict(RENEWAL_DUE, f"the renewal time {due.isoformat()} has passed")
    return None


#: Should a new token be issued? The readiness chain shares the prefix and ends in
#: ``_expired`` instead of ``_nearing_expiry``, as in cert-manager.
REFRESH_CHECKS: Sequence[Check] = (_no_token, _inputs_changed, _refresh_requested, _refresh_pending, _nearing_expiry)
READY_CHECKS: Sequence[Check] = (_no_token, _inputs_changed, _expired)


def first_verdict(checks: Sequence[Check], inp: Input) -> Verdict | None:
    for check in checks:
        verdict = check(inp)
        if verdict is not None:
            return verdict
    return None


@dataclass(frozen=True)
class Plan:
    """What to do now: issue a token now (``issue``), or look again at ``wake_at``."""

    issue: Verdict | None
    wake_at: datetime | None
    #: Set when an exchange is due but held back by a failure backoff.
    backing_off_until: datetime | None = None


def plan(inp: Input) -> Plan:
    """Decide whether to issue a token now, and otherwise when to look again."""
    trigger = first_verdict(REFRESH_CHECKS, inp)
    if trigger is None:
        assert inp.token is not None  # _no_token would have fired
        due = renewal_time(inp.token.issued_at, inp.token.expires_at, inp.renewal, inp.seed)
        return Plan(issue=None, wake_at=due)
    bypass_backoff = inp.refresh_requested or inp.inputs_changed_since_failure
    if inp.failure is not None and not bypass_backoff:
        valid_until = inp.token.expires_at if inp.token is not None and _ready(inp) else None
        retry_at = next_attempt(inp.failure, valid_until, inp.seed)
        if inp.now < retry_at:
            # Look again at expiry too, so Ready turns False on time while we wait.
            wake_at = retry_at if valid_until is None else min(retry_at, valid_until)
            return Plan(issue=None, wake_at=wake_at, backing_off_until=retry_at)
    return Plan(issue=trigger, wake_at=None)


def _ready(inp: Input) -> bool:
    return first_verdict(READY_CHECKS, inp) is None


def readiness(inp: Input) -> Verdict | None:
    """``None`` when the stored token is usable now; otherwise why not."""
    return first_verdict(READY_CHECKS, inp)
