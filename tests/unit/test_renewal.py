"""The pure renewal policy: when to refresh, how long to back off, what the plan is.

Every moment here is a fixed, timezone-aware UTC datetime: nothing reads the wall clock.
Jitter is derived from ``stable_fraction``; tests that need exact values pin it with the
``jitter`` fixture, tests about jitter itself use the real function over many seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokensync import renewal
from tokensync.models import Reason, Renewal
from tokensync.renewal import (
    BACKOFF_CAP_STALLED,
    BACKOFF_CAP_TRANSIENT,
    EXPIRY_MARGIN,
    MIN_RETRY_DELAY,
    FailureRecord,
    Input,
    Plan,
    TokenState,
    backoff_delay,
    clamp_note,
    min_refresh_interval,
    next_attempt,
    plan,
    readiness,
    renewal_time,
    stable_fraction,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SEEDS = [f"uid-{i}" for i in range(100)]


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Pin the jitter fraction: 0.0 means no jitter, values near 1.0 mean the most jitter."""

    def pin(fraction: float) -> None:
        monkeypatch.setattr(renewal, "stable_fraction", lambda *_parts: fraction)

    pin(0.0)
    return pin


# stable_fraction -----------------------------------------------------------------------------


def test_stable_fraction_is_deterministic_and_in_the_unit_interval() -> None:
    values = [stable_fraction("uid", i) for i in range(500)]
    assert values == [stable_fraction("uid", i) for i in range(500)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert len(set(values)) == len(values)
    assert min(values) < 0.1
    assert max(values) > 0.9


# renewal_time: the renewal point without jitter ----------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "policy", "expected_after_issue"),
    [
        pytest.param(HOUR, Renewal(), s(2412), id="the default is 67 percent of the lifetime"),
        pytest.param(s(100), Renewal(), s(67), id="the default applies to short lifetimes too"),
        pytest.param(HOUR, Renewal(percent=50), s(1800), id="a custom percent replaces the default"),
        pytest.param(HOUR, Renewal(percent=1), s(360), id="one percent is clamped to ten percent of the lifetime"),
        pytest.param(HOUR, Renewal(before="59m59s"), s(360), id="a before of almost the lifetime is clamped"),
        pytest.param(s(5), Renewal(percent=5), s(1), id="the floor is never under one second"),
        pytest.param(HOUR, Renewal(percent=99), s(3564), id="ninety-nine percent renews just before expiry"),
        pytest.param(HOUR, Renewal(before="10m"), s(3000), id="before shorter than lifetime renews that long before"),
        pytest.param(
            HOUR,
            Renewal(percent=50, before="10m"),
            s(3000),
            id="before shorter than lifetime wins over percent",
        ),
        pytest.param(HOUR, Renewal(before="1h30m"), s(2412), id="before longer than lifetime falls back to 67 percent"),
        pytest.param(HOUR, Renewal(before="1h"), s(2412), id="before equal to the lifetime falls back to 67 percent"),
        pytest.param(
            HOUR,
            Renewal(percent=50, before="2h"),
            s(1800),
            id="before longer than lifetime falls back to the custom percent",
        ),
        pytest.param(s(10), Renewal(), s(6.7), id="a fractional point keeps its sub-second part"),
        pytest.param(s(100), Renewal(before="500ms"), s(99.5), id="a sub-second before is honoured exactly"),
        pytest.param(s(1), Renewal(), s(1), id="a one-second token is renewed no sooner than one second in"),
        pytest.param(s(2), Renewal(percent=1), s(1), id="a tiny percentage of a short lifetime hits the 1 s floor"),
        pytest.param(s(1), Renewal(before="900ms"), s(1), id="before on a tiny lifetime hits the 1 s floor"),
    ],
)
def test_renewal_time_without_jitter(
    jitter: Callable[[float], None], lifetime: timedelta, policy: Renewal, expected_after_issue: timedelta
) -> None:
    got = renewal_time(T0, T0 + lifetime, policy, seed="uid")
    assert got - T0 == expected_after_issue
    assert got <= T0 + lifetime


