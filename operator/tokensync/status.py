"""Pure status building: conditions, failure bookkeeping, the patch to send, events to post.

kstatus conventions (what Flux, Argo CD and ``kubectl wait`` read):

- ``Ready`` is True exactly when the target Secret holds an unexpired token minted
  from the current spec and credentials;
- ``Reconciling`` is True while an exchange or a retry is under way;
- ``Stalled`` is True when a human must act (bad credentials, a foreign Secret...).

``lastTransitionTime`` moves only when a condition's status flips, as in
cert-manager's ``SetCertificateCondition``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .core import StoredToken, rfc3339
from .models import (
    PRECONDITION_REASONS,
    ClientCredentialStatus,
    Condition,
    LastFailure,
    LifetimeSource,
    Reason,
    RolloutRestartStatus,
)
from .renewal import FailureRecord, Verdict, is_stalled

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


@dataclass(frozen=True)
class Failure:
    """One failed attempt (an exchange, or a precondition such as a missing Secret)."""

    reason: Reason
    message: str
    http_status: int | None = None
    code: int | None = None
    retry_after: timedelta | None = None
    #: The keyed hash of the inputs of a failed exchange: a change to them is retried at once.
    inputs_hash: str | None = None


def keeps_failure(old_reason: Reason | None, *, delivered: bool, synced: bool, ready: bool) -> bool:
    """Whether a round that failed at nothing carries the failure record on.

    It ends when a new token reaches the Secret; a failed precondition ends when the token is
    usable again (the inputs pass now); a refused Secret write ends when a write succeeds.
    """
    if old_reason is None or delivered:
        return False
    if ready and old_reason in PRECONDITION_REASONS:
        return False
    return not (synced and old_reason is Reason.SECRET_WRITE_FAILED)


def same_token(status: ClientCredentialStatus, token: StoredToken) -> bool:
    """Whether ``status`` already reports ``token`` (times are whole seconds in both)."""
    return status.issued_at == token.issued_at and status.expires_at == token.expires_at


def failure_record(status: ClientCredentialStatus, exact_at: datetime | None = None) -> FailureRecord | None:
    """The backoff state as status holds it: rebuilt after a restart, as cert-manager does.

    Status keeps whole seconds; ``exact_at`` (remembered in memory) is used when it is the
    same failure. Otherwise the time is rounded up, never down, so a Retry-After or a backoff
    is never cut short.
    """
    if not status.failed_attempts or status.last_failure_time is None or status.last_failure is None:
        return None
    reason = status.last_failure.reason or Reason.ENDPOINT_UNAVAILABLE
    seconds = status.last_failure.retry_after_seconds
    at = status.last_failure_time + timedelta(seconds=1)
    if exact_at is not None and exact_at.replace(microsecond=0) == status.last_failure_time:
        at = exact_at
    return FailureRecord(
        attempts=status.failed_attempts,
        at=at,
        reason=reason,
        retry_after=timedelta(seconds=seconds) if seconds is not None else None,
    )


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of ``new.type``, keeping its lastTransitionTime unless the status flips."""
    result: list[Condition] = []
    for existing in conditions:
        if existing.type == new.type:
            if existing.status == new.status:
                new = new.model_copy(update={"last_transition_time": existing.last_transition_time})
            continue
        result.append(existing)
    result.append(new)
    order = {READY: 0, RECONCILING: 1, STALLED: 2}
    return sorted(result, key=lambda c: order.get(c.type, 99))


@dataclass(frozen=True)
class Situation:
    """What the reconciler learned this round, as the status builder needs it."""

    now: datetime
    generation: int | None
    secret_name: str
    #: The token the Secret holds now (None when there is none, or it is not ours).
    token: StoredToken | None
    #: None when the token is usable; otherwise why not (from renewal.readiness()).
    not_ready: Verdict | None
    renewal_time: datetime | None
    #: The failure of this round, if any; None after a success or when nothing was attempted.
    failure: Failure | None = None
    #: A new token reached the Secret this round (one status did not report yet).
    issued: bool = False
    #: The Secret holds what the round wanted it to hold (None/False: not written, or refused).
    secret_synced: bool = False
    #: When the next attempt is planned, if a retry is pending.
    retry_at: datetime | None = None
    suspended: bool = False
    last_refresh_request: str | None = None
    pending_refresh_request: str | None = None
    #: Set when the renewal settings were clamped (``renewal.clamp_note``).
    renewal_note: str | None = None
    #: Set when workloads were restarted this round (otherwise the last record is kept).
    rollout: RolloutRestartStatus | None = None


