"""The token exchange over httpx: two dialects, TLS, limits, error classification.

Every failure is an ``ExchangeError`` carrying a ``Reason`` (what status says),
the HTTP status and the endpoint's error code when there was one, a
``Retry-After`` when given, and a short message that never holds a secret::

    ExchangeError
    ├── HostNotAllowedError        the URL's host is not on the operator's allowlist
    ├── EndpointUnreachableError   connect error, TLS failure, timeout  → EndpointUnavailable
    ├── EndpointRejectedError      4xx: InvalidRequest, InvalidCredentials, Forbidden,
    │                              EndpointNotFound, RateLimited (+ 3xx: redirects are not followed)
    ├── EndpointFailedError        5xx                                   → EndpointUnavailable
    └── InvalidResponseError       200 that is not a token, or a body over the size cap

Each dialect is a pure ``build_*_request``/``parse_*_response`` pair; ``exchange()``
sends either one the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import ssl
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import certifi
import httpx
from pydantic import BaseModel, ValidationError

from . import __version__
from .models import (
    MAX_LIFETIME_SECONDS,
    ClientAuthentication,
    ClientCredentialSpec,
    LifetimeSource,
    OAuth2ErrorBody,
    OAuth2TokenResponse,
    PalisadeErrorBody,
    PalisadeTokenResponse,
    Provider,
    Reason,
    parse_duration,
    validation_summary,
)

USER_AGENT = f"tokensync/{__version__} (+https://tokensync.io)"
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 256
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=10.0)
#: The whole exchange, including a slow trickle of bytes that a read timeout would not catch.
DEFAULT_DEADLINE_SECONDS = 30.0
#: Retry-After values are capped here before any arithmetic (a day: far above any sane value).
MAX_RETRY_AFTER_SECONDS = 86400


@dataclass(frozen=True, repr=False)
class ClientCredentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a traceback
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret=<redacted>)"


@dataclass(frozen=True, repr=False)
class IssuedToken:
    """A token as either dialect returns it, normalised."""

    access_token: str
    token_type: str
    scope: str
    expires_in: int
    lifetime_source: LifetimeSource = LifetimeSource.EXPIRES_IN
    #: The absolute expiry when the token says it itself (a JWT's ``exp``, seconds since the epoch).
    expires_at_epoch: int | None = None

    def __repr__(self) -> str:
        return (
            f"IssuedToken(token_type={self.token_type!r}, scope={self.scope!r}, expires_in={self.expires_in}, "
            f"lifetime_source={self.lifetime_source.value})"
        )


# Errors --------------------------------------------------------------------------------------


class ExchangeError(Exception):
    """A failed exchange, classified. ``str()`` is safe to log and to put in status."""

    reason: Reason = Reason.ENDPOINT_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        http_status: int | None = None,
        code: int | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        self.message = _cap(message)
        if reason is not None:
            self.reason = reason
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after
        super().__init__(self.message)


class HostNotAllowedError(ExchangeError):
    reason = Reason.HOST_NOT_ALLOWED


class EndpointUnreachableError(ExchangeError):
    reason = Reason.ENDPOINT_UNAVAILABLE


class EndpointRejectedError(ExchangeError):
    reason = Reason.INVALID_REQUEST


class EndpointFailedError(ExchangeError):
    reason = Reason.ENDPOINT_UNAVAILABLE


class InvalidResponseError(ExchangeError):
    reason = Reason.INVALID_RESPONSE


#: 4xx statuses with a meaning of their own; any other 4xx is an InvalidRequest.
REJECTION_REASONS: dict[int, Reason] = {
    400: Reason.INVALID_REQUEST,
    401: Reason.INVALID_CREDENTIALS,
    403: Reason.FORBIDDEN,
    404: Reason.ENDPOINT_NOT_FOUND,
    405: Reason.ENDPOINT_NOT_FOUND,
    # Request Timeout and Too Early: the server asks for the same request again later.
    408: Reason.ENDPOINT_UNAVAILABLE,
    425: Reason.ENDPOINT_UNAVAILABLE,
    429: Reason.RATE_LIMITED,
}

#: Palisade's gRPC status ``code`` says more than the HTTP status (a gateway maps several codes to
#: one status). Codes not listed (0 OK, 2 UNKNOWN, 5 NOT_FOUND, 6 ALREADY_EXISTS) leave the HTTP
#: status to decide.
GRPC_CODE_REASONS: dict[int, Reason] = {
    1: Reason.ENDPOINT_UNAVAILABLE,  # CANCELLED
    3: Reason.INVALID_REQUEST,  # INVALID_ARGUMENT
    4: Reason.ENDPOINT_UNAVAILABLE,  # DEADLINE_EXCEEDED
    7: Reason.FORBIDDEN,  # PERMISSION_DENIED
    8: Reason.RATE_LIMITED,  # RESOURCE_EXHAUSTED
    9: Reason.INVALID_REQUEST,  # FAILED_PRECONDITION
    10: Reason.ENDPOINT_UNAVAILABLE,  # ABORTED
    11: Reason.INVALID_REQUEST,  # OUT_OF_RANGE
    12: Reason.ENDPOINT_NOT_FOUND,  # UNIMPLEMENTED
    13: Reason.ENDPOINT_UNAVAILABLE,  # INTERNAL
    14: Reason.ENDPOINT_UNAVAILABLE,  # UNAVAILABLE
    15: Reason.ENDPOINT_UNAVAILABLE,  # DATA_LOSS
    16: Reason.INVALID_CREDENTIALS,  # UNAUTHENTICATED
}

#: RFC 6749 §5.2 error codes that say more than the HTTP status does.
OAUTH2_ERROR_REASONS: dict[str, Reason] = {
    "invalid_client": Reason.INVALID_CREDENTIALS,
    "unauthorized_client": Reason.FORBIDDEN,
    "access_denied": Reason.FORBIDDEN,
    "invalid_request": Reason.INVALID_REQUEST,
    "invalid_grant": Reason.INVALID_REQUEST,
    "invalid_scope": Reason.INVALID_REQUEST,
    "unsupported_grant_type": Reason.INVALID_REQUEST,
}

_STATUS_HINTS: dict[Reason, str] = {
    Reason.INVALID_REQUEST: "the endpoint rejected the request",
    Reason.INVALID_CREDENTIALS: "the endpoint rejected the client credentials",
    Reason.FORBIDDEN: "the endpoint refused access (for Palisade, check the credential's IP allowlist)",
    Reason.ENDPOINT_NOT_FOUND: "the token URL was not found",
    Reason.RATE_LIMITED: "the endpoint is rate-limiting requests",
    Reason.ENDPOINT_UNAVAILABLE: "the endpoint asked for the request to be sent again later",
}


def _cap(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret from ``text`` (an endpoint may echo what it was sent)."""
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: one may contain another
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def secret_forms(credentials: ClientCredentials) -> tuple[str, ...]:
    """The client secret in every form a request carries it, so an echo of any is redacted:
    as is, JSON-escaped, form- and percent-encoded, and the Basic header's base64 of id:secret."""
    secret = credentials.client_secret
    if not secret:
        return ()
    pairs = (
        f"{credentials.client_id}:{secret}",
        f"{quote(credentials.client_id, safe='')}:{quote(secret, safe='')}",
        f"{quote_plus(credentials.client_id)}:{quote_plus(secret)}",
    )
    forms = {  # a set: the same form twice is redacted once (redact() orders them)
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
        *(base64.b64encode(pair.encode()).decode() for pair in pairs),
    }
    return tuple(forms)