def test_renewal_time_is_not_rounded_to_whole_seconds(jitter: Callable[[float], None]) -> None:
    # renewal.py deliberately keeps sub-second precision: the schedule is recomputed from the
    # whole-second issuedAt/expiresAt in status, never read back from status.renewalTime.
    issued = T0 + timedelta(microseconds=400_000)
    got = renewal_time(issued, issued + HOUR, Renewal(), seed="uid")
    assert got == issued + s(2412)


def test_renewal_time_keeps_the_timezone() -> None:
    got = renewal_time(T0, T0 + HOUR, Renewal(), seed="uid")
    assert got.tzinfo is not None
    assert got.utcoffset() == timedelta(0)


# renewal_time: jitter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "policy", "unjittered", "max_jitter"),
    [
        pytest.param(HOUR, Renewal(), s(2412), s(60), id="a one-hour token is jittered by at most 60 s"),
        pytest.param(
            timedelta(hours=24), Renewal(), s(57888), s(60), id="a day-long token is still jittered by at most 60 s"
        ),
        pytest.param(s(1000), Renewal(), s(670), s(33.5), id="a short token is jittered by at most 5 percent"),
        pytest.param(HOUR, Renewal(before="10m"), s(3000), s(60), id="jitter applies to the before rule too"),
        pytest.param(
            HOUR, Renewal(before="0s"), s(3600), s(60), id="before zero is jittered earlier, never past expiry"
        ),
        pytest.param(s(100), Renewal(percent=99), s(99), s(4.95), id="a late percent on a short token stays bounded"),
    ],
)
def test_jitter_moves_the_point_earlier_within_bounds(
    lifetime: timedelta, policy: Renewal, unjittered: timedelta, max_jitter: timedelta
) -> None:
    expires = T0 + lifetime
    results = [renewal_time(T0, expires, policy, seed=seed) for seed in SEEDS]
    for got in results:
        assert got <= T0 + unjittered, "jitter must never move the point later"
        assert got <= expires, "the renewal point must never pass expiry"
        assert got >= T0 + unjittered - max_jitter, "jitter exceeded its bound"
    assert len(set(results)) > 1, "many resources must not refresh at the same second"


@pytest.mark.parametrize(
    ("lifetime", "unjittered", "max_jitter"),
    [
        pytest.param(HOUR, s(2412), s(60), id="the 60 s cap is reached for a one-hour token"),
        pytest.param(s(1000), s(670), s(33.5), id="the 5 percent share is reached for a short token"),
    ],
)
def test_jitter_at_its_largest_reaches_but_does_not_pass_the_bound(
    jitter: Callable[[float], None], lifetime: timedelta, unjittered: timedelta, max_jitter: timedelta
) -> None:
    jitter(0.999999)
    got = renewal_time(T0, T0 + lifetime, Renewal(), seed="uid")
    lowest = T0 + unjittered - max_jitter
    assert lowest <= got < lowest + timedelta(milliseconds=1)


def test_jitter_is_stable_for_the_same_seed() -> None:
    first = renewal_time(T0, T0 + HOUR, Renewal(), seed="uid-a")
    again = renewal_time(T0 + timedelta(0), T0 + HOUR, Renewal(), seed="uid-a")
    assert first == again


def test_jitter_differs_across_seeds() -> None:
    results = {renewal_time(T0, T0 + HOUR, Renewal(), seed=seed) for seed in SEEDS[:10]}
    assert len(results) > 1


def test_jitter_differs_across_issue_times_for_the_same_seed() -> None:
    offsets = {renewal_time(T0 + s(n), T0 + s(n) + HOUR, Renewal(), seed="uid") - (T0 + s(n)) for n in range(10)}
    assert len(offsets) > 1


