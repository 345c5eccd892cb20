"""A Palisade-compatible OAuth token server for tests and the demo.

Serves Palisade's seed API (``POST /v2/credentials/oauth/token``, JSON) and a plain RFC 6749
client-credentials endpoint (``POST /oauth2/token``, form-encoded) over HTTPS with a throwaway
``trustme`` CA. Failure modes can be switched at runtime from any thread to exercise clients
(``fail(mode, ...)``, see ``FAILURE_MODES``): error statuses (``unavailable``, ``rate-limited``,
``error`` with any status and Palisade gRPC code, ...), bodies that are not a token (``not-json``,
``huge``, ``truncated``, ``not-utf8``, ``wrong-shape``, ``gzip-broken``, ``expires-in`` with any raw
value, or ``raw`` status/headers/body), and time (``slow``, ``hang``, ``trickle``). TLS failures
come from a server built with ``certificate=`` ``"unknown-ca"``, ``"wrong-host"``, ``"expired"``
or ``"not-yet-valid"``: its ``ca_pem`` is then a CA the client trusts, but the certificate served
does not verify against it.

Secrets and tokens are never logged: only the client id, path and status are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import hmac
import json
import logging
import secrets
import shutil
import signal
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

__all__ = [
    "CERTIFICATE_KINDS",
    "FAILURE_MODES",
    "OAUTH2_TOKEN_PATH",
    "PALISADE_TOKEN_PATH",
    "REDIRECT_PREFIX",
    "DevTokenServer",
    "RequestRecord",
    "parse_credential",
    "serve_forever",
]

_log = logging.getLogger(__name__)

PALISADE_TOKEN_PATH: Final = "/v2/credentials/oauth/token"
OAUTH2_TOKEN_PATH: Final = "/oauth2/token"
# The "redirect" failure points here; the target always answers normally, so tests can tell
# from `requests` whether a client followed the redirect (and re-sent its credentials).
REDIRECT_PREFIX: Final = "/moved"

FAILURE_MODES: Final = (
    "unavailable",
    "html-error",
    "rate-limited",
    "slow",
    "not-json",
    "missing-fields",
    "unauthorized",
    "forbidden",
    "empty",
    "redirect",
    # Accepts the request and never answers until fail() is called again or the server stops.
    "hang",
    # 200 with headers at once, then the (token) body one byte per `interval` seconds.
    "trickle",
    # A 200 body over 1 MiB (chunked, no Content-Length).
    "huge",
    # A Content-Length larger than the body sent, then the connection is closed.
    "truncated",
    # 200, application/json, with bytes that are not UTF-8.
    "not-utf8",
    # 200 with a JSON array instead of the token object.
    "wrong-shape",
    # Content-Encoding: gzip with a body that is not gzip.
    "gzip-broken",
    # A token whose expiresIn (expires_in) is the raw `expires_in` value: 0, -5, 3.5, "3600", ...
    "expires-in",
    # Any `status` with a Palisade error body carrying gRPC `code` (default: as grpc-gateway maps it).
    "error",
    # 400 with gRPC code 16 UNAUTHENTICATED, as Palisade answers a bad secret behind some gateways.
    "unauthenticated-grpc",
    # 429 without a Retry-After header.
    "rate-limited-no-retry-after",
    # Exactly `status`, `headers` and `body` as given.
    "raw",
)

#: What certificate the server presents (``DevTokenServer(certificate=...)``); all but "valid"
#: fail verification against the server's own ``ca_pem``.
CERTIFICATE_KINDS: Final = ("valid", "unknown-ca", "wrong-host", "expired", "not-yet-valid")

DEFAULT_CREDENTIALS: Final[Mapping[str, str]] = {"demo-client": "demo-secret"}
CA_FILENAME: Final = "ca.pem"

# How long stop() waits for in-flight requests (e.g. in "slow" mode) before cancelling them.
_SHUTDOWN_TIMEOUT: Final = 0.5
# How often a held request ("hang") looks at the failure mode and at its client's connection.
_HANG_POLL: Final = 0.05
# "huge": how big the body is, and the chunks it is sent in.
HUGE_BODY_BYTES: Final = 1024 * 1024 + 512 * 1024
_HUGE_CHUNK: Final = 64 * 1024
# "The server's lifetime" where a failure mode's body carries an expiresIn.
_LIFETIME: Final = object()
# nginx's status for a request whose client went away before the answer (recorded, never sent).
CLIENT_CLOSED_REQUEST: Final = 499

_Dialect = Literal["palisade", "oauth2"]
_ENDPOINTS: Final[Mapping[str, _Dialect]] = {
    PALISADE_TOKEN_PATH: "palisade",
    OAUTH2_TOKEN_PATH: "oauth2",
}

# HTTP status -> (gRPC code, gRPC status name), as grpc-gateway maps them.
_GRPC_CODES: Final[Mapping[int, tuple[int, str]]] = {
    400: (3, "INVALID_ARGUMENT"),
    401: (16, "UNAUTHENTICATED"),
    403: (7, "PERMISSION_DENIED"),
    404: (5, "NOT_FOUND"),
    405: (12, "UNIMPLEMENTED"),
    429: (8, "RESOURCE_EXHAUSTED"),
    500: (13, "INTERNAL"),
    503: (14, "UNAVAILABLE"),
}
_GRPC_UNKNOWN: Final = (2, "UNKNOWN")
_GRPC_NAMES: Final[Mapping[int, str]] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

# RFC 6749 error codes used for the same HTTP statuses on the oauth2 endpoint.
_OAUTH2_ERRORS: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    405: "invalid_request",
    429: "temporarily_unavailable",
    503: "temporarily_unavailable",
}

_NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_HTML_502: Final = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HTML_LOGIN: Final = (
    "<!DOCTYPE html>\n<html><head><title>Palisade - Sign in</title></head>\n"
    '<body><form method="post" action="/login"><input name="user"><input name="password" '
    'type="password"><button>Sign in</button></form></body></html>\n'
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. Never holds a secret or a token."""

    client_id: str | None
    status: int
    path: str
    at: float  # time.time() when the response was ready
    method: str = "POST"
    failure: str | None = None  # the failure mode that shaped the response, if any
    #: time.time() when the request arrived: [started, at] is when it was in flight.
    started: float = 0.0


