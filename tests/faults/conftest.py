"""The fault-injection suite: the real operator against a token endpoint and an API server that fail.

It runs on the integration harness (``tests/integration/conftest.py``: a fresh FakeCluster,
DevTokenServer and operator per test, every log line captured) and adds what fault tests need:
a record of every token the token server puts on the wire (``minted``, also the unusable ones
of its failure modes), invariants checked all through a test (``Always``), the requests each
side saw, and a leak check over logs, events and the resource.

Every test asserts the Secret, the status, the events and the number of requests sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets as std_secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest

import tokensync.dev.tokenserver
from tests.integration import conftest as harness
from tests.integration.conftest import (
    CC_GV,
    CLIENT_ID,
    CLIENT_SECRET,
    NAMESPACE,
    Api,
    LogCapture,
    OperatorRunner,
    assert_clean,
    cc_spec,
    eventually,
    free_port,
)
from tests.integration.observe import events_for, has_condition, has_event, last_failure
from tokensync.core import parse_rfc3339
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import PALISADE_TOKEN_PATH, DevTokenServer, RequestRecord

# The harness's fixtures, re-exported for this suite (a fresh cluster, token server and operator per test).
api = harness.api
cluster = harness.cluster
kubeconfig = harness.kubeconfig
logs = harness.logs
operator = harness.operator
seeded = harness.seeded
token_server = harness.token_server

__all__ = [
    "CC_GV",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "NAMESPACE",
    "Api",
    "LogCapture",
    "OperatorRunner",
    "cc_spec",
    "events_for",
    "eventually",
    "free_port",
    "has_condition",
    "has_event",
    "last_failure",
]

CREDENTIALS = "palisade-credentials"
#: The reasons a resource that cannot write its Secret may show.
SECRET_WRITE_FAILED = "SecretWriteFailed"


# Tokens on the wire ---------------------------------------------------------------------------


class TokenRecorder:
    """Stands in for the token server's ``secrets`` module: records every token it mints."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        token = std_secrets.token_urlsafe(nbytes)
        self.tokens.append(token)
        return token

    def __getattr__(self, name: str) -> Any:
        return getattr(std_secrets, name)


@pytest.fixture(autouse=True)
def minted(monkeypatch: pytest.MonkeyPatch) -> TokenRecorder:
    """Every token the token server sends, including the unusable ones of its failure modes."""
    recorder = TokenRecorder()
    monkeypatch.setattr(tokensync.dev.tokenserver, "secrets", recorder)
    return recorder


# The resource as a user sees it ---------------------------------------------------------------


def condition(api: Api, name: str, type_: str) -> dict[str, Any]:
    return api.condition(name, type_)


def is_ready(api: Api, name: str) -> bool:
    return has_condition(api, name, "Ready", "True")


def event_text(event: dict[str, Any]) -> str:
    return str(event.get("message") or event.get("note") or "")


def event_reasons(api: Api, name: str) -> Counter[tuple[str, str]]:
    return Counter((str(e.get("type")), str(e.get("reason"))) for e in events_for(api, name))


async def refresh(api: Api, name: str, value: str, *, timeout: float = 15.0) -> dict[str, Any]:
    """Ask for a refresh and wait until the operator has acted on it; returns the status then."""
    api.request_refresh(name, value)
    return dict(
        await eventually(
            lambda: api.status(name) if api.status(name).get("lastRefreshRequest") == value else None,
            timeout=timeout,
            message=f"refresh request {value!r} handled",
        )
    )


# The token in the Secret ----------------------------------------------------------------------


def secret_token(api: Api, name: str) -> str | None:
    return api.secret_data(name).get("accessToken")


def secret_expiry(api: Api, name: str) -> datetime | None:
    value = api.secret_data(name).get("expiresAt")
    return parse_rfc3339(value) if value else None


def status_expiry(api: Api, name: str) -> datetime | None:
    value = api.status(name).get("expiresAt")
    return parse_rfc3339(value) if value else None


def settled(api: Api, name: str, token: str | None = None) -> bool:
    """Ready, and the status describes the very token the Secret holds (``token`` if given)."""
    held = secret_token(api, name)
    if held is None or (token is not None and held != token) or not is_ready(api, name):
        return False
    expiry = secret_expiry(api, name)
    return expiry is not None and expiry == status_expiry(api, name) and expiry > datetime.now(UTC)