# backoff_delay -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "reason", "nominal"),
    [
        pytest.param(1, Reason.ENDPOINT_UNAVAILABLE, s(5), id="the first retry waits 5 s"),
        pytest.param(2, Reason.ENDPOINT_UNAVAILABLE, s(10), id="the second retry waits twice as long"),
        pytest.param(3, Reason.ENDPOINT_UNAVAILABLE, s(20), id="the third retry doubles again"),
        pytest.param(6, Reason.ENDPOINT_UNAVAILABLE, s(160), id="the sixth retry waits 160 s"),
        pytest.param(7, Reason.ENDPOINT_UNAVAILABLE, s(300), id="transient failures are capped at 5 minutes"),
        pytest.param(50, Reason.RATE_LIMITED, s(300), id="many transient failures stay at the 5 minute cap"),
        pytest.param(10_000, Reason.INVALID_RESPONSE, s(300), id="a huge attempt count does not overflow"),
        pytest.param(0, Reason.ENDPOINT_UNAVAILABLE, s(5), id="zero attempts is treated as the first"),
        pytest.param(1, Reason.INVALID_CREDENTIALS, s(5), id="a stalled failure starts at 5 s too"),
        pytest.param(7, Reason.INVALID_CREDENTIALS, s(320), id="a stalled failure keeps doubling past 5 minutes"),
        pytest.param(10, Reason.FORBIDDEN, s(2560), id="a stalled failure doubles up to the hour"),
        pytest.param(11, Reason.ENDPOINT_NOT_FOUND, s(3600), id="stalled failures are capped at one hour"),
        pytest.param(10_000, Reason.HOST_NOT_ALLOWED, s(3600), id="many stalled failures stay at the hour cap"),
    ],
)
def test_backoff_delay_without_jitter(
    jitter: Callable[[float], None], attempts: int, reason: Reason, nominal: timedelta
) -> None:
    assert backoff_delay(attempts, reason, seed="uid") == nominal


@pytest.mark.parametrize(
    ("attempts", "reason", "nominal"),
    [
        pytest.param(1, Reason.ENDPOINT_UNAVAILABLE, s(5), id="the first delay is shortened by at most 20 percent"),
        pytest.param(7, Reason.RATE_LIMITED, BACKOFF_CAP_TRANSIENT, id="the transient cap is jittered below"),
        pytest.param(20, Reason.INVALID_CREDENTIALS, BACKOFF_CAP_STALLED, id="the stalled cap is jittered below"),
    ],
)
def test_backoff_jitter_stays_within_twenty_percent(attempts: int, reason: Reason, nominal: timedelta) -> None:
    delays = [backoff_delay(attempts, reason, seed=seed) for seed in SEEDS]
    assert all(nominal * 0.8 < d <= nominal for d in delays)
    assert len(set(delays)) > 1, "retries of many resources must spread out"
    assert min(delays) < nominal * 0.9
    assert max(delays) > nominal * 0.9


def test_backoff_jitter_at_its_largest_is_twenty_percent(jitter: Callable[[float], None]) -> None:
    jitter(0.999999)
    delay = backoff_delay(1, Reason.ENDPOINT_UNAVAILABLE)
    assert s(4) <= delay < s(4.001)


def test_backoff_is_stable_for_the_same_seed() -> None:
    assert backoff_delay(3, Reason.ENDPOINT_UNAVAILABLE, "uid") == backoff_delay(3, Reason.ENDPOINT_UNAVAILABLE, "uid")