@dataclass
class _Failure:
    mode: str
    remaining: int | None  # None: until changed
    retry_after: int | None  # None: no Retry-After header
    delay: float
    status: int | None = None
    code: int | None = None
    message: str | None = None
    expires_in: Any = 0
    body: bytes | None = None
    headers: Mapping[str, str] | None = None
    interval: float = 1.0
    #: Which fail() call set it: a "hang" holds its request until the next call.
    generation: int = 0


@dataclass
class _Outcome:
    response: web.StreamResponse
    client_id: str | None = None
    failure: str | None = None


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    # What asyncio.run() does on exit: leave no task pending when the loop closes.
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def parse_credential(spec: str) -> tuple[str, str]:
    """Parse ``CLIENT_ID:CLIENT_SECRET`` (the secret may contain colons) for the CLI."""
    client_id, sep, secret = spec.partition(":")
    if not sep or not client_id or not secret:
        raise ValueError("expected CLIENT_ID:CLIENT_SECRET")
    return client_id, secret


def _validate_credentials(credentials: Mapping[str, str]) -> dict[str, str]:
    result = dict(credentials)
    for client_id, secret in result.items():
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client ids must be non-empty strings")
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"the secret of client {client_id!r} must be a non-empty string")
    return result


def _validate_lifetime(lifetime: int) -> int:
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0:
        raise ValueError("lifetime must be a non-negative number of seconds")
    return lifetime


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")  # noqa: S104 - only compared, never bound here