def _condition(type_: str, ok: bool, reason: str, message: str, situation: Situation) -> Condition:
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        last_transition_time=situation.now.replace(microsecond=0),
        observed_generation=situation.generation,
    )


def _when(moment: datetime | None) -> str:
    return rfc3339(moment) if moment else "unknown"


def build_status(old: ClientCredentialStatus, situation: Situation) -> ClientCredentialStatus:
    """The status to write after this round, given the status as it was."""
    s = situation
    old_reason = old.last_failure.reason if old.last_failure else None
    # A failure record lasts until a new token reaches the Secret (see ``keeps_failure``); rounds
    # that attempted nothing carry it on.
    if s.failure is not None:
        failed_attempts = old.failed_attempts + 1
        last_failure_time: datetime | None = s.now.replace(microsecond=0)
        last_failure: LastFailure | None = LastFailure(
            reason=s.failure.reason,
            http_status=s.failure.http_status,
            code=s.failure.code,
            message=s.failure.message,
            retry_after_seconds=int(s.failure.retry_after.total_seconds()) if s.failure.retry_after else None,
            inputs_hash=s.failure.inputs_hash,
        )
    elif keeps_failure(old_reason, delivered=s.issued, synced=s.secret_synced, ready=s.not_ready is None):
        failed_attempts, last_failure_time, last_failure = old.failed_attempts, old.last_failure_time, old.last_failure
    else:
        failed_attempts, last_failure_time, last_failure = 0, None, None
    failure_reason = last_failure.reason if last_failure else None
    failing_message = last_failure.message if last_failure else ""

    ready = s.not_ready is None
    if s.suspended:
        detail = f"valid until {_when(s.token.expires_at)}" if ready and s.token else "expired or missing"
        ready_cond = _condition(READY, ready, Reason.SUSPENDED, f"refreshing is suspended; the token is {detail}", s)
    elif ready:
        assert s.token is not None
        message = f"Secret {s.secret_name} holds a token valid until {_when(s.token.expires_at)}"
        if s.renewal_note is not None:
            message += f"; {s.renewal_note}"
        if failure_reason is not None:
            message += f"; the last refresh failed ({failure_reason}): {failing_message}"
            if s.retry_at is not None:
                message += f"; retrying at {_when(s.retry_at)}"
        ready_cond = _condition(READY, True, Reason.TOKEN_ISSUED, message, s)
    elif failure_reason is not None:
        ready_cond = _condition(READY, False, failure_reason, failing_message, s)
    else:
        reason_text = s.not_ready.message if s.not_ready else "issuing a token"
        ready_cond = _condition(READY, False, Reason.ISSUING, reason_text, s)

    stalled = failure_reason is not None and is_stalled(failure_reason) and not s.suspended
    stalled_cond = (
        _condition(STALLED, True, failure_reason, failing_message, s)
        if stalled and failure_reason is not None
        else _condition(STALLED, False, Reason.AS_EXPECTED, "", s)
    )
    if s.suspended or stalled:
        reconciling_cond = _condition(RECONCILING, False, Reason.UP_TO_DATE, "", s)
    elif s.retry_at is not None:
        reconciling_cond = _condition(
            RECONCILING, True, Reason.RETRYING, f"retrying at {_when(s.retry_at)} after {failure_reason}", s
        )
    elif not ready:
        reconciling_cond = _condition(RECONCILING, True, Reason.ISSUING, "issuing a token", s)
    else:
        reconciling_cond = _condition(RECONCILING, False, Reason.UP_TO_DATE, "", s)

    conditions = list(old.conditions)
    for condition in (ready_cond, reconciling_cond, stalled_cond):
        conditions = set_condition(conditions, condition)

    token = s.token
    return ClientCredentialStatus(
        observed_generation=s.generation,
        conditions=conditions,
        secret_name=s.secret_name,
        token_type=token.token_type if token else None,
        scope=token.scope if token else None,
        issued_at=token.issued_at if token else None,
        expires_at=token.expires_at if token else None,
        renewal_time=s.renewal_time if token else None,
        lifetime_source=LifetimeSource(token.lifetime_source) if token else None,
        failed_attempts=failed_attempts,
        last_failure_time=last_failure_time,
        last_failure=last_failure,
        last_refresh_request=s.last_refresh_request,
        pending_refresh_request=s.pending_refresh_request,
        last_rollout_restart=s.rollout or old.last_rollout_restart,
    )


