"""Status building: conditions, failure bookkeeping, the JSON form, the patch and the events.

All pure: every moment is a fixed UTC datetime, and rounds are chained by feeding one
``build_status()`` result into the next as ``old``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tokensync.core import StoredToken
from tokensync.dev.cluster import merge_patch  # the stand-in applies patches as the API server does
from tokensync.models import ClientCredentialStatus, Condition, LastFailure, Reason
from tokensync.renewal import FailureRecord, Verdict
from tokensync.status import (
    READY,
    RECONCILING,
    STALLED,
    Event,
    Failure,
    Situation,
    build_status,
    failure_record,
    set_condition,
    status_patch,
    to_json,
    transition_events,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ACCESS_TOKEN = "tok-ACCESS-7f3e9a1c55d0"
SECRET_NAME = "palisade-token"

TOKEN = StoredToken(
    access_token=ACCESS_TOKEN,
    token_type="Bearer",
    scope="balances:read",
    issued_at=T0,
    expires_at=T0 + HOUR,
    fingerprint="f" * 32,
)
NEW_TOKEN = replace(TOKEN, access_token="tok-ACCESS-second", issued_at=T0 + 2 * HOUR, expires_at=T0 + 3 * HOUR)
NO_TOKEN = Verdict("NoToken", "no token has been issued yet")
EXPIRED = Verdict("Expired", "the token expired at 2030-01-01T13:00:00+00:00")

UNAVAILABLE = Failure(Reason.ENDPOINT_UNAVAILABLE, "the endpoint failed (HTTP 503): upstream down", http_status=503)
RATE_LIMITED = Failure(
    Reason.RATE_LIMITED,
    "the endpoint is rate-limiting requests (HTTP 429)",
    http_status=429,
    retry_after=timedelta(seconds=30),
)
MISSING_CREDENTIALS = Failure(Reason.CREDENTIALS_NOT_FOUND, "Secret 'creds' not found in 'payments'")
BAD_CREDENTIALS = Failure(
    Reason.INVALID_CREDENTIALS, "the endpoint rejected the client credentials (HTTP 401)", http_status=401, code=16
)


def situation(**changes: Any) -> Situation:
    fields: dict[str, Any] = {
        "now": T0,
        "generation": 3,
        "secret_name": SECRET_NAME,
        "token": TOKEN,
        "not_ready": None,
        "renewal_time": T0 + timedelta(minutes=40),
    }
    return Situation(**{**fields, **changes})


def conditions(status: ClientCredentialStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def condition(status: ClientCredentialStatus, type_: str) -> Condition:
    return next(c for c in status.conditions if c.type == type_)


def cond(type_: str, status: str, at: datetime = T0, reason: str = "R", message: str = "") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=at)


# Reusable rounds: first issue, then transient failures, then recovery.
ISSUED = build_status(ClientCredentialStatus(), situation())
T1 = T0 + timedelta(minutes=40)
FAILED_ONCE = build_status(ISSUED, situation(now=T1, failure=UNAVAILABLE, retry_at=T1 + timedelta(seconds=5)))
T2 = T1 + timedelta(seconds=5)
FAILED_TWICE = build_status(FAILED_ONCE, situation(now=T2, failure=UNAVAILABLE, retry_at=T2 + timedelta(seconds=10)))
T3 = T2 + timedelta(seconds=10)
RECOVERED = build_status(
    FAILED_TWICE, situation(now=T3, token=NEW_TOKEN, issued=True, renewal_time=T3 + timedelta(minutes=40))
)


# set_condition() -----------------------------------------------------------------------------


def test_set_condition_adds_a_new_type() -> None:
    result = set_condition([], cond(READY, "True"))
    assert [(c.type, c.status) for c in result] == [(READY, "True")]


def test_set_condition_keeps_the_transition_time_when_the_status_does_not_flip() -> None:
    old = [cond(READY, "True", T0, reason="TokenIssued", message="old")]
    result = set_condition(old, cond(READY, "True", T0 + HOUR, reason="Other", message="new"))
    assert len(result) == 1
    assert result[0].last_transition_time == T0
    assert (result[0].reason, result[0].message) == ("Other", "new")


def test_set_condition_moves_the_transition_time_when_the_status_flips() -> None:
    old = [cond(READY, "True", T0)]
    result = set_condition(old, cond(READY, "False", T0 + HOUR))
    assert [(c.status, c.last_transition_time) for c in result] == [("False", T0 + HOUR)]


def test_set_condition_replaces_only_its_own_type() -> None:
    old = [cond(READY, "True", T0), cond(STALLED, "False", T0)]
    result = set_condition(old, cond(STALLED, "True", T0 + HOUR))
    assert [(c.type, c.status, c.last_transition_time) for c in result] == [
        (READY, "True", T0),
        (STALLED, "True", T0 + HOUR),
    ]


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        pytest.param([STALLED, RECONCILING], READY, id="Ready added last still comes first"),
        pytest.param([READY, STALLED], RECONCILING, id="Reconciling goes between Ready and Stalled"),
        pytest.param(["Custom", STALLED, READY], RECONCILING, id="an unknown type goes after the known ones"),
    ],
)
def test_set_condition_keeps_a_stable_order(existing: list[str], new: str) -> None:
    result = set_condition([cond(t, "True") for t in existing], cond(new, "False"))
    known = [t for t in (READY, RECONCILING, STALLED) if t in [*existing, new]]
    unknown = [t for t in existing if t not in (READY, RECONCILING, STALLED)]
    assert [c.type for c in result] == known + unknown


def test_set_condition_does_not_change_its_input() -> None:
    old = [cond(READY, "True", T0)]
    set_condition(old, cond(READY, "False", T0 + HOUR))
    assert (old[0].status, old[0].last_transition_time) == ("True", T0)


# build_status() ------------------------------------------------------------------------------


def test_first_issue() -> None:
    status = ISSUED
    assert conditions(status) == {
        READY: ("True", Reason.TOKEN_ISSUED),
        RECONCILING: ("False", Reason.UP_TO_DATE),
        STALLED: ("False", Reason.AS_EXPECTED),
    }
    assert [c.type for c in status.conditions] == [READY, RECONCILING, STALLED]
    ready = condition(status, READY)
    assert SECRET_NAME in ready.message
    assert "2030-01-01T13:00:00Z" in ready.message
    assert "failed" not in ready.message
    assert all(c.last_transition_time == T0 for c in status.conditions)
    assert status.failed_attempts == 0
    assert status.last_failure is None
    assert status.last_failure_time is None
    assert (status.issued_at, status.expires_at, status.renewal_time) == (T0, T0 + HOUR, T0 + timedelta(minutes=40))
    assert (status.secret_name, status.token_type, status.scope) == (SECRET_NAME, "Bearer", "balances:read")
    assert status.observed_generation == 3


def test_a_transient_failure_with_a_valid_token() -> None:
    status = FAILED_ONCE
    assert conditions(status) == {
        READY: ("True", Reason.TOKEN_ISSUED),
        RECONCILING: ("True", Reason.RETRYING),
        STALLED: ("False", Reason.AS_EXPECTED),
    }
    ready = condition(status, READY)
    assert "EndpointUnavailable" in ready.message
    assert "upstream down" in ready.message
    assert "retrying at 2030-01-01T12:40:05Z" in ready.message
    assert ready.last_transition_time == T0  # Ready did not flip
    assert condition(status, RECONCILING).last_transition_time == T1  # Reconciling did
    assert "retrying at 2030-01-01T12:40:05Z" in condition(status, RECONCILING).message
    assert status.failed_attempts == 1
    assert status.last_failure_time == T1
    assert status.last_failure == LastFailure(
        reason=Reason.ENDPOINT_UNAVAILABLE, http_status=503, message=UNAVAILABLE.message
    )
    assert status.expires_at == T0 + HOUR  # the old token is still described


def test_each_further_failure_counts() -> None:
    assert FAILED_TWICE.failed_attempts == 2
    assert FAILED_TWICE.last_failure_time == T2
    assert condition(FAILED_TWICE, RECONCILING).last_transition_time == T1


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [
        pytest.param(timedelta(seconds=30), 30, id="a Retry-After of 30 s is recorded as 30"),
        pytest.param(
            timedelta(seconds=30, milliseconds=700), 30, id="a fractional Retry-After is cut to whole seconds"
        ),
    ],
)
def test_a_failure_with_retry_after_records_it_in_whole_seconds(retry_after: timedelta, seconds: int) -> None:
    failure = replace(RATE_LIMITED, retry_after=retry_after)
    status = build_status(ISSUED, situation(now=T1, failure=failure, retry_at=T1 + timedelta(seconds=30)))
    assert status.last_failure is not None
    assert (status.last_failure.reason, status.last_failure.retry_after_seconds) == (Reason.RATE_LIMITED, seconds)


def test_a_stalled_failure_with_no_token() -> None:
    status = build_status(
        ClientCredentialStatus(),
        situation(token=None, not_ready=NO_TOKEN, renewal_time=None, failure=BAD_CREDENTIALS, retry_at=T0 + HOUR),
    )
    assert conditions(status) == {
        READY: ("False", Reason.INVALID_CREDENTIALS),
        RECONCILING: ("False", Reason.UP_TO_DATE),
        STALLED: ("True", Reason.INVALID_CREDENTIALS),
    }
    assert condition(status, READY).message == BAD_CREDENTIALS.message
    assert condition(status, STALLED).message == BAD_CREDENTIALS.message
    assert status.failed_attempts == 1
    assert status.last_failure == LastFailure(
        reason=Reason.INVALID_CREDENTIALS, http_status=401, code=16, message=BAD_CREDENTIALS.message
    )
    assert (status.token_type, status.issued_at, status.expires_at, status.renewal_time) == (None, None, None, None)


def test_a_transient_failure_with_no_token_is_reconciling_not_stalled() -> None:
    status = build_status(
        ClientCredentialStatus(),
        situation(token=None, not_ready=NO_TOKEN, failure=UNAVAILABLE, retry_at=T0 + timedelta(seconds=5)),
    )
    assert conditions(status) == {
        READY: ("False", Reason.ENDPOINT_UNAVAILABLE),
        RECONCILING: ("True", Reason.RETRYING),
        STALLED: ("False", Reason.AS_EXPECTED),
    }


def test_no_token_and_no_failure_yet_is_issuing() -> None:
    status = build_status(ClientCredentialStatus(), situation(token=None, not_ready=NO_TOKEN))
    assert conditions(status) == {
        READY: ("False", Reason.ISSUING),
        RECONCILING: ("True", Reason.ISSUING),
        STALLED: ("False", Reason.AS_EXPECTED),
    }
    assert condition(status, READY).message == NO_TOKEN.message


def test_a_waiting_round_keeps_the_failure_record() -> None:
    failed = build_status(
        ClientCredentialStatus(),
        situation(token=None, not_ready=NO_TOKEN, failure=UNAVAILABLE, retry_at=T0 + timedelta(seconds=5)),
    )
    waiting = build_status(
        failed,
        situation(now=T0 + timedelta(seconds=2), token=None, not_ready=NO_TOKEN, retry_at=T0 + timedelta(seconds=5)),
    )
    assert waiting.failed_attempts == 1
    assert waiting.last_failure == failed.last_failure
    assert waiting.last_failure_time == T0
    assert conditions(waiting)[READY] == ("False", Reason.ENDPOINT_UNAVAILABLE)


def test_recovery_clears_the_failure_record() -> None:
    status = RECOVERED
    assert status.failed_attempts == 0
    assert status.last_failure is None
    assert status.last_failure_time is None
    assert conditions(status) == {
        READY: ("True", Reason.TOKEN_ISSUED),
        RECONCILING: ("False", Reason.UP_TO_DATE),
        STALLED: ("False", Reason.AS_EXPECTED),
    }
    assert "failed" not in condition(status, READY).message
    assert condition(status, RECONCILING).last_transition_time == T3
    assert condition(status, READY).last_transition_time == T0
    assert (status.issued_at, status.expires_at) == (T0 + 2 * HOUR, T0 + 3 * HOUR)


def test_recovery_from_a_stall_flips_ready_and_stalled() -> None:
    stalled = build_status(ClientCredentialStatus(), situation(token=None, not_ready=NO_TOKEN, failure=BAD_CREDENTIALS))
    fixed = build_status(stalled, situation(now=T0 + HOUR, token=NEW_TOKEN, issued=True))
    assert conditions(fixed)[READY] == ("True", Reason.TOKEN_ISSUED)
    assert conditions(fixed)[STALLED] == ("False", Reason.AS_EXPECTED)
    assert condition(fixed, READY).last_transition_time == T0 + HOUR
    assert condition(fixed, STALLED).last_transition_time == T0 + HOUR
    assert condition(fixed, RECONCILING).last_transition_time == T0  # False both times


@pytest.mark.parametrize(
    ("token", "not_ready", "ready", "detail"),
    [
        pytest.param(TOKEN, None, "True", "valid until 2030-01-01T13:00:00Z", id="suspended with a valid token"),
        pytest.param(TOKEN, EXPIRED, "False", "expired or missing", id="suspended with an expired token"),
        pytest.param(None, NO_TOKEN, "False", "expired or missing", id="suspended with no token"),
    ],
)
def test_suspended(token: StoredToken | None, not_ready: Verdict | None, ready: str, detail: str) -> None:
    status = build_status(FAILED_TWICE, situation(now=T3, token=token, not_ready=not_ready, suspended=True))
    assert conditions(status) == {
        READY: (ready, Reason.SUSPENDED),
        RECONCILING: ("False", Reason.UP_TO_DATE),
        STALLED: ("False", Reason.AS_EXPECTED),
    }
    message = condition(status, READY).message
    assert "suspended" in message
    assert detail in message


def test_suspending_a_stalled_resource_clears_stalled() -> None:
    stalled = build_status(ClientCredentialStatus(), situation(token=None, not_ready=NO_TOKEN, failure=BAD_CREDENTIALS))
    suspended = build_status(stalled, situation(token=None, not_ready=NO_TOKEN, suspended=True))
    assert conditions(suspended)[STALLED] == ("False", Reason.AS_EXPECTED)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(ISSUED, id="after a first issue"),
        pytest.param(FAILED_ONCE, id="after a failure"),
        pytest.param(RECOVERED, id="after a recovery"),
    ],
)
def test_observed_generation_is_on_every_condition(status: ClientCredentialStatus) -> None:
    assert [c.observed_generation for c in status.conditions] == [3, 3, 3]


def test_a_new_generation_reaches_every_condition() -> None:
    status = build_status(ISSUED, situation(now=T1, generation=4))
    assert status.observed_generation == 4
    assert [c.observed_generation for c in status.conditions] == [4, 4, 4]
    assert all(c.last_transition_time == T0 for c in status.conditions)  # nothing flipped


def test_condition_times_are_whole_seconds() -> None:
    status = build_status(ClientCredentialStatus(), situation(now=T0 + timedelta(microseconds=750_000)))
    assert all(c.last_transition_time == T0 for c in status.conditions)


def test_the_refresh_request_is_carried_into_status() -> None:
    assert build_status(ISSUED, situation(last_refresh_request="2030-01-01")).last_refresh_request == "2030-01-01"


# failure_record() ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(ClientCredentialStatus(), id="a fresh status has no record"),
        pytest.param(ISSUED, id="a healthy status has no record"),
        pytest.param(FAILED_ONCE.model_copy(update={"last_failure_time": None}), id="no lastFailureTime, no record"),
        pytest.param(FAILED_ONCE.model_copy(update={"last_failure": None}), id="no lastFailure, no record"),
        pytest.param(FAILED_ONCE.model_copy(update={"failed_attempts": 0}), id="zero failedAttempts, no record"),
    ],
)
def test_failure_record_is_none_without_a_complete_failure(status: ClientCredentialStatus) -> None:
    assert failure_record(status) is None


def test_failure_record_rebuilds_the_backoff_state_rounding_the_time_up() -> None:
    # Status keeps whole seconds: the failure happened within [T2, T2 + 1s), so a backoff or a
    # Retry-After counted from T2 could end early; from T2 + 1s it never does.
    assert failure_record(FAILED_TWICE) == FailureRecord(
        attempts=2, at=T2 + timedelta(seconds=1), reason=Reason.ENDPOINT_UNAVAILABLE
    )


def test_failure_record_uses_the_exact_time_remembered_for_the_same_failure() -> None:
    exact = T2 + timedelta(milliseconds=700)
    assert failure_record(FAILED_TWICE, exact).at == exact
    # A remembered time from another failure (another second) is not this one's.
    assert failure_record(FAILED_TWICE, T1).at == T2 + timedelta(seconds=1)


def test_a_round_that_attempted_nothing_keeps_the_failure_record() -> None:
    # e.g. a failed refresh request while the token is still fresh: no retry is planned,
    # but the failure stays visible until an exchange succeeds.
    quiet = build_status(FAILED_TWICE, situation(now=T3))
    assert quiet.failed_attempts == 2
    assert quiet.last_failure == FAILED_TWICE.last_failure
    assert "the last refresh failed" in condition(quiet, READY).message


def test_a_failed_precondition_clears_once_the_token_is_usable_again() -> None:
    missing = build_status(ISSUED, situation(now=T1, not_ready=NO_TOKEN, failure=MISSING_CREDENTIALS))
    found = build_status(missing, situation(now=T2))
    assert found.failed_attempts == 0
    assert found.last_failure is None


def test_failure_record_survives_the_trip_through_the_api() -> None:
    status = build_status(ISSUED, situation(now=T1, failure=RATE_LIMITED, retry_at=T1 + timedelta(seconds=30)))
    restored = ClientCredentialStatus.model_validate(to_json(status))
    assert failure_record(restored) == FailureRecord(
        attempts=1, at=T1 + timedelta(seconds=1), reason=Reason.RATE_LIMITED, retry_after=timedelta(seconds=30)
    )


def test_failure_record_defaults_a_missing_reason() -> None:
    status = ClientCredentialStatus(failed_attempts=1, last_failure_time=T0, last_failure=LastFailure(message="?"))
    record = failure_record(status)
    assert record is not None
    assert record.reason is Reason.ENDPOINT_UNAVAILABLE


# to_json() -----------------------------------------------------------------------------------


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in [item, *_walk(item)]]
    if isinstance(value, list):
        return [v for item in value for v in [item, *_walk(item)]]
    return []


def test_to_json_uses_whole_second_utc_times_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    status = ClientCredentialStatus(
        issued_at=datetime(2030, 1, 1, 14, 0, 0, 123_456, tzinfo=plus_two),
        expires_at=T0 + HOUR + timedelta(microseconds=1),
        renewal_time=T0 + timedelta(minutes=40, microseconds=999_999),
        last_failure_time=T0 + timedelta(microseconds=5),
        conditions=[cond(READY, "True", datetime(2030, 1, 1, 14, 0, 0, 900_000, tzinfo=plus_two))],
        failed_attempts=1,
        last_failure=LastFailure(reason=Reason.RATE_LIMITED),
    )
    data = to_json(status)
    assert data["issuedAt"] == "2030-01-01T12:00:00Z"
    assert data["expiresAt"] == "2030-01-01T13:00:00Z"
    assert data["renewalTime"] == "2030-01-01T12:40:00Z"
    assert data["lastFailureTime"] == "2030-01-01T12:00:00Z"
    assert data["conditions"][0]["lastTransitionTime"] == "2030-01-01T12:00:00Z"


def test_to_json_uses_the_api_names_and_drops_nulls() -> None:
    data = to_json(FAILED_ONCE)
    assert None not in _walk(data)
    assert data["lastFailure"] == {"reason": "EndpointUnavailable", "httpStatus": 503, "message": UNAVAILABLE.message}
    assert data["failedAttempts"] == 1
    assert data["secretName"] == SECRET_NAME
    assert data["observedGeneration"] == 3
    assert data["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "TokenIssued",
        "message": condition(FAILED_ONCE, READY).message,
        "lastTransitionTime": "2030-01-01T12:00:00Z",
        "observedGeneration": 3,
    }


def test_to_json_of_a_status_with_no_token_has_no_token_fields() -> None:
    status = build_status(ClientCredentialStatus(), situation(token=None, not_ready=NO_TOKEN, failure=BAD_CREDENTIALS))
    data = to_json(status)
    assert None not in _walk(data)
    for key in ("tokenType", "scope", "issuedAt", "expiresAt", "renewalTime"):
        assert key not in data


def test_to_json_round_trips() -> None:
    assert ClientCredentialStatus.model_validate(to_json(FAILED_TWICE)) == FAILED_TWICE


# status_patch() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({"a": 1, "b": [1]}, {"a": 1, "b": [1]}, None, id="equal statuses need no patch"),
        pytest.param({}, {}, None, id="two empty statuses need no patch"),
        pytest.param({"a": 1, "b": 2}, {"a": 1, "b": 3}, {"b": 3}, id="only a changed key is sent"),
        pytest.param({"a": 1}, {"a": 1, "c": 4}, {"c": 4}, id="an added key is sent"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="a removed key is sent as null"),
        pytest.param({}, {"a": {"x": 1}}, {"a": {"x": 1}}, id="a first status is sent whole"),
        pytest.param({"l": [1, 2]}, {"l": [2]}, {"l": [2]}, id="a changed list is sent whole"),
    ],
)
def test_status_patch(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert status_patch(old, new) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(to_json(ISSUED), to_json(FAILED_ONCE), id="from healthy to failing"),
        pytest.param(to_json(FAILED_ONCE), to_json(FAILED_TWICE), id="from one failure to the next"),
        pytest.param(to_json(FAILED_TWICE), to_json(RECOVERED), id="from failing to recovered"),
        pytest.param({}, to_json(ISSUED), id="from no status to the first"),
    ],
)
def test_applying_the_status_patch_gives_the_new_status(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = status_patch(old, new)
    assert patch is not None
    assert merge_patch(old, patch) == new


def test_a_new_failure_without_http_details_removes_the_old_ones() -> None:
    limited = build_status(ISSUED, situation(now=T1, failure=RATE_LIMITED, retry_at=T1 + timedelta(seconds=30)))
    unreachable = Failure(Reason.ENDPOINT_UNAVAILABLE, "cannot reach auth.example.com (ConnectError)")
    later = T1 + timedelta(seconds=30)
    then = build_status(limited, situation(now=later, failure=unreachable, retry_at=later + timedelta(seconds=10)))
    old, new = to_json(limited), to_json(then)
    server_side = merge_patch(old, status_patch(old, new))
    assert server_side["lastFailure"] == new["lastFailure"]
    assert failure_record(ClientCredentialStatus.model_validate(server_side)) == failure_record(then)


# transition_events() -------------------------------------------------------------------------


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in events]


def test_a_first_token_is_issued() -> None:
    events = transition_events(ClientCredentialStatus(), ISSUED, issued=True)
    assert kinds(events) == [("Normal", "Issued")]
    assert SECRET_NAME in events[0].message
    assert "2030-01-01T13:00:00Z" in events[0].message


def test_a_later_token_is_refreshed() -> None:
    refreshed = build_status(ISSUED, situation(now=T0 + HOUR, token=NEW_TOKEN))
    events = transition_events(ISSUED, refreshed, issued=True)
    assert kinds(events) == [("Normal", "Refreshed")]
    assert "2030-01-01T15:00:00Z" in events[0].message


def test_a_routine_refresh_of_a_ready_resource_posts_no_event() -> None:
    """Status and metrics show routine refreshes; an Event each would cost a write per lifetime."""
    refreshed = build_status(ISSUED, situation(now=T0 + HOUR, token=NEW_TOKEN))
    assert transition_events(ISSUED, refreshed, issued=True, routine=True) == []


def test_a_routine_refresh_that_makes_the_resource_ready_again_is_an_event() -> None:
    not_ready = ISSUED.model_copy(
        update={"conditions": [c.model_copy(update={"status": "False"}) for c in ISSUED.conditions]}
    )
    refreshed = build_status(not_ready, situation(now=T0 + HOUR, token=NEW_TOKEN))
    assert kinds(transition_events(not_ready, refreshed, issued=True, routine=True)) == [("Normal", "Refreshed")]


def test_a_first_token_is_an_event_even_when_routine() -> None:
    assert kinds(transition_events(ClientCredentialStatus(), ISSUED, issued=True, routine=True)) == [
        ("Normal", "Issued")
    ]


def test_a_round_with_nothing_new_posts_nothing() -> None:
    same = build_status(ISSUED, situation(now=T1))
    assert transition_events(ISSUED, same, issued=False) == []


def test_a_new_failure_posts_a_warning_with_its_reason() -> None:
    events = transition_events(ISSUED, FAILED_ONCE, issued=False)
    assert events == [Event("Warning", "EndpointUnavailable", UNAVAILABLE.message)]


def test_a_repeat_of_the_same_failure_posts_nothing() -> None:
    assert transition_events(FAILED_ONCE, FAILED_TWICE, issued=False) == []


def test_a_failure_with_another_reason_posts_a_warning() -> None:
    limited = build_status(FAILED_ONCE, situation(now=T2, failure=RATE_LIMITED, retry_at=T2 + timedelta(seconds=30)))
    assert kinds(transition_events(FAILED_ONCE, limited, issued=False)) == [("Warning", "RateLimited")]


def test_a_waiting_round_does_not_repeat_the_warning() -> None:
    waiting = build_status(FAILED_ONCE, situation(now=T1 + timedelta(seconds=2), retry_at=T1 + timedelta(seconds=5)))
    assert waiting.failed_attempts == 1
    assert transition_events(FAILED_ONCE, waiting, issued=False) == []


def test_recovery_posts_refreshed_and_recovered() -> None:
    events = transition_events(FAILED_TWICE, RECOVERED, issued=True)
    assert kinds(events) == [("Normal", "Refreshed"), ("Normal", "Recovered")]
    assert "EndpointUnavailable" in events[1].message


def test_expiry_without_a_failure_posts_not_ready() -> None:
    expired = build_status(ISSUED, situation(now=T0 + HOUR, not_ready=EXPIRED))
    assert conditions(expired)[READY][0] == "False"
    events = transition_events(ISSUED, expired, issued=False)
    assert events == [Event("Warning", "NotReady", EXPIRED.message)]


def test_a_failure_that_ends_readiness_posts_only_the_failure() -> None:
    changed = build_status(ISSUED, situation(now=T1, not_ready=NO_TOKEN, token=None, failure=BAD_CREDENTIALS))
    assert conditions(changed)[READY][0] == "False"
    assert kinds(transition_events(ISSUED, changed, issued=False)) == [("Warning", "InvalidCredentials")]


def test_not_ready_is_not_repeated_while_not_ready() -> None:
    expired = build_status(ISSUED, situation(now=T0 + HOUR, not_ready=EXPIRED))
    still = build_status(expired, situation(now=T0 + HOUR + timedelta(seconds=1), not_ready=EXPIRED))
    assert transition_events(expired, still, issued=False) == []


def test_no_event_ever_holds_the_token() -> None:
    rounds: list[tuple[ClientCredentialStatus, Situation, bool]] = [
        (ClientCredentialStatus(), situation(), True),
        (ISSUED, situation(now=T1, failure=UNAVAILABLE, retry_at=T1 + timedelta(seconds=5)), False),
        (FAILED_ONCE, situation(now=T2, failure=RATE_LIMITED, retry_at=T2 + timedelta(seconds=30)), False),
        (FAILED_TWICE, situation(now=T3, token=NEW_TOKEN, issued=True), True),
        (ISSUED, situation(now=T0 + HOUR, not_ready=EXPIRED), False),
        (ISSUED, situation(now=T1, token=None, not_ready=NO_TOKEN, failure=BAD_CREDENTIALS), False),
        (FAILED_ONCE, situation(now=T3, suspended=True, not_ready=EXPIRED), False),
    ]
    seen: list[Event] = []
    for old, round_, issued in rounds:
        seen += transition_events(old, build_status(old, round_), issued=issued)
    assert {e.reason for e in seen} >= {"Issued", "Refreshed", "Recovered", "NotReady", "EndpointUnavailable"}
    for event in seen:
        for token in (ACCESS_TOKEN, NEW_TOKEN.access_token):
            assert token not in event.message
            assert token not in event.reason
