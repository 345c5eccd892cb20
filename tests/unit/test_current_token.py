"""Which token the Secret should hold: memory restores, a newer Secret wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokensync.core import StoredToken
from tokensync.reconciler import current_token

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def token(access: str, issued_minutes: int) -> StoredToken:
    issued = T0 + timedelta(minutes=issued_minutes)
    return StoredToken(access, "Bearer", "s", issued, issued + timedelta(hours=1), "fp")


OLD, NEW, FORGED = token("old", 0), token("new", 40), token("forged", 0)


@pytest.mark.parametrize(
    ("remembered", "stored", "expected"),
    [
        pytest.param(None, None, None, id="nothing anywhere is nothing"),
        pytest.param(None, OLD, OLD, id="after a restart the Secret's token is taken"),
        pytest.param(OLD, None, OLD, id="a deleted Secret is restored from memory"),
        pytest.param(OLD, FORGED, OLD, id="a tampered Secret of the same issue time is repaired from memory"),
        pytest.param(OLD, NEW, NEW, id="a newer token written by another replica wins over memory"),
        pytest.param(NEW, OLD, NEW, id="an older token in the Secret is replaced by the newer memory"),
    ],
)
def test_current_token(
    remembered: StoredToken | None, stored: StoredToken | None, expected: StoredToken | None
) -> None:
    assert current_token(remembered, stored) is expected
