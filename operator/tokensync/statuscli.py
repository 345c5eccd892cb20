"""``tokensync status`` and ``tokensync refresh``: what they show, what they decide, how they ask.

The first part is pure (every moment is a parameter) and works on ClientCredentials as the API
returns them — plain dicts, read leniently, so a CLI older or newer than the operator still
shows what it can:

- :func:`overview` turns one object into an :class:`Overview` (the facts a row shows);
  :func:`table` and :func:`machine_readable` render them like ``kubectl get``;
- :func:`human_duration` is kubectl's own rounding of durations ("41m", "3h12m", "5d");
- :func:`refresh_verdict` and :func:`token_is_new` decide whether a refresh request was acted on.

The second part is the shell (the kubeconfig is read by ``kubeconfig.py``): the API calls
(:func:`fetch`, :func:`request_refresh`, :func:`wait_for_refresh`) through the
operator's own client. Nothing here reads a Secret's data: the Secret a token lives in is read
metadata-only, and only status fields are shown, so no secret or token can be printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import yaml

from . import models
from .core import parse_rfc3339, rfc3339
from .kubeapi import CLIENTCREDENTIALS, METADATA_ONE, SECRETS, JsonDict, KubeClient, KubeError
from .reconciler import REFRESH_ANNOTATION
from .secrets import ANNOTATION_ISSUED_AT

#: How ``kubectl get`` names the resource in messages.
RESOURCE_NAME = f"{models.PLURAL}.{models.GROUP}"
KIND_NAME = f"{models.SINGULAR}.{models.GROUP}"
#: What kubectl prints for an empty cell.
NONE = "<none>"
#: Columns, as ``kubectl get`` would head them.
COLUMNS = ("NAME", "READY", "REASON", "EXPIRES IN", "NEXT RENEWAL", "LAST FAILURE")
#: Wide: the last failure moves to the end, where its longer message pushes nothing aside.
WIDE_COLUMNS = (*COLUMNS[:-1], "SECRET", "EXPIRES AT", "RENEWAL AT", "FAILED ATTEMPTS", "LAST FAILURE")
#: The longest last-failure message a table shows (the whole message is in ``-o yaml|json``).
SHORT_MESSAGE = 48
WIDE_MESSAGE = 120
OUTPUT_FORMATS = ("table", "wide", "json", "yaml")


# Durations ------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A non-negative duration as ``kubectl get`` prints ages (apimachinery's ``HumanDuration``).

    Exact below two minutes ("95s"), then ever coarser: "7m30s", "41m", "3h12m", "20h", "3d4h", "45d", "2y30d".
    """
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def expires_in(expires_at: datetime | None, now: datetime) -> str:
    """ "41m" while the token is valid, "expired 3m ago" once it is not, ``<none>`` without one."""
    if expires_at is None:
        return NONE
    left = (expires_at - now).total_seconds()
    return human_duration(left) if left > 0 else f"expired {human_duration(-left)} ago"


def next_renewal(renewal_time: datetime | None, now: datetime, *, suspended: bool = False) -> str:
    """ "27m" until the planned refresh, "overdue 2m" past it (a refresh is being retried), "suspended"."""
    if suspended:
        return "suspended"
    if renewal_time is None:
        return NONE
    left = (renewal_time - now).total_seconds()
    return human_duration(left) if left > 0 else f"overdue {human_duration(-left)}"


# One object's facts ---------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def _text(value: Any) -> str:
    """One line of printable text: status is shown, never interpreted (no terminal escapes)."""
    if value is None:
        return ""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Overview:
    """What ``tokensync status`` says about one ClientCredential."""

    namespace: str
    name: str
    #: The Ready condition's status: "True", "False" or "Unknown" (no status yet).
    ready: str
    reason: str | None
    message: str
    secret_name: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    renewal_time: datetime | None
    suspended: bool
    failure_reason: str | None
    failure_message: str
    failed_attempts: int
    last_failure_time: datetime | None
    #: The status exactly as stored (never holds a secret or a token).
    status: JsonDict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def last_failure(self, limit: int = SHORT_MESSAGE) -> str:
        if self.failure_reason is None:
            return NONE
        if not self.failure_message:
            return self.failure_reason
        return f"{self.failure_reason}: {_shorten(self.failure_message, limit)}"


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return {}