def to_json(status: ClientCredentialStatus) -> dict[str, Any]:
    """Status as the API stores it: RFC 3339 times in whole seconds, no nulls."""
    data: dict[str, Any] = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    for key in ("issuedAt", "expiresAt", "renewalTime", "lastFailureTime"):
        if key in data:
            data[key] = _api_time(data[key])
    if "lastRolloutRestart" in data:
        data["lastRolloutRestart"]["time"] = _api_time(data["lastRolloutRestart"]["time"])
    for condition in data.get("conditions", []):
        condition["lastTransitionTime"] = _api_time(condition["lastTransitionTime"])
    return data


def _api_time(text: str) -> str:
    """A pydantic-dumped time as the API writes it (UTC, whole seconds, ``Z``)."""
    return rfc3339(datetime.fromisoformat(text.replace("Z", "+00:00")))


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch (RFC 7386) from ``old`` to ``new``, or None if they are equal.

    Nested objects are diffed too: a merge patch merges them, so a key that ``new`` drops
    (say ``lastFailure.httpStatus``) must be sent as null or the server keeps it.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = status_patch(before, value)
            if nested is not None:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch or None


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def transition_events(
    old: ClientCredentialStatus,
    new: ClientCredentialStatus,
    *,
    issued: bool,
    routine: bool = False,
    renewal_note: str | None = None,
) -> list[Event]:
    """Events for what changed this round: issued, refreshed, failed (on a new reason), recovered,
    and renewal settings clamped (once, when the note first appears).

    A ``routine`` refresh (the renewal time came, nothing else changed) posts no event: status
    and metrics show it, and an Event per refresh would cost an API write per token lifetime.
    """
    events: list[Event] = []
    old_ready = next((c.status for c in old.conditions if c.type == READY), None)
    old_reason = old.last_failure.reason if old.last_failure else None
    new_reason = new.last_failure.reason if new.last_failure else None
    if new_reason is not None and new.failed_attempts > old.failed_attempts and new_reason != old_reason:
        message = new.last_failure.message if new.last_failure else ""
        events.append(Event("Warning", str(new_reason), message))
    if issued and not (routine and old.issued_at is not None and old_ready == "True"):
        verb = "Refreshed" if old.issued_at is not None else "Issued"
        events.append(
            Event("Normal", verb, f"wrote a new token to Secret {new.secret_name}, valid until {_when(new.expires_at)}")
        )
    if old_reason is not None and new_reason is None:
        events.append(Event("Normal", "Recovered", f"recovered from {old_reason}"))
    new_ready = next((c for c in new.conditions if c.type == READY), None)
    failed_now = any(e.type == "Warning" for e in events)
    if old_ready == "True" and new_ready is not None and new_ready.status == "False" and not failed_now:
        events.append(Event("Warning", "NotReady", new_ready.message or str(new_ready.reason)))
    old_message = next((c.message for c in old.conditions if c.type == READY), "")
    new_message = new_ready.message if new_ready is not None else ""
    if renewal_note and renewal_note in new_message and renewal_note not in old_message:
        events.append(Event("Warning", "RenewalClamped", renewal_note))
    return events
