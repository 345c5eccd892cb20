"""Value types and time helpers that the pure core shares (renewal, status, issuing, rendering)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: the form Kubernetes itself writes."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return moment.astimezone(UTC)


@dataclass(frozen=True, repr=False, slots=True)
class StoredToken:
    """A token as the target Secret holds it."""

    access_token: str
    token_type: str
    scope: str
    issued_at: datetime
    expires_at: datetime
    #: ``fingerprint()`` of the inputs it was minted from.
    fingerprint: str
    #: Where its lifetime came from: ``expires_in``, a JWT ``exp`` claim, or ``spec.defaultLifetime``.
    lifetime_source: str = "ExpiresIn"

    def __repr__(self) -> str:
        return f"StoredToken(expires_at={self.expires_at.isoformat()}, fingerprint={self.fingerprint[:8]}…)"