def _url_host(host: str) -> str:
    # Wildcard binds are reached through loopback, which the certificate covers.
    if host in ("", "0.0.0.0"):  # noqa: S104
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]" if ":" in host else host


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def _palisade_error(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, code: int | None = None
) -> web.Response:
    if code is None:
        code, name = _GRPC_CODES.get(status, _GRPC_UNKNOWN)
    else:
        name = _GRPC_NAMES.get(code, "UNKNOWN")
    body = {
        "code": code,
        "message": message,
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": name}],
    }
    return _json(status, body, headers)


def _oauth2_error(status: int, description: str, headers: Mapping[str, str] | None = None) -> web.Response:
    error = _OAUTH2_ERRORS.get(status, "server_error")
    all_headers = dict(_NO_STORE)
    if status == 401:
        # RFC 6749 5.2: a 401 must tell the client which auth scheme to use.
        all_headers["WWW-Authenticate"] = 'Basic realm="tokensync-devserver"'
    all_headers.update(headers or {})
    return _json(status, {"error": error, "error_description": description}, all_headers)


def _error(dialect: _Dialect, status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    if dialect == "oauth2":
        return _oauth2_error(status, message, headers)
    return _palisade_error(status, message, headers)


def _peek_json_client_id(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    client_id = data.get("clientId") if isinstance(data, dict) else None
    return client_id if isinstance(client_id, str) else None


class _BadRequest(Exception):
    """A malformed oauth2 request; the message is safe to return and log."""


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest("the body is not valid form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _BadRequest(f"parameter {name!r} is repeated")  # RFC 6749 3.2
        form[name] = value
    return form


def _basic_auth(header: str) -> tuple[str, str]:
    """Client credentials from an RFC 6749 2.3.1 Basic header (each part form-urlencoded)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise _BadRequest("only Basic client authentication is supported")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _BadRequest("malformed Basic authorization header") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _BadRequest("malformed Basic authorization header")
    return unquote_plus(client_id), unquote_plus(secret)


class DevTokenServer:
    """A token server with switchable failure modes and test counters.

    Run it on its own thread (``start``/``stop`` or ``with``), which survives a kopf-driven
    main loop cancelling foreign tasks, or inside a running loop (``astart``/``astop``).
    All public attributes are safe to read and set from any thread.
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] = DEFAULT_CREDENTIALS,
        lifetime: int = 3600,
        scope: str = "balances:read",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        cert_dir: Path | None = None,
        extra_hosts: Sequence[str] = (),
        certificate: str = "valid",
    ) -> None:
        if certificate not in CERTIFICATE_KINDS:
            raise ValueError(
                f"unknown certificate kind {certificate!r}; expected one of {', '.join(CERTIFICATE_KINDS)}"
            )
        self._lock = threading.Lock()
        self._initial_credentials = _validate_credentials(credentials)
        self._initial_lifetime = _validate_lifetime(lifetime)
        self._initial_scope = scope
        self._credentials = dict(self._initial_credentials)
        self._lifetime = self._initial_lifetime
        self._scope = scope
        self._failure: _Failure | None = None
        self._issued = 0
        self._requests: list[RequestRecord] = []
        self._tokens: list[str] = []
        self._token_clients: dict[str, str] = {}
        self._generation = 0  # bumped by every fail() and reset(): releases "hang"
        self._inflight_count = 0
        self._peak_inflight = 0

        self.host = host
        self.tls = tls
        self.certificate = certificate
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Task[Any]] = set()  # touched only on the server's loop

        self._ssl_context: ssl.SSLContext | None = None
        self._ca_pem: bytes | None = None
        self._ca_path: Path | None = None
        if tls:
            self._setup_tls(cert_dir, extra_hosts)

    def _setup_tls(self, cert_dir: Path | None, extra_hosts: Sequence[str]) -> None:
        import trustme  # the `demo` extra; only needed when TLS is on

        names = ["localhost", "127.0.0.1", "::1"]
        for name in (self.host, *extra_hosts):
            if name and not _is_wildcard(name) and name not in names:
                names.append(name)
        ca = trustme.CA(organization_name="tokensync dev token server")
        now = datetime.datetime.now(datetime.UTC)
        if self.certificate == "unknown-ca":
            # Clients are told to trust `ca`; the certificate comes from a CA nobody trusts.
            leaf = trustme.CA(organization_name="an unknown CA").issue_cert(*names)
        elif self.certificate == "wrong-host":
            leaf = ca.issue_cert("wrong-host.invalid")
        elif self.certificate == "expired":
            leaf = ca.issue_cert(
                *names, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
            )
        elif self.certificate == "not-yet-valid":
            leaf = ca.issue_cert(
                *names, not_before=now + datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30)
            )
        else:
            leaf = ca.issue_cert(*names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        self._ssl_context = context
        self._ca_pem = bytes(ca.cert_pem.bytes())

        if cert_dir is None:
            cert_dir = Path(tempfile.mkdtemp(prefix="tokensync-devserver-"))
            # Keep the CA file for the object's lifetime so clients can load it after stop().
            weakref.finalize(self, shutil.rmtree, cert_dir, ignore_errors=True)
        else:
            cert_dir.mkdir(parents=True, exist_ok=True)
        self._ca_path = cert_dir / CA_FILENAME
        self._ca_path.write_bytes(self._ca_pem)

    # -- configuration, settable at runtime -------------------------------------------------

    @property
    def credentials(self) -> dict[str, str]:
        with self._lock:
            return dict(self._credentials)

    @credentials.setter
    def credentials(self, value: Mapping[str, str]) -> None:
        validated = _validate_credentials(value)
        with self._lock:
            self._credentials = validated

    @property
    def lifetime(self) -> int:
        with self._lock:
            return self._lifetime

    @lifetime.setter
    def lifetime(self, value: int) -> None:
        validated = _validate_lifetime(value)
        with self._lock:
            self._lifetime = validated

    @property
    def scope(self) -> str:
        with self._lock:
            return self._scope

    @scope.setter
    def scope(self, value: str) -> None:
        with self._lock:
            self._scope = value

    def fail(
        self,
        mode: str | None,
        *,
        times: int | None = None,
        retry_after: int | None = 5,
        delay: float = 5.0,
        status: int | None = None,
        code: int | None = None,
        message: str | None = None,
        expires_in: Any = 0,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        interval: float = 1.0,
    ) -> None:
        """Switch the token endpoints to a failure mode (None: normal), for the next `times` requests.

        Mode parameters: ``retry_after`` (rate-limited; None sends no Retry-After), ``delay`` (slow),
        ``interval`` (trickle: seconds per byte), ``expires_in`` (expires-in: any JSON value),
        ``status``/``code``/``message`` (error: the HTTP status, default 400, and the gRPC code,
        default as grpc-gateway maps the status), ``status``/``headers``/``body`` (raw: default 200,
        no headers, an empty body; ``headers`` are added to the answer of the error mode too).
        Any call releases the requests a "hang" holds (they are then answered in the new mode).
        """
        if mode is not None and mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; expected one of {', '.join(FAILURE_MODES)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if (retry_after is not None and retry_after < 0) or delay < 0 or interval < 0:
            raise ValueError("retry_after, delay and interval must not be negative")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status (100-599)")
        if mode == "expires-in":
            json.dumps(expires_in)  # must be a JSON value
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._generation += 1
            self._failure = (
                None
                if mode is None
                else _Failure(
                    mode,
                    times,
                    retry_after,
                    delay,
                    status=status,
                    code=code,
                    message=message,
                    expires_in=expires_in,
                    body=raw,
                    headers=dict(headers) if headers else None,
                    interval=interval,
                    generation=self._generation,
                )
            )

    @property
    def failure(self) -> str | None:
        """The active failure mode, or None."""
        with self._lock:
            return None if self._failure is None else self._failure.mode

    def _take_failure(self) -> _Failure | None:
        # Atomic so that `times=K` fails exactly K requests even when they race.
        with self._lock:
            failure = self._failure
            if failure is None:
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
            return dataclasses.replace(failure)

    # -- observations ----------------------------------------------------------------------

    @property
    def issued(self) -> int:
        with self._lock:
            return self._issued

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of all requests so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def tokens(self) -> list[str]:
        """A snapshot of the tokens issued so far, oldest first (memory only, never logged)."""
        with self._lock:
            return list(self._tokens)

    def client_of(self, token: str) -> str | None:
        """The client id a token was issued to (None: not issued here)."""
        with self._lock:
            return self._token_clients.get(token)

    @property
    def inflight(self) -> int:
        """Requests being handled right now (e.g. held by "hang" or "slow")."""
        with self._lock:
            return self._inflight_count

    @property
    def peak_inflight(self) -> int:
        """The most requests ever handled at once (since construction or reset())."""
        with self._lock:
            return self._peak_inflight

    def reset(self) -> None:
        """Back to the state right after construction: counters, failure mode and configuration."""
        with self._lock:
            self._credentials = dict(self._initial_credentials)
            self._lifetime = self._initial_lifetime
            self._scope = self._initial_scope
            self._failure = None
            self._generation += 1
            self._issued = 0
            self._requests.clear()
            self._tokens.clear()
            self._token_clients.clear()
            self._peak_inflight = self._inflight_count

    # -- TLS material and URLs -------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        if self._ca_pem is None:
            raise RuntimeError("TLS is disabled: there is no CA")
        return self._ca_pem

    @property
    def ca_path(self) -> Path:
        if self._ca_path is None:
            raise RuntimeError("TLS is disabled: there is no CA")
        return self._ca_path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this server's CA."""
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.base_url + PALISADE_TOKEN_PATH

    @property
    def oauth2_token_url(self) -> str:
        return self.base_url + OAUTH2_TOKEN_PATH

    # -- lifecycle in the caller's loop ----------------------------------------------------

    async def astart(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the server is already running")
        # access_log=None: aiohttp's access log is replaced by our own, which omits query strings.
        server = web.Server(self._handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host or None, self._requested_port, ssl_context=self._ssl_context)
            await site.start()
            address = runner.addresses[0]
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(address[1])
        _log.info("Dev token server listening on %s", self.base_url)

    async def astop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # Handlers parked in "slow" mode (possibly for clients long gone) would otherwise
            # delay shutdown or outlive the loop; a dev server can just drop them.
            inflight, self._inflight = set(self._inflight), set()
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.wait(inflight)
            await runner.cleanup()
            _log.info("Dev token server on %s stopped", self.base_url)
        self._port = None

    async def __aenter__(self) -> DevTokenServer:
        await self.astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    # -- lifecycle on a thread of its own --------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("the server is already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self.astart())
                except BaseException as exc:
                    errors.append(exc)
                    return
                finally:
                    started.set()
                loop.run_forever()
                loop.run_until_complete(self.astop())
            finally:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        thread = threading.Thread(target=run, name="tokensync-devserver", daemon=True)
        thread.start()
        started.wait()
        if errors:
            thread.join()
            raise errors[0]
        self._thread, self._thread_loop = thread, loop

    def stop(self) -> None:
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._thread_loop = None

    def __enter__(self) -> DevTokenServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.time()
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        with self._lock:
            self._inflight_count += 1
            self._peak_inflight = max(self._peak_inflight, self._inflight_count)
        try:
            outcome = await self._dispatch(request)
        finally:
            self._inflight.discard(task)
            with self._lock:
                self._inflight_count -= 1
        status = outcome.response.status
        record = RequestRecord(
            client_id=outcome.client_id,
            status=status,
            path=request.path,
            at=time.time(),
            method=request.method,
            failure=outcome.failure,
            started=started,
        )
        with self._lock:
            self._requests.append(record)
        # request.path has no query string, so nothing a client misplaced there gets logged.
        _log.info(
            "%s %s client_id=%r -> %d%s",
            request.method,
            request.path,
            outcome.client_id,
            status,
            f" (failure mode {outcome.failure})" if outcome.failure else "",
        )
        return outcome.response

    async def _dispatch(self, request: web.BaseRequest) -> _Outcome:
        path = request.path
        redirected = path.startswith(REDIRECT_PREFIX + "/")
        dialect = _ENDPOINTS.get(path.removeprefix(REDIRECT_PREFIX) if redirected else path)
        if dialect is None:
            return _Outcome(_palisade_error(404, f"no route for {path}"))
        if request.method != "POST":
            response = _error(dialect, 405, "method not allowed; use POST", {"Allow": "POST"})
            return _Outcome(response)

        body = await request.read()
        client_id = self._peek_client_id(dialect, request, body)
        failure = None if redirected else self._take_failure()
        if failure is not None:
            if failure.mode == "slow":
                await asyncio.sleep(failure.delay)
            elif failure.mode == "hang":
                if not await self._hang(request, failure):
                    # The client gave up: recorded as nginx records it; nobody reads an answer.
                    return _Outcome(web.Response(status=CLIENT_CLOSED_REQUEST), client_id, failure.mode)
            elif failure.mode in ("trickle", "huge", "truncated"):
                streamed = await self._streamed_failure(dialect, failure, request)
                return _Outcome(streamed, client_id, failure.mode)
            else:
                return _Outcome(self._failure_response(dialect, failure, request), client_id, failure.mode)

        outcome = self._palisade(request, body) if dialect == "palisade" else self._oauth2(request, body)
        outcome.failure = failure.mode if failure is not None else None
        return outcome

    async def _hang(self, request: web.BaseRequest, failure: _Failure) -> bool:
        """Hold a request until fail() is called again (True) or its client goes away (False)."""
        while True:
            with self._lock:
                if self._generation != failure.generation:
                    return True
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            await asyncio.sleep(_HANG_POLL)

    def _unusable_token(self, dialect: _Dialect, expires_in: Any = _LIFETIME) -> dict[str, Any]:
        """A token-shaped body for the failure modes: not counted as issued (no client can use it)."""
        token = secrets.token_urlsafe(32)
        lifetime = self.lifetime if expires_in is _LIFETIME else expires_in
        if dialect == "palisade":
            return {"accessToken": token, "scope": self.scope, "expiresIn": lifetime, "tokenType": "Bearer"}
        return {"access_token": token, "scope": self.scope, "expires_in": lifetime, "token_type": "Bearer"}

    async def _streamed_failure(
        self, dialect: _Dialect, failure: _Failure, request: web.BaseRequest
    ) -> web.StreamResponse:
        headers = {"Content-Type": "application/json", **_NO_STORE}
        response = web.StreamResponse(status=200, headers=headers)
        body = json.dumps(self._unusable_token(dialect)).encode()
        try:
            if failure.mode == "trickle":
                response.content_length = len(body)
                await response.prepare(request)
                for index in range(len(body)):
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    await response.write(body[index : index + 1])
                    if index < len(body) - 1:
                        await asyncio.sleep(failure.interval)
            elif failure.mode == "huge":
                # A token object with a padding field: valid JSON, just too big (no Content-Length).
                await response.prepare(request)
                await response.write(body[:-1] + b', "padding": "')
                sent = len(body)
                while sent < HUGE_BODY_BYTES:
                    await response.write(b"x" * _HUGE_CHUNK)
                    sent += _HUGE_CHUNK
                await response.write(b'"}')
            else:  # truncated: promise more than is sent, then hang up
                response.content_length = len(body) + 64
                response.force_close()
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                transport = request.transport
                if transport is not None:
                    transport.close()
        except ConnectionError:
            pass  # the client went away (as it should, for a huge body)
        return response

    @staticmethod
    def _peek_client_id(dialect: _Dialect, request: web.BaseRequest, body: bytes) -> str | None:
        if dialect == "palisade":
            return _peek_json_client_id(body)
        try:
            header = request.headers.get("Authorization")
            if header is not None:
                return _basic_auth(header)[0]
            return _parse_form(body).get("client_id")
        except _BadRequest:
            return None

    def _failure_response(self, dialect: _Dialect, failure: _Failure, request: web.BaseRequest) -> web.Response:
        mode = failure.mode
        if mode == "unavailable":
            return _error(dialect, 503, "the service is currently unavailable")
        if mode == "html-error":
            return web.Response(status=502, text=_HTML_502, content_type="text/html")
        if mode == "rate-limited":
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
            return _error(dialect, 429, "too many requests; retry later", headers)
        if mode == "not-json":
            return web.Response(status=200, text=_HTML_LOGIN, content_type="text/html")
        if mode == "missing-fields":
            # A token without its lifetime: deliberately not counted as issued.
            token = secrets.token_urlsafe(32)
            if dialect == "palisade":
                body = {"accessToken": token, "scope": self.scope, "tokenType": "Bearer"}
            else:
                body = {"access_token": token, "scope": self.scope, "token_type": "Bearer"}
            return _json(200, body, _NO_STORE)
        if mode == "unauthorized":
            return _error(dialect, 401, "invalid client credentials")
        if mode == "forbidden":
            message = f"access denied: source IP {request.remote} is not on the allowlist for this client"
            return _error(dialect, 403, message)
        if mode == "empty":
            return web.Response(status=500)
        if mode == "redirect":
            location = request.url.with_path(REDIRECT_PREFIX + request.path)
            return web.Response(status=307, headers={"Location": str(location)})
        if mode == "rate-limited-no-retry-after":
            return _error(dialect, 429, "too many requests; retry later")
        if mode == "not-utf8":
            # Valid JSON syntax around bytes that are not UTF-8 ("\xc3\x28" is an invalid sequence).
            text = json.dumps(self._unusable_token(dialect)).encode()
            return web.Response(
                status=200,
                body=text.replace(b'", ', b'\xc3\x28", ', 1),
                headers={"Content-Type": "application/json", **_NO_STORE},
            )
        if mode == "wrong-shape":
            return web.Response(
                status=200, text=json.dumps([self._unusable_token(dialect)]), content_type="application/json"
            )
        if mode == "gzip-broken":
            text = json.dumps(self._unusable_token(dialect)).encode()
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **_NO_STORE}
            return web.Response(status=200, body=text, headers=headers)
        if mode == "expires-in":
            return _json(200, self._unusable_token(dialect, failure.expires_in), _NO_STORE)
        if mode == "unauthenticated-grpc":
            message = failure.message or "request had invalid authentication credentials"
            return _palisade_error(400, message, failure.headers, code=16)
        if mode == "error":
            status = failure.status or 400
            message = failure.message or f"injected error (HTTP {status})"
            if dialect == "oauth2" and failure.code is None:
                return _oauth2_error(status, message, failure.headers)
            return _palisade_error(status, message, failure.headers, code=failure.code)
        if mode == "raw":
            return web.Response(status=failure.status or 200, body=failure.body or b"", headers=failure.headers)
        raise AssertionError(f"unhandled failure mode {mode!r}")

    def _authenticate(self, client_id: str, secret: str) -> bool:
        expected = self.credentials.get(client_id)
        # Compare even for unknown clients so timing does not reveal which ids exist.
        matches = hmac.compare_digest((expected or "").encode(), secret.encode())
        return expected is not None and matches

    def _issue(self, client_id: str) -> tuple[str, int, str]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued += 1
            self._tokens.append(token)
            self._token_clients[token] = client_id
            return token, self._lifetime, self._scope

    def _palisade(self, request: web.BaseRequest, body: bytes) -> _Outcome:
        if request.content_type != "application/json":
            return _Outcome(_palisade_error(400, "Content-Type must be application/json"))
        try:
            data = json.loads(body)
        except ValueError:
            return _Outcome(_palisade_error(400, "the request body is not valid JSON"))
        if not isinstance(data, dict):
            return _Outcome(_palisade_error(400, "the request body must be a JSON object"))
        client_id, secret = data.get("clientId"), data.get("clientSecret")
        if not isinstance(client_id, str) or not client_id:
            return _Outcome(_palisade_error(400, "clientId is required and must be a non-empty string"))
        if not isinstance(secret, str) or not secret:
            message = "clientSecret is required and must be a non-empty string"
            return _Outcome(_palisade_error(400, message), client_id)
        if not self._authenticate(client_id, secret):
            return _Outcome(_palisade_error(401, "invalid client credentials"), client_id)
        token, lifetime, scope = self._issue(client_id)
        response = {"accessToken": token, "scope": scope, "expiresIn": lifetime, "tokenType": "Bearer"}
        return _Outcome(_json(200, response, _NO_STORE), client_id)

    def _oauth2(self, request: web.BaseRequest, body: bytes) -> _Outcome:
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise _BadRequest("Content-Type must be application/x-www-form-urlencoded")
            form = _parse_form(body)
            header = request.headers.get("Authorization")
            if header is not None:
                if "client_secret" in form:
                    raise _BadRequest("use only one client authentication method")  # RFC 6749 2.3
                client_id, secret = _basic_auth(header)
            else:
                client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            grant_type = form.get("grant_type")
            if not grant_type:
                raise _BadRequest("grant_type is required")
        except _BadRequest as exc:
            return _Outcome(_oauth2_error(400, str(exc)))

        if not client_id or not self._authenticate(client_id, secret):
            return _Outcome(_oauth2_error(401, "client authentication failed"), client_id or None)
        if grant_type != "client_credentials":
            response = _json(
                400,
                {"error": "unsupported_grant_type", "error_description": "only client_credentials"},
                _NO_STORE,
            )
            return _Outcome(response, client_id)
        allowed = self.scope.split()
        requested = form.get("scope", "").split()
        if any(item not in allowed for item in requested):
            response = _json(400, {"error": "invalid_scope", "error_description": "scope not granted"}, _NO_STORE)
            return _Outcome(response, client_id)
        # `audience` is accepted and ignored: one server, one audience.
        token, lifetime, scope = self._issue(client_id)
        granted = " ".join(requested) if requested else scope
        result = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": granted}
        return _Outcome(_json(200, result, _NO_STORE), client_id)


def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    credentials: Mapping[str, str] = DEFAULT_CREDENTIALS,
    lifetime: int = 3600,
    scope: str = "balances:read",
    tls: bool = True,
    cert_dir: Path | None = None,
    failure: str | None = None,
    retry_after: int = 5,
    delay: float = 5.0,
    extra_hosts: Sequence[str] = (),
) -> None:
    """Run a dev token server until SIGINT/SIGTERM; print its URLs and CA path on startup."""
    server = DevTokenServer(
        credentials=credentials,
        lifetime=lifetime,
        scope=scope,
        host=host,
        port=port,
        tls=tls,
        cert_dir=cert_dir,
        extra_hosts=extra_hosts,
    )
    server.fail(failure, retry_after=retry_after, delay=delay)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGTERM (e.g. from a container runtime) stops as cleanly as Ctrl-C does.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stopping.set)
        await server.astart()
        try:
            print(f"Palisade token URL: {server.token_url}", flush=True)
            print(f"OAuth2 token URL:   {server.oauth2_token_url}", flush=True)
            print(f"CA certificate:     {server.ca_path if tls else '(plain HTTP)'}", flush=True)
            print(f"Client ids:         {', '.join(sorted(server.credentials))}", flush=True)
            if failure:
                print(f"Failure mode:       {failure}", flush=True)
            await stopping.wait()
        finally:
            await server.astop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