# next_attempt --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "reason", "retry_after", "valid_for", "expected_after_failure"),
    [
        pytest.param(1, Reason.ENDPOINT_UNAVAILABLE, None, None, s(5), id="without a token the backoff applies"),
        pytest.param(3, Reason.ENDPOINT_UNAVAILABLE, None, HOUR, s(20), id="a token valid long after is not a reason"),
        pytest.param(
            7, Reason.ENDPOINT_UNAVAILABLE, None, s(60), s(58), id="a retry is pulled in 2 s before the token expires"
        ),
        pytest.param(
            20, Reason.INVALID_CREDENTIALS, None, s(600), s(598), id="a stalled backoff is pulled in before expiry too"
        ),
        pytest.param(
            7, Reason.ENDPOINT_UNAVAILABLE, None, s(2), s(1), id="never earlier than 1 s after the failure near expiry"
        ),
        pytest.param(
            7, Reason.ENDPOINT_UNAVAILABLE, None, -HOUR, s(1), id="never earlier than 1 s after the failure past expiry"
        ),
        pytest.param(1, Reason.RATE_LIMITED, s(120), None, s(120), id="a longer Retry-After is honoured"),
        pytest.param(
            7, Reason.RATE_LIMITED, s(10), None, s(300), id="a shorter Retry-After is only a lower bound on the backoff"
        ),
        pytest.param(1, Reason.RATE_LIMITED, s(0), None, s(5), id="a zero Retry-After keeps the backoff"),
        pytest.param(
            1, Reason.RATE_LIMITED, timedelta(days=2), None, HOUR, id="a broken huge Retry-After is capped at one hour"
        ),
        pytest.param(
            1,
            Reason.RATE_LIMITED,
            s(600),
            s(60),
            s(58),
            id="a Retry-After past a still-valid token's expiry still allows one attempt before it",
        ),
        pytest.param(
            1,
            Reason.RATE_LIMITED,
            s(600),
            s(1),
            s(600),
            id="the failure of that last attempt is honoured in full",
        ),
        pytest.param(
            1,
            Reason.RATE_LIMITED,
            s(30),
            s(60),
            s(30),
            id="a Retry-After before the last chance is honoured",
        ),
    ],
)
def test_next_attempt(
    jitter: Callable[[float], None],
    attempts: int,
    reason: Reason,
    retry_after: timedelta | None,
    valid_for: timedelta | None,
    expected_after_failure: timedelta,
) -> None:
    failure = FailureRecord(attempts=attempts, at=T0, reason=reason, retry_after=retry_after)
    valid_until = None if valid_for is None else T0 + valid_for
    assert next_attempt(failure, valid_until, seed="uid") - T0 == expected_after_failure


@pytest.mark.parametrize("attempts", range(1, 15))
@pytest.mark.parametrize("valid_for", [s(0), s(1), s(3), s(10), s(100), HOUR])
def test_next_attempt_with_real_jitter_respects_margin_and_minimum(attempts: int, valid_for: timedelta) -> None:
    failure = FailureRecord(attempts=attempts, at=T0, reason=Reason.ENDPOINT_UNAVAILABLE)
    got = next_attempt(failure, T0 + valid_for, seed="uid")
    assert got >= T0 + MIN_RETRY_DELAY
    if valid_for - EXPIRY_MARGIN >= MIN_RETRY_DELAY:
        assert got <= T0 + valid_for - EXPIRY_MARGIN


def test_a_short_retry_after_still_lets_the_retry_be_pulled_in_before_expiry(
    jitter: Callable[[float], None],
) -> None:
    # 7th rate-limited failure: the backoff says ~5 min; the endpoint says "retry after 10 s";
    # the token still in the Secret expires in 60 s. Both bounds allow a retry at 58 s.
    failure = FailureRecord(attempts=7, at=T0, reason=Reason.RATE_LIMITED, retry_after=s(10))
    got = next_attempt(failure, T0 + s(60), seed="uid")
    assert T0 + s(10) <= got <= T0 + s(58)


# plan / readiness ----------------------------------------------------------------------------

FP = "fingerprint-1"
TOKEN = TokenState(issued_at=T0, expires_at=T0 + HOUR, fingerprint=FP)
RENEWAL_POINT = T0 + s(2412)  # 67 % of one hour, without jitter


def make_input(now: datetime, **overrides: Any) -> Input:
    base = Input(now=now, token=TOKEN, fingerprint=FP, renewal=Renewal(), seed="uid")
    return replace(base, **overrides)


def failure_at(
    at: datetime,
    attempts: int = 1,
    reason: Reason = Reason.ENDPOINT_UNAVAILABLE,
    retry_after: timedelta | None = None,
) -> FailureRecord:
    return FailureRecord(attempts=attempts, at=at, reason=reason, retry_after=retry_after)