def parse_retry_after(value: str | None) -> timedelta | None:
    """``Retry-After`` as delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Capped: a absurd value must not overflow timedelta (the policy caps it lower anyway).
        return timedelta(seconds=min(int(value), MAX_RETRY_AFTER_SECONDS))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = parsedate_to_datetime(value)
        return min(max(when - datetime.now(UTC), timedelta(0)), timedelta(seconds=MAX_RETRY_AFTER_SECONDS))
    return None


def host_allowed(url: str, allowed_hosts: Iterable[str]) -> bool:
    """The URL's host name must equal an allowed name exactly (any port; nothing is resolved)."""
    try:
        netloc = urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:  # e.g. an unbalanced "[" (the spec's validation reports it)
        return False
    # Not SplitResult.hostname: it lower-cases with str.lower() (see _ascii_lower).
    host = _ascii_lower(_netloc_host(netloc)).rstrip(".")
    return bool(host) and host in {_ascii_lower(h).rstrip(".") for h in allowed_hosts}


def _netloc_host(netloc: str) -> str:
    """The host of ``user@host:port`` without the user and port (an IPv6 literal without brackets)."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else ""
    return netloc.partition(":")[0]


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as DNS and the admission policy's CEL lowerAscii() do: Python's
    str.lower() would turn the Kelvin sign (U+212A) into "k" and let a look-alike host match."""
    return text.translate(_ASCII_LOWER)


