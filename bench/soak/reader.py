"""The reader: lists every target Secret about once a second, as a workload mounting them would see them.

It reads the API stand-in over HTTP (one LIST of the Secrets labelled as tokensync's per poll) and
keeps, per ClientCredential, the token its Secret holds. From that it records:

- **lapses**: a Secret holding a token past its ``expiresAt``. A lapse starts at ``expiresAt`` and
  ends at the first poll that returned a fresh token (an upper bound: the resolution is one poll).
  A poll counts as seeing an expired token only if it was *sent* after ``expiresAt``, so a slow
  answer never makes a false one. A lapse no poll saw is still caught when the next token's
  ``issued-at`` (taken before its exchange was sent) is later than the old token's expiry.
- **lost** Secrets (one that was there and is gone, or was deleted and created again: a new uid)
  and **duplicated** ones (two Secrets naming the same owner);
- **regressions**: a Secret going back to a token that expires earlier than the one it held;
- the renewal cycles due while the soak runs: per resource, the integral of
  dt / (67 % x the lifetime of the token it holds) — what an ideal operator would spend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tokensync.secrets import ANNOTATION_ISSUED_AT, ANNOTATION_OWNER, MANAGED_BY_LABEL, MANAGED_BY_VALUE

from .. import kube
from ..kube import Api
from .config import RENEWAL_SHARE

#: The reader gives up (and the run fails) after this many failed LISTs in a row.
MAX_FAILED_POLLS_IN_A_ROW = 10
#: The reader fetches the ClientCredential's status for at most this many lapses (evidence).
MAX_STATUS_FETCHES = 200


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Token:
    key: str
    issued_at: float
    expires_at: float
    first_seen: float

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at


@dataclass
class Lapse:
    """A Secret holding an expired token."""

    key: str
    token: Token
    seen_at: float | None  # when a poll first saw it expired (None: inferred from the next token)
    ended_at: float | None = None  # the first poll with a fresh token; None while it lasts
    status: dict[str, Any] | None = None  # the ClientCredential's status when first seen

    @property
    def started_at(self) -> float:
        return self.token.expires_at


@dataclass
class _View:
    token: Token | None = None
    uid: str | None = None
    missing: bool = False
    lapse: Lapse | None = None


@dataclass
class Incident:
    key: str
    at: float
    what: str


@dataclass
class SecretReader:
    api: Api
    keys: frozenset[str]
    interval: float = 1.0
    tokens: list[Token] = field(default_factory=list)
    lapses: list[Lapse] = field(default_factory=list)
    lost: list[Incident] = field(default_factory=list)
    duplicated: list[Incident] = field(default_factory=list)
    regressions: list[Incident] = field(default_factory=list)
    strays: set[str] = field(default_factory=set)
    cycles_due: float = 0.0
    lifetimes_elapsed: float = 0.0
    polls: int = 0
    failed_polls: int = 0
    slowest_poll: float = 0.0  # seconds a LIST took, at most
    longest_gap: float = 0.0  # seconds between two polls, at most (in the window)
    error: BaseException | None = None
    _views: dict[str, _View] = field(default_factory=dict)
    _window: tuple[float, float] | None = None
    _last_sent: float | None = None
    _duplicate_seen: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # ----- control -----

    def start(self) -> None:
        self._views = {key: _View() for key in self.keys}
        self._thread = threading.Thread(target=self._run, name="soak-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def open_window(self, start: float, end: float) -> None:
        """Integrate renewal cycles due over [start, end] (the soak's chaos phase)."""
        with self._lock:
            self._window = (start, end)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the Secret reader failed: {self.error!r}") from self.error

    def holding_valid_tokens(self) -> int:
        now = time.time()
        with self._lock:
            return sum(1 for v in self._views.values() if v.token is not None and v.token.expires_at > now)

    def poll_now(self) -> None:
        """One poll from the calling thread (the final one, after the thread has stopped)."""
        self._poll()

    # ----- polling -----

    def _run(self) -> None:
        failures = 0
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    self._poll()
                    failures = 0
                except (httpx.HTTPError, kube.ApiError):
                    # One failed LIST is a gap in the record (see longest_gap), not the end of the run.
                    self.failed_polls += 1
                    failures += 1
                    if failures >= MAX_FAILED_POLLS_IN_A_ROW:
                        raise
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(next_at - time.monotonic())
        except BaseException as exc:
            self.error = exc

    def _poll(self) -> None:
        sent = time.time()
        listing = self.api.list_objects(
            kube.core_path("secrets"), labelSelector=f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        )
        received = time.time()
        by_owner: dict[str, list[Mapping[str, Any]]] = {}
        for secret in listing.get("items") or []:
            owner = _owner(secret)
            if owner in self.keys:
                by_owner.setdefault(owner, []).append(secret)
            else:
                self.strays.add(kube.object_key(secret))
        with self._lock:
            self.polls += 1
            self.slowest_poll = max(self.slowest_poll, received - sent)
            previous, self._last_sent = self._last_sent, sent
            for key, view in self._views.items():
                self._observe(key, view, by_owner.get(key, []), sent, received)
            if previous is not None:
                self._integrate(previous, sent)
        for lapse in self._lapses_needing_status():
            lapse.status = self._status(lapse.key)

    def _observe(self, key: str, view: _View, secrets: list[Mapping[str, Any]], sent: float, received: float) -> None:
        if len(secrets) > 1:
            names = tuple(sorted(kube.object_key(s) for s in secrets))
            if (key, names) not in self._duplicate_seen:
                self._duplicate_seen.add((key, names))
                self.duplicated.append(Incident(key, sent, f"{len(names)} Secrets: {', '.join(names)}"))
        if not secrets:
            if view.token is not None and not view.missing:
                view.missing = True
                self.lost.append(Incident(key, sent, "the Secret is gone"))
            return
        secret = _preferred(key, secrets)
        meta = secret.get("metadata") or {}
        uid = str(meta.get("uid"))
        if view.missing:
            view.missing = False
        elif view.uid is not None and uid != view.uid:
            self.lost.append(Incident(key, sent, "the Secret was deleted and created again (a new uid)"))
        view.uid = uid
        token = _token(key, secret, sent)
        if token is None:
            return
        old = view.token
        if old is None or (old.issued_at, old.expires_at) != (token.issued_at, token.expires_at):
            if old is not None:
                if token.expires_at < old.expires_at:
                    self.regressions.append(Incident(key, sent, "a token expiring earlier replaced the one held"))
                if view.lapse is not None:
                    view.lapse.ended_at = received
                    view.lapse = None
                elif old.expires_at < token.issued_at:  # expired between two polls, replaced before the next
                    self.lapses.append(Lapse(key, old, None, received))
            view.token = old = token
            self.tokens.append(token)
        if view.lapse is None and sent >= old.expires_at:
            view.lapse = Lapse(key, old, sent)
            self.lapses.append(view.lapse)

    def _integrate(self, previous: float, now: float) -> None:
        if self._window is None:
            return
        start, end = max(previous, self._window[0]), min(now, self._window[1])
        if end <= start:
            return
        self.longest_gap = max(self.longest_gap, now - previous)
        dt = end - start
        for view in self._views.values():
            if view.token is not None and not view.missing and view.token.lifetime > 0:
                self.cycles_due += dt / (RENEWAL_SHARE * view.token.lifetime)
                self.lifetimes_elapsed += dt / view.token.lifetime

    def _lapses_needing_status(self) -> list[Lapse]:
        with self._lock:
            fetched = sum(1 for lapse in self.lapses if lapse.status is not None)
            wanted = [lapse for lapse in self.lapses if lapse.status is None and lapse.seen_at is not None]
            return wanted[: max(0, MAX_STATUS_FETCHES - fetched)]

    def _status(self, key: str) -> dict[str, Any]:
        namespace, name = key.split("/", 1)
        obj = self.api.get(kube.cc_path(namespace, name)) or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def close_lapses(self, at: float) -> None:
        """Lapses still open when the run ends end then."""
        with self._lock:
            for view in self._views.values():
                if view.lapse is not None:
                    view.lapse.ended_at = at
                    view.lapse = None

    def snapshot_tokens(self) -> Iterable[Token]:
        with self._lock:
            return list(self.tokens)


def _owner(secret: Mapping[str, Any]) -> str:
    meta = secret.get("metadata") or {}
    owner = (meta.get("annotations") or {}).get(ANNOTATION_OWNER)
    if owner:
        return str(owner)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{meta.get('namespace', '')}/{ref.get('name')}"
    return ""


def _preferred(key: str, secrets: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Of several Secrets for one owner, the one named after it (the default target name)."""
    name = key.split("/", 1)[1]
    return next((s for s in secrets if (s.get("metadata") or {}).get("name") == name), secrets[0])


def _token(key: str, secret: Mapping[str, Any], seen: float) -> Token | None:
    expiry = kube.secret_expiry(secret)
    issued = ((secret.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ISSUED_AT)
    if expiry is None or issued is None:
        return None
    return Token(key, _epoch(issued), _epoch(expiry), seen)