@pytest.mark.parametrize(
    ("inp", "reason"),
    [
        pytest.param(make_input(T0, token=None), "NoToken", id="no token issues at once"),
        pytest.param(make_input(T0 + s(60), fingerprint="fingerprint-2"), "InputsChanged", id="changed inputs issue"),
        pytest.param(make_input(T0 + s(60), refresh_requested=True), "RefreshRequested", id="a refresh request issues"),
        pytest.param(make_input(RENEWAL_POINT), "RenewalDue", id="the renewal point issues"),
        pytest.param(make_input(T0 + 2 * HOUR), "RenewalDue", id="an expired token issues"),
        pytest.param(
            make_input(T0, token=None, refresh_requested=True),
            "NoToken",
            id="no token wins over a refresh request in the chain",
        ),
        pytest.param(
            make_input(RENEWAL_POINT, fingerprint="fingerprint-2", refresh_requested=True),
            "InputsChanged",
            id="changed inputs win over a refresh request and a due renewal",
        ),
        pytest.param(
            make_input(
                T0 + s(2), fingerprint="fingerprint-2", failure=failure_at(T0), inputs_changed_since_failure=True
            ),
            "InputsChanged",
            id="inputs changed since the failure bypass the backoff",
        ),
        pytest.param(
            make_input(T0 + s(2), refresh_requested=True, failure=failure_at(T0, attempts=5)),
            "RefreshRequested",
            id="a refresh request bypasses the backoff",
        ),
        pytest.param(
            make_input(RENEWAL_POINT + s(6), failure=failure_at(RENEWAL_POINT)),
            "RenewalDue",
            id="a due renewal issues again once the backoff has passed",
        ),
    ],
)
def test_plan_issues(jitter: Callable[[float], None], inp: Input, reason: str) -> None:
    result = plan(inp)
    assert result.issue is not None
    assert result.issue.reason == reason
    assert result.issue.message
    assert result.wake_at is None
    assert result.backing_off_until is None


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(T0, id="a fresh token waits until its renewal point"),
        pytest.param(RENEWAL_POINT - s(1), id="one second before the renewal point still waits"),
    ],
)
def test_plan_waits_until_the_renewal_point(jitter: Callable[[float], None], now: datetime) -> None:
    assert plan(make_input(now)) == Plan(issue=None, wake_at=RENEWAL_POINT)


def test_plan_waits_until_the_jittered_renewal_point() -> None:
    result = plan(make_input(T0))
    assert result.issue is None
    assert result.wake_at == renewal_time(T0, T0 + HOUR, Renewal(), seed="uid")
    assert result.wake_at is not None
    assert RENEWAL_POINT - s(61) < result.wake_at <= RENEWAL_POINT


@pytest.mark.parametrize(
    ("inp", "retry_at", "wake_at"),
    [
        pytest.param(
            make_input(T0 + s(2), token=None, failure=failure_at(T0)),
            T0 + s(5),
            T0 + s(5),
            id="a failure without a token backs off",
        ),
        pytest.param(
            make_input(RENEWAL_POINT + s(2), failure=failure_at(RENEWAL_POINT, attempts=3)),
            RENEWAL_POINT + s(20),
            RENEWAL_POINT + s(20),
            id="a failed renewal backs off while the token is still valid",
        ),
        pytest.param(
            make_input(T0 + s(2), fingerprint="fingerprint-2", failure=failure_at(T0)),
            T0 + s(5),
            T0 + s(5),
            id="changed inputs that already failed back off",
        ),
        pytest.param(
            make_input(
                T0 + HOUR - s(60),
                failure=failure_at(T0 + HOUR - s(60), reason=Reason.RATE_LIMITED, retry_after=s(600)),
            ),
            T0 + HOUR - s(2),
            T0 + HOUR - s(2),
            id="a Retry-After past a still-valid token's expiry is cut to one last attempt before it",
        ),
        pytest.param(
            make_input(T0 + HOUR - s(30), failure=failure_at(T0 + HOUR - s(30), attempts=7)),
            T0 + HOUR - s(2),
            T0 + HOUR - s(2),
            id="a long backoff is pulled in before a still-valid token expires",
        ),
        pytest.param(
            make_input(T0 + 2 * HOUR, failure=failure_at(T0 + 2 * HOUR - s(1), attempts=2)),
            T0 + 2 * HOUR + s(9),
            T0 + 2 * HOUR + s(9),
            id="an expired token backs off without waking at its past expiry",
        ),
    ],
)
def test_plan_backs_off_after_a_failure(
    jitter: Callable[[float], None], inp: Input, retry_at: datetime, wake_at: datetime
) -> None:
    assert plan(inp) == Plan(issue=None, wake_at=wake_at, backing_off_until=retry_at)