# Dialects: pure request building and response parsing ----------------------------------------


@dataclass(frozen=True, repr=False)
class TokenRequest:
    url: str
    headers: dict[str, str]
    content: bytes
    #: Values that must never appear in a message built from the response.
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:  # the body and the Authorization header hold the client secret
        return f"TokenRequest(url={self.url!r}, headers=<{len(self.headers)} redacted>, content=<redacted>)"


def build_palisade_request(url: str, credentials: ClientCredentials) -> TokenRequest:
    body = json.dumps({"clientId": credentials.client_id, "clientSecret": credentials.client_secret})
    return TokenRequest(
        url=url,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        content=body.encode(),
        secrets=secret_forms(credentials),
    )


def build_oauth2_request(url: str, credentials: ClientCredentials, spec: ClientCredentialSpec) -> TokenRequest:
    form: dict[str, str] = {**spec.extra_params, "grant_type": "client_credentials"}
    if spec.scopes:
        form["scope"] = " ".join(spec.scopes)
    if spec.audience:
        form["audience"] = spec.audience
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if spec.client_authentication is ClientAuthentication.POST:
        form["client_id"] = credentials.client_id
        form["client_secret"] = credentials.client_secret
    else:
        # RFC 6749 §2.3.1: form-encode id and secret before the Basic encoding.
        pair = f"{quote(credentials.client_id, safe='')}:{quote(credentials.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return TokenRequest(url=url, headers=headers, content=urlencode(form).encode(), secrets=secret_forms(credentials))


def build_request(spec: ClientCredentialSpec, url: str, credentials: ClientCredentials) -> TokenRequest:
    if spec.provider is Provider.OAUTH2:
        return build_oauth2_request(url, credentials, spec)
    return build_palisade_request(url, credentials)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _describe_body(body: bytes, content_type: str) -> str:
    """A short, safe description of a body we could not use (never the body of a 200)."""
    if not body.strip():
        return "an empty body"
    if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
        return "an HTML page (a proxy or load balancer answered?)"
    return f"a body that is not the expected JSON ({content_type or 'no content type'})"


def jwt_expiry(token: str) -> int | None:
    """The ``exp`` claim of a JWT access token, or None when the token is not a JWT with one.

    Decoded only, never verified: tokensync does not hold the issuer's keys and does not need to
    trust the token, only to know when to replace it (a forged ``exp`` hurts no one but its holder).
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return int(exp)


def _missing_lifetime(parsed: OAuth2TokenResponse, default_lifetime: timedelta | None, now: datetime) -> IssuedToken:
    """An RFC 6749 answer without ``expires_in``: the JWT's ``exp``, else ``spec.defaultLifetime``."""
    exp = jwt_expiry(parsed.access_token)
    if exp is not None:
        remaining = exp - int(now.timestamp())
        if remaining <= 0:
            raise InvalidResponseError(
                "the endpoint answered 200 with a JWT access token whose exp claim has passed", http_status=200
            )
        if remaining > MAX_LIFETIME_SECONDS:
            raise InvalidResponseError("the JWT access token's exp claim is more than a year away", http_status=200)
        return IssuedToken(parsed.access_token, parsed.token_type, parsed.scope, remaining, LifetimeSource.JWT, exp)
    if default_lifetime is not None:
        seconds = int(default_lifetime.total_seconds())
        return IssuedToken(parsed.access_token, parsed.token_type, parsed.scope, seconds, LifetimeSource.DEFAULT)
    raise InvalidResponseError(
        "the endpoint answered 200 without expires_in, and the access token is not a JWT with an exp claim:"
        " set spec.defaultLifetime, or have the server send expires_in",
        http_status=200,
    )