def honest(api: Api, name: str) -> str | None:
    """The invariant every fault must keep: ``Ready=True`` only while the Secret holds an unexpired
    token, and the status never claims a later expiry than the Secret's token has (None: kept)."""
    # The status first: a Secret read after it can only be as new as what it describes, or newer
    # (the operator writes the Secret before the status).
    status = api.status(name)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    if not ready:
        return None
    claimed = parse_rfc3339(status["expiresAt"]) if status.get("expiresAt") else None
    held = secret_expiry(api, name)
    now = datetime.now(UTC).timestamp()
    if held is None:
        return f"{name}: Ready=True without a token in the Secret"
    # 1 s of slack: a poll can land between the expiry and the round that turns Ready False.
    if held.timestamp() < now - 1.0:
        return f"{name}: Ready=True while the Secret's token expired {now - held.timestamp():.1f}s ago"
    if claimed is not None and claimed > held:
        return f"{name}: status claims expiry {claimed.isoformat()} but the Secret's token expires {held.isoformat()}"
    return None


class Always:
    """Checks an invariant every ``interval`` while a block runs; fails at the end with what broke.

    ``check`` returns None when all is well, else a description of the violation.
    """

    def __init__(self, check: Callable[[], str | None], *, interval: float = 0.05) -> None:
        self._check = check
        self._interval = interval
        self.violations: list[str] = []
        self.checks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            problem = self._check()
            self.checks += 1
            if problem is not None and len(self.violations) < 20:
                self.violations.append(f"{time.strftime('%H:%M:%S')} {problem}")
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> Always:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        problem = self._check()
        if problem is not None:
            self.violations.append(problem)
        if exc_type is None:
            assert self.violations == [], "\n".join(self.violations)


# Requests each side saw -----------------------------------------------------------------------


def exchanges(token_server: DevTokenServer) -> list[RequestRecord]:
    """The requests to the Palisade token endpoint, in the order they were answered."""
    return [r for r in token_server.requests if r.path == PALISADE_TOKEN_PATH]


def api_requests(cluster: FakeCluster, verb: str, resource: str, name: str | None = None) -> int:
    """Requests by verb and resource (of the object ``name`` in the test namespace, if given)."""
    if name is not None:
        return cluster.object_request_counts(NAMESPACE, name).get((verb, resource), 0)
    return cluster.request_counts().get((verb, resource), 0)


def operator_requests(cluster: FakeCluster) -> int:
    """All resource requests so far (the test itself reads from the stand-in's memory, not over HTTP)."""
    return sum(cluster.request_counts().values())


def backoff_ceiling(attempts: int, *, cap: float = 300.0) -> float:
    """The longest backoff after ``attempts`` consecutive failed exchanges: 5 s x 2^(n-1), capped."""
    return float(min(5.0 * 2 ** max(attempts - 1, 0), cap))


def api_retry_ceiling(elapsed: float) -> int:
    """The most attempts a round retried with the API backoff (1 s, doubling to 60 s) makes in ``elapsed`` s."""
    attempts, spent, delay = 1, 0.0, 1.0
    while spent + delay <= elapsed:
        spent += delay
        attempts += 1
        delay = min(delay * 2, 60.0)
    return attempts


# No secret anywhere ---------------------------------------------------------------------------


def spelled(*values: str) -> list[str]:
    """A value as it could leak: as is, and base64-encoded as in a Secret's data."""
    return [form for v in values if v for form in (v, base64.b64encode(v.encode()).decode())]


def assert_no_leaks(
    api: Api, logs: LogCapture, minted: TokenRecorder, *secrets: str, allow_errors: bool = False
) -> None:
    """No client secret and no token (any the server minted) in logs, events or any ClientCredential."""
    leakable = spelled(CLIENT_SECRET, *secrets, *minted.tokens)
    assert_clean(logs, *leakable, allow_errors=allow_errors)
    for event in api.events():
        text = json.dumps(event)
        assert not any(value in text for value in leakable), f"a secret or token in event {event.get('reason')}"
    for resource in api.cluster.list(CC_GV, "clientcredentials", NAMESPACE):
        for part in (resource.get("status"), resource["metadata"].get("annotations")):
            text = json.dumps(part)
            assert not any(value in text for value in leakable), f"a secret or token in {resource['metadata']['name']}"