def test_plan_backing_off_never_wakes_after_expiry_with_real_jitter() -> None:
    for attempts in range(1, 20):
        at = T0 + HOUR - s(90)
        result = plan(make_input(at + s(1), failure=failure_at(at, attempts=attempts)))
        if result.issue is None:
            assert result.wake_at is not None
            assert result.wake_at <= T0 + HOUR


@pytest.mark.parametrize(
    ("inp", "reason"),
    [
        pytest.param(make_input(T0), None, id="a fresh token is ready"),
        pytest.param(make_input(T0 + HOUR - s(1)), None, id="a token one second before expiry is ready"),
        pytest.param(make_input(RENEWAL_POINT + s(60)), None, id="a token past its renewal point is still ready"),
        pytest.param(make_input(T0, refresh_requested=True), None, id="a refresh request does not make it unready"),
        pytest.param(
            make_input(T0 + s(10), failure=failure_at(T0)), None, id="a failed refresh keeps a valid token ready"
        ),
        pytest.param(make_input(T0 + HOUR), "Expired", id="a token is expired at its expiry instant"),
        pytest.param(make_input(T0 + 2 * HOUR), "Expired", id="a token past expiry is not ready"),
        pytest.param(make_input(T0, fingerprint="fingerprint-2"), "InputsChanged", id="changed inputs are not ready"),
        pytest.param(make_input(T0, token=None), "NoToken", id="a missing token is not ready"),
    ],
)
def test_readiness(inp: Input, reason: str | None) -> None:
    verdict = readiness(inp)
    if reason is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert verdict.reason == reason
        assert verdict.message


def test_a_failed_refresh_request_stays_wanted_but_waits_for_the_backoff(jitter: Callable[[float], None]) -> None:
    jitter(0.0)
    fresh = T0 + s(60)  # the token is far from its renewal point
    failed = failure_at(fresh, attempts=1, reason=Reason.ENDPOINT_UNAVAILABLE)
    waiting = plan(make_input(fresh + s(1), failure=failed, refresh_pending=True))
    assert waiting.issue is None
    assert waiting.backing_off_until == fresh + s(5)
    due = plan(make_input(fresh + s(5), failure=failed, refresh_pending=True))
    assert due.issue is not None
    assert due.issue.reason == "RefreshPending"
    # Without the pending request the fresh token needs nothing: no retry is planned.
    idle = plan(make_input(fresh + s(1), failure=failed))
    assert idle.issue is None
    assert idle.backing_off_until is None


@pytest.mark.parametrize(
    ("lifetime", "policy", "clamped"),
    [
        pytest.param(HOUR, Renewal(before="59m59s"), True, id="before of almost the lifetime"),
        pytest.param(HOUR, Renewal(percent=5), True, id="five percent"),
        pytest.param(HOUR, Renewal(percent=10), False, id="ten percent is the floor itself"),
        pytest.param(HOUR, Renewal(before="10m"), False, id="a usual before"),
        pytest.param(HOUR, Renewal(), False, id="the default"),
        pytest.param(s(2), Renewal(percent=20), True, id="a tiny lifetime hits the one-second floor"),
    ],
)
def test_clamp_note_says_when_the_settings_ask_for_too_many_refreshes(
    lifetime: timedelta, policy: Renewal, clamped: bool
) -> None:
    note = clamp_note(T0, T0 + lifetime, policy)
    assert (note is not None) is clamped
    if note is not None:
        assert "clamped to" in note
        assert renewal_time(T0, T0 + lifetime, policy) - T0 == min_refresh_interval(lifetime)


def test_a_clamped_policy_refreshes_at_most_ten_times_per_lifetime() -> None:
    issued, refreshes = T0, 0
    while issued < T0 + HOUR:
        issued = renewal_time(issued, issued + HOUR, Renewal(before="59m59s"), seed="uid")
        refreshes += 1
    assert refreshes <= 10


def test_a_refused_secret_write_backs_off_like_an_api_call(jitter: Callable[[float], None]) -> None:
    delays = [backoff_delay(n, Reason.SECRET_WRITE_FAILED) for n in (1, 2, 3, 7, 20)]
    assert delays == [s(1), s(2), s(4), s(60), s(60)]