def parse_success(
    provider: Provider, body: bytes, *, default_lifetime: timedelta | None = None, now: datetime | None = None
) -> IssuedToken:
    data = _json(body)
    if not isinstance(data, dict):
        raise InvalidResponseError("the endpoint answered 200 with a body that is not a JSON object", http_status=200)
    model: type[BaseModel] = OAuth2TokenResponse if provider is Provider.OAUTH2 else PalisadeTokenResponse
    problem: str | None = None
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problem = validation_summary(exc)
    if problem is not None:
        # Raised outside the except block: the ValidationError holds the token and must
        # not ride along as __context__.
        raise InvalidResponseError(f"the endpoint answered 200 without a usable token ({problem})", http_status=200)
    if isinstance(parsed, PalisadeTokenResponse):
        return IssuedToken(parsed.access_token, parsed.token_type, parsed.scope, parsed.expires_in)
    assert isinstance(parsed, OAuth2TokenResponse)
    if parsed.expires_in is None:
        return _missing_lifetime(parsed, default_lifetime, now or datetime.now(UTC))
    return IssuedToken(parsed.access_token, parsed.token_type, parsed.scope, parsed.expires_in)


def parse_failure(
    provider: Provider, status: int, headers: httpx.Headers, body: bytes, secrets: Iterable[str] = ()
) -> ExchangeError:
    """Classify a non-200 answer."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    content_type = headers.get("content-type", "")
    code: int | None = None
    detail: str | None = None
    oauth_reason: Reason | None = None
    data = _json(body)
    if isinstance(data, dict):
        with contextlib.suppress(ValidationError):
            if provider is Provider.OAUTH2:
                oauth = OAuth2ErrorBody.model_validate(data)
                oauth_reason = OAUTH2_ERROR_REASONS.get(oauth.error)
                detail = f"{oauth.error}: {oauth.error_description}".rstrip(": ")
            else:
                palisade = PalisadeErrorBody.model_validate(data)
                code, detail = palisade.code, palisade.message or None
    described = detail if detail is not None else _describe_body(body, content_type)
    described = redact(described, secrets)

    if 300 <= status < 400:
        location = urlsplit(headers.get("location", "")).hostname or "another location"
        return EndpointRejectedError(
            f"the token URL redirects ({status}) to {location}; redirects are not followed with credentials:"
            " set tokenURL to the final URL",
            reason=Reason.ENDPOINT_NOT_FOUND,
            http_status=status,
        )
    code_reason = GRPC_CODE_REASONS.get(code) if code is not None else None
    if 400 <= status < 500:
        reason = oauth_reason or code_reason or REJECTION_REASONS.get(status, Reason.INVALID_REQUEST)
        if status == 429:
            reason = Reason.RATE_LIMITED
        hint = _STATUS_HINTS.get(reason, "the endpoint rejected the request")
        return EndpointRejectedError(
            f"{hint} (HTTP {status}{_code_text(code)}): {described}",
            reason=reason,
            http_status=status,
            code=code,
            retry_after=retry_after,
        )
    if status >= 500:
        # A 5xx is the server's failure whatever its code says (a 503 with UNAUTHENTICATED is a
        # broken gateway, not a wrong secret); RESOURCE_EXHAUSTED is still worth its own reason.
        return EndpointFailedError(
            f"the endpoint failed (HTTP {status}{_code_text(code)}): {described}",
            reason=Reason.RATE_LIMITED if code_reason is Reason.RATE_LIMITED else None,
            http_status=status,
            code=code,
            retry_after=retry_after,
        )
    return InvalidResponseError(f"unexpected HTTP {status} from the endpoint: {described}", http_status=status)


def _code_text(code: int | None) -> str:
    return f", code {code}" if code is not None else ""


# TLS and clients -----------------------------------------------------------------------------


def _ca_fingerprint(ca_pem: str | None) -> str:
    return hashlib.sha256((ca_pem or "").encode()).hexdigest()


def ssl_context(ca_pem: str | None = None) -> ssl.SSLContext:
    """System (certifi) roots plus the extra PEM certificates. Verification is always on."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_pem:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise InvalidCABundleError("the CA bundle holds no valid PEM certificate") from exc
    return context