def overview(obj: Mapping[str, Any]) -> Overview:
    """The facts about one ClientCredential (a dict as the API returns it)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    ready = _condition(status, "Ready")
    failure = status.get("lastFailure") if isinstance(status.get("lastFailure"), Mapping) else None
    attempts = status.get("failedAttempts")
    return Overview(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        ready=str(ready.get("status") or "Unknown"),
        reason=_text(ready.get("reason")) or None,
        message=_text(ready.get("message")),
        secret_name=_text(status.get("secretName")) or None,
        issued_at=_time(status.get("issuedAt")),
        expires_at=_time(status.get("expiresAt")),
        renewal_time=_time(status.get("renewalTime")),
        suspended=spec.get("suspend") is True,
        failure_reason=(_text(failure.get("reason")) or "Unknown") if failure is not None else None,
        failure_message=_text(failure.get("message")) if failure is not None else "",
        failed_attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
        last_failure_time=_time(status.get("lastFailureTime")),
        status=dict(status),
    )


def row(item: Overview, now: datetime, *, wide: bool = False, all_namespaces: bool = False) -> list[str]:
    """One table row, in the order of ``COLUMNS`` (``WIDE_COLUMNS``), NAMESPACE first with -A."""
    cells = [
        item.name,
        item.ready,
        item.reason or NONE,
        expires_in(item.expires_at, now),
        next_renewal(item.renewal_time, now, suspended=item.suspended),
    ]
    if wide:
        cells += [
            item.secret_name or NONE,
            rfc3339(item.expires_at) if item.expires_at else NONE,
            rfc3339(item.renewal_time) if item.renewal_time else NONE,
            str(item.failed_attempts),
        ]
    cells.append(item.last_failure(WIDE_MESSAGE if wide else SHORT_MESSAGE))
    return [item.namespace, *cells] if all_namespaces else cells


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl's tabwriter prints them."""
    lines = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def table(items: Sequence[Overview], now: datetime, *, wide: bool = False, all_namespaces: bool = False) -> str:
    headers = list(WIDE_COLUMNS if wide else COLUMNS)
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    return format_table(headers, (row(i, now, wide=wide, all_namespaces=all_namespaces) for i in items))