class InvalidCABundleError(ValueError):
    pass


class ClientPool:
    """One pooled ``httpx.AsyncClient`` per distinct CA bundle (TLS contexts are costly to build)."""

    def __init__(self, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, max_clients: int = 64) -> None:
        self._timeout = timeout
        self._max_clients = max_clients
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._retired: list[httpx.AsyncClient] = []

    def get(self, ca_pem: str | None) -> httpx.AsyncClient:
        key = _ca_fingerprint(ca_pem)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= self._max_clients:
                # Bounded: retire the oldest (it may still be in use; it is closed on shutdown).
                self._retired.append(self._clients.pop(next(iter(self._clients))))
            client = httpx.AsyncClient(
                verify=ssl_context(ca_pem),
                timeout=self._timeout,
                follow_redirects=False,  # never replay credentials to another location
                headers={"User-Agent": USER_AGENT},
                trust_env=False,  # no proxy or netrc credentials picked up from the environment
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.aclose()
        self._clients.clear()
        self._retired.clear()


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidResponseError(f"the response body exceeds {limit} bytes", http_status=response.status_code)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise InvalidResponseError(f"the response body exceeds {limit} bytes", http_status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_failure(exc: httpx.TransportError, url: str) -> EndpointUnreachableError:
    """A message for a transport error that names no secret (the request holds the credentials)."""
    host = urlsplit(url).netloc
    if isinstance(exc, httpx.TimeoutException):
        return EndpointUnreachableError(f"timed out talking to {host} ({type(exc).__name__})")
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return EndpointUnreachableError(f"TLS verification failed for {host}: add its CA with caBundleRef")
    return EndpointUnreachableError(f"cannot reach {host} ({type(exc).__name__})")


async def exchange(
    client: httpx.AsyncClient,
    spec: ClientCredentialSpec,
    url: str,
    credentials: ClientCredentials,
    *,
    allowed_hosts: Iterable[str],
    max_bytes: int = MAX_RESPONSE_BYTES,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
) -> IssuedToken:
    """One exchange of client credentials for a token. Raises ``ExchangeError`` on any failure."""
    if not host_allowed(url, allowed_hosts):
        host = urlsplit(url).hostname or url
        raise HostNotAllowedError(f"token host {host!r} is not in the operator's allowlist (--allowed-token-host)")
    if urlsplit(url).scheme != "https":
        raise ExchangeError("tokenURL must use https", reason=Reason.INVALID_SPEC)
    request = build_request(spec, url, credentials)
    failure: ExchangeError | None = None
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(
                "POST", url, headers=request.headers, content=request.content, follow_redirects=False
            ) as response:
                body = await _read_capped(response, max_bytes)
    except TimeoutError:
        failure = EndpointUnreachableError(f"the exchange with {urlsplit(url).netloc} took longer than {deadline:g}s")
    except httpx.DecodingError:
        failure = InvalidResponseError(
            "the endpoint's response body could not be decoded (a broken Content-Encoding such as gzip)"
        )
    except httpx.TransportError as exc:
        failure = _transport_failure(exc, url)
    except (httpx.HTTPError, httpx.StreamError) as exc:  # any other httpx failure
        failure = EndpointUnreachableError(f"the exchange with {urlsplit(url).netloc} failed ({type(exc).__name__})")
    except (httpx.InvalidURL, UnicodeError) as exc:
        failure = ExchangeError(f"tokenURL is not a valid URL ({type(exc).__name__})", reason=Reason.INVALID_SPEC)
    if failure is not None:
        # Raised outside the except block: httpx's error holds the request, credentials included.
        raise failure
    if response.status_code == 200:
        default = parse_duration(spec.default_lifetime) if spec.default_lifetime else None
        return parse_success(spec.provider, body, default_lifetime=default)
    raise parse_failure(spec.provider, response.status_code, response.headers, body, request.secrets)