def _seconds_until(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else int((moment - now).total_seconds())


def as_dict(item: Overview, now: datetime) -> JsonDict:
    """The row's facts for scripts: times in RFC 3339, durations in whole seconds (negative: past)."""
    return {
        "namespace": item.namespace,
        "name": item.name,
        "ready": item.ready,
        "reason": item.reason,
        "message": item.message,
        "secretName": item.secret_name,
        "suspended": item.suspended,
        "issuedAt": rfc3339(item.issued_at) if item.issued_at else None,
        "expiresAt": rfc3339(item.expires_at) if item.expires_at else None,
        "expiresInSeconds": _seconds_until(item.expires_at, now),
        "renewalTime": rfc3339(item.renewal_time) if item.renewal_time else None,
        "renewalInSeconds": _seconds_until(item.renewal_time, now),
        "lastFailure": None
        if item.failure_reason is None
        else {
            "reason": item.failure_reason,
            "message": item.failure_message,
            "time": rfc3339(item.last_failure_time) if item.last_failure_time else None,
        },
        "failedAttempts": item.failed_attempts,
        "status": item.status,
    }


def machine_readable(items: Sequence[Overview], now: datetime, output: str) -> str:
    """``-o json`` or ``-o yaml``: always a list (of one with a NAME), so scripts need one shape."""
    data = [as_dict(i, now) for i in items]
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def render(
    objects: Sequence[Mapping[str, Any]], now: datetime, output: str = "table", *, all_namespaces: bool = False
) -> str:
    """What ``tokensync status`` prints for these objects (sorted by namespace and name)."""
    items = sorted((overview(o) for o in objects), key=lambda i: (i.namespace, i.name))
    if output in ("json", "yaml"):
        return machine_readable(items, now, output)
    return table(items, now, wide=output == "wide", all_namespaces=all_namespaces) + "\n"


def no_resources(namespace: str | None) -> str:
    return "No resources found." if namespace is None else f"No resources found in {namespace} namespace."


# Refresh requests -----------------------------------------------------------------------------


def request_value(now: datetime) -> str:
    """The annotation's value: RFC 3339 UTC with microseconds, so every call makes a new request."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def refresh_patch(value: str) -> JsonDict:
    """The JSON merge patch that asks for a refresh (it changes nothing else)."""
    return {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}}


@dataclass(frozen=True)
class Request:
    """A refresh asked of one ClientCredential."""

    namespace: str
    name: str
    value: str
    #: ``status.issuedAt`` when it was asked (a token issued later is new whatever the clocks say).
    previous_issued_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


class State(enum.Enum):
    WAITING = "waiting"  # not acted on yet
    ACTED = "acted"  # acted on: done once the Secret holds a token issued after the request
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Verdict:
    state: State
    message: str = ""


def refresh_verdict(obj: Mapping[str, Any] | None, request: Request) -> Verdict:
    """Whether the operator acted on ``request``, from the object as it is now (None: deleted).

    A later request that replaced ours (another ``refresh`` call) counts as ours: it too is
    fulfilled only by a token minted after it was made.
    """
    if obj is None:
        return Verdict(State.FAILED, "it was deleted while waiting")
    annotation = ((obj.get("metadata") or {}).get("annotations") or {}).get(REFRESH_ANNOTATION)
    wanted = {request.value} | ({annotation} if isinstance(annotation, str) and annotation else set())
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    if status.get("lastRefreshRequest") in wanted:
        return Verdict(State.ACTED)
    failure = status.get("lastFailure")
    if status.get("pendingRefreshRequest") in wanted and isinstance(failure, Mapping):
        reason = _text(failure.get("reason")) or "Unknown"
        message = _text(failure.get("message"))
        return Verdict(
            State.FAILED,
            f"the refresh failed: {reason}" + (f": {message}" if message else "") + " (tokensync keeps retrying it)",
        )
    if (obj.get("spec") or {}).get("suspend") is True:
        return Verdict(
            State.FAILED, "it is suspended (spec.suspend: true): the refresh happens only once it is resumed"
        )
    return Verdict(State.WAITING)


def token_is_new(request: Request, issued_at: datetime | None) -> bool:
    """Whether a token issued at ``issued_at`` was minted for ``request`` (issue times are whole seconds)."""
    if issued_at is None:
        return False
    if request.previous_issued_at is not None and issued_at > request.previous_issued_at:
        return True
    try:
        asked = parse_rfc3339(request.value).replace(microsecond=0)
    except ValueError:
        return False
    return issued_at >= asked


def waiting_summary(obj: Mapping[str, Any] | None) -> str:
    """What the resource says while a request is not acted on (for a timeout message)."""
    if obj is None:
        return "it does not exist"
    item = overview(obj)
    if item.ready == "Unknown" and not item.status:
        return "it has no status: is the operator running?"
    text = f"Ready={item.ready}" + (f" {item.reason}" if item.reason else "")
    if item.failure_reason is not None:
        text += f", last failure {item.last_failure(WIDE_MESSAGE)}"
    return text


# The shell: API calls ---------------------------------------------------------------------------


class NotFoundError(Exception):
    """The named ClientCredential does not exist; ``str()`` is kubectl's message."""

    def __init__(self, name: str) -> None:
        super().__init__(f'Error from server (NotFound): {RESOURCE_NAME} "{name}" not found')


def _not_served(exc: KubeError) -> KubeError:
    # A 404 on a list: the API server does not serve the resource at all.
    return KubeError(
        exc.status, "NotFound", f"the server doesn't have a resource type {models.PLURAL!r} (is the CRD installed?)"
    )


async def fetch(
    client: KubeClient, namespace: str | None, name: str | None = None, *, label_selector: str | None = None
) -> list[JsonDict]:
    """The named ClientCredential, or all of them (in ``namespace``; None: every namespace)."""
    if name is not None:
        assert namespace is not None
        obj = await client.get(CLIENTCREDENTIALS, namespace, name)
        if obj is None:
            raise NotFoundError(name)
        return [obj]
    try:
        items, _ = await client.list(CLIENTCREDENTIALS, namespace, label_selector=label_selector)
    except KubeError as exc:
        raise (_not_served(exc) if exc.not_found else exc) from None
    return items


async def request_refresh(
    client: KubeClient, targets: Sequence[tuple[str, str]], value: str, *, skip_missing: bool = False
) -> list[Request]:
    """Set the refresh annotation on each (namespace, name), one merge patch each.

    A target that does not exist is an error, or skipped with ``skip_missing`` (deleted since it was listed).
    """
    requests = []
    for namespace, name in targets:
        try:
            obj = await client.merge_patch(CLIENTCREDENTIALS, namespace, name, refresh_patch(value))
        except KubeError as exc:
            if not exc.not_found:
                raise
            if skip_missing:
                continue
            raise NotFoundError(name) from None
        requests.append(Request(namespace, name, value, _time((obj.get("status") or {}).get("issuedAt"))))
    return requests


async def issued_at(client: KubeClient, obj: Mapping[str, Any]) -> datetime | None:
    """When the token in the resource's Secret was issued: its annotation, read metadata-only.

    Without read access to Secrets, ``status.issuedAt`` (written once the Secret holds the token).
    """
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    secret_name = status.get("secretName")
    if secret_name:
        try:
            secret = await client.request("GET", SECRETS.path(meta.get("namespace"), secret_name), accept=METADATA_ONE)
        except KubeError as exc:
            if exc.status not in (401, 403):
                if exc.not_found:
                    return None
                raise
        else:
            return _time(((secret.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ISSUED_AT))
    return _time(status.get("issuedAt"))


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _transient(exc: KubeError) -> bool:
    return exc.status == 0 or exc.status == 429 or exc.status >= 500 or exc.gone


async def wait_for_refresh(
    client: KubeClient,
    namespace: str | None,
    requests: Sequence[Request],
    timeout: float,
    report: Callable[[Request, Verdict], None],
    *,
    watch_seconds: int = 10,
) -> dict[tuple[str, str], Verdict]:
    """Wait until each request is done or failed, or ``timeout`` seconds pass; ``report`` each outcome.

    A list, then a watch of the resources (in ``namespace``; None: all) until something changes;
    the list is repeated every ``watch_seconds`` and after any watch error, so no change is missed.
    """
    pending = {r.key: r for r in requests}
    results: dict[tuple[str, str], Verdict] = {}
    latest: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    async def settle(key: tuple[str, str], obj: Mapping[str, Any] | None) -> None:
        latest[key] = obj
        request = pending[key]
        verdict = refresh_verdict(obj, request)
        if verdict.state is State.ACTED:
            assert obj is not None
            when = await issued_at(client, obj)
            if not token_is_new(request, when):
                return  # acted on, but the Secret does not hold the new token yet (a write is retried)
            expires = _time((obj.get("status") or {}).get("expiresAt"))
            left = expires_in(expires, datetime.now(UTC))
            verdict = Verdict(
                State.DONE, f"a new token was issued at {rfc3339(when) if when else '?'}, expires in {left}"
            )
        if verdict.state in (State.DONE, State.FAILED):
            del pending[key]
            results[key] = verdict
            report(request, verdict)

    deadline = time.monotonic() + timeout
    try:
        async with asyncio.timeout(timeout):
            while pending:
                try:
                    items, version = await client.list(CLIENTCREDENTIALS, namespace)
                    found = {_key(o): o for o in items}
                    for key in list(pending):
                        await settle(key, found.get(key))
                    if not pending:
                        break
                    seconds = max(1, min(watch_seconds, int(deadline - time.monotonic()) + 1))
                    # An async generator: closed explicitly, so a break ends the stream at once.
                    events = cast(
                        AsyncGenerator[JsonDict, None],
                        client.watch(CLIENTCREDENTIALS, namespace, resource_version=version, timeout_seconds=seconds),
                    )
                    async with contextlib.aclosing(events):
                        async for event in events:
                            kind, obj = event.get("type"), event.get("object") or {}
                            if kind == "ERROR":
                                break  # e.g. 410 Gone: list again
                            if kind not in ("ADDED", "MODIFIED", "DELETED") or _key(obj) not in pending:
                                continue
                            await settle(_key(obj), None if kind == "DELETED" else obj)
                            if not pending:
                                break
                except KubeError as exc:
                    if not _transient(exc):
                        raise
                    await asyncio.sleep(1)
    except TimeoutError:
        for key, request in pending.items():
            verdict = Verdict(
                State.TIMED_OUT,
                f"timed out after {timeout:g}s waiting for a new token; {waiting_summary(latest.get(key))}",
            )
            results[key] = verdict
            report(request, verdict)
    return results
