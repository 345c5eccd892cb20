"""The token exchange: both dialects on the wire, error classification, limits, TLS, leaks.

HTTP is faked with ``httpx.MockTransport`` (the real httpx client, a fake network); the one TLS
test serves a real HTTPS endpoint on 127.0.0.1 with a throwaway ``trustme`` CA.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote_plus

import httpx
import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from tokensync import exchange as exchange_module
from tokensync.exchange import (
    MAX_MESSAGE_CHARS,
    ClientCredentials,
    ClientPool,
    EndpointFailedError,
    EndpointRejectedError,
    EndpointUnreachableError,
    ExchangeError,
    HostNotAllowedError,
    InvalidCABundleError,
    InvalidResponseError,
    IssuedToken,
    build_oauth2_request,
    build_palisade_request,
    exchange,
    host_allowed,
    jwt_expiry,
    parse_success,
    ssl_context,
)
from tokensync.models import STALLED_REASONS, ClientCredentialSpec, LifetimeSource, Provider, Reason

CLIENT_ID = "client-1234"
SECRET = "s3cr3t-Zq9Kx7Wm"
TOKEN = "tok-ACCESS-7f3e9a1c55d0"
CREDS = ClientCredentials(CLIENT_ID, SECRET)

PALISADE_URL = "https://api.palisade.co/v2/credentials/oauth/token"
OAUTH2_URL = "https://auth.example.com/oauth2/token"
ALLOWED = ("api.palisade.co", "api.sandbox.palisade.co", "auth.example.com")

PALISADE = ClientCredentialSpec.model_validate({"credentialsRef": {"name": "creds"}})
PALISADE_OK = {"accessToken": TOKEN, "scope": "balances:read", "expiresIn": 3600, "tokenType": "Bearer"}
OAUTH2_OK = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600, "scope": "read write"}

SyncHandler = Callable[[httpx.Request], httpx.Response]
Handler = SyncHandler | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def oauth2(**fields: Any) -> ClientCredentialSpec:
    return ClientCredentialSpec.model_validate(
        {"provider": "oauth2", "tokenURL": OAUTH2_URL, "credentialsRef": {"name": "creds"}, **fields}
    )


OAUTH2 = oauth2()


class Recorder:
    """A MockTransport handler that remembers what it was sent."""

    def __init__(self, respond: SyncHandler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


def reply(status: int, body: Any = None, *, content_type: str | None = None, **headers: str) -> SyncHandler:
    """A handler answering with ``body``: bytes/str as is, anything else as JSON."""
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = json.dumps(body).encode()
        content_type = content_type or "application/json"
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type:
        hdrs["Content-Type"] = content_type
    return lambda _request: httpx.Response(status, headers=hdrs, content=content)


async def run(
    handler: Handler,
    *,
    spec: ClientCredentialSpec = PALISADE,
    url: str | None = None,
    credentials: ClientCredentials = CREDS,
    **kwargs: Any,
) -> IssuedToken:
    target = url or spec.effective_token_url() or PALISADE_URL
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await exchange(client, spec, target, credentials, allowed_hosts=ALLOWED, **kwargs)


async def failure(handler: Handler, **kwargs: Any) -> ExchangeError:
    with pytest.raises(ExchangeError) as info:
        await run(handler, **kwargs)
    return info.value


# The Palisade dialect: happy path ------------------------------------------------------------


async def test_palisade_exchange_sends_exactly_the_seed_request_and_returns_the_token() -> None:
    recorder = Recorder(reply(200, PALISADE_OK))
    token = await run(recorder)

    assert token == IssuedToken(access_token=TOKEN, token_type="Bearer", scope="balances:read", expires_in=3600)
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == PALISADE_URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert json.loads(request.content) == {"clientId": CLIENT_ID, "clientSecret": SECRET}
    assert "authorization" not in request.headers


async def test_palisade_exchange_ignores_unknown_response_fields() -> None:
    token = await run(reply(200, {**PALISADE_OK, "refreshToken": "x", "extra": {"a": 1}}))
    assert token.access_token == TOKEN
    assert token.expires_in == 3600


async def test_pooled_clients_name_tokensync_and_never_follow_redirects() -> None:
    pool = ClientPool()
    try:
        client = pool.get(None)
        assert client.headers["user-agent"].startswith("tokensync/")
        assert client.follow_redirects is False
        assert pool.get(None) is client, "one client per CA bundle"
    finally:
        await pool.aclose()


# Classification of non-200 answers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "error_type", "reason", "status", "code", "fragments"),
    [
        pytest.param(
            reply(400, {"code": 3, "message": "clientId is required"}),
            EndpointRejectedError,
            Reason.INVALID_REQUEST,
            400,
            3,
            ["rejected the request", "HTTP 400", "clientId is required"],
            id="400 is an invalid request",
        ),
        pytest.param(
            reply(401, {"code": 16, "message": "invalid client credentials", "details": [{"@type": "x"}]}),
            EndpointRejectedError,
            Reason.INVALID_CREDENTIALS,
            401,
            16,
            ["client credentials", "HTTP 401", "invalid client credentials"],
            id="401 is invalid credentials with the endpoint's code and message",
        ),
        pytest.param(
            reply(403, {"code": 7, "message": "request from 203.0.113.9 not allowed"}),
            EndpointRejectedError,
            Reason.FORBIDDEN,
            403,
            7,
            ["IP allowlist", "HTTP 403", "not allowed"],
            id="403 is forbidden and hints at the IP allowlist",
        ),
        pytest.param(
            reply(404, {"code": 5, "message": "not found"}),
            EndpointRejectedError,
            Reason.ENDPOINT_NOT_FOUND,
            404,
            5,
            ["token URL was not found", "HTTP 404"],
            id="404 is endpoint not found",
        ),
        pytest.param(
            reply(405),
            EndpointRejectedError,
            Reason.ENDPOINT_NOT_FOUND,
            405,
            None,
            ["HTTP 405", "empty body"],
            id="405 is endpoint not found too",
        ),
        pytest.param(
            reply(418, {"code": 9, "message": "teapot"}),
            EndpointRejectedError,
            Reason.INVALID_REQUEST,
            418,
            9,
            ["HTTP 418"],
            id="any other 4xx is an invalid request",
        ),
        pytest.param(
            reply(429, {"code": 8, "message": "quota exceeded"}, retry_after="120"),
            EndpointRejectedError,
            Reason.RATE_LIMITED,
            429,
            8,
            ["rate-limiting", "HTTP 429", "quota exceeded"],
            id="429 is rate limited",
        ),
        pytest.param(
            reply(500, {"code": 13, "message": "internal"}),
            EndpointFailedError,
            Reason.ENDPOINT_UNAVAILABLE,
            500,
            13,
            ["failed", "HTTP 500", "internal"],
            id="500 is endpoint unavailable",
        ),
        pytest.param(
            reply(502, "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>", content_type="text/html"),
            EndpointFailedError,
            Reason.ENDPOINT_UNAVAILABLE,
            502,
            None,
            ["HTTP 502", "HTML page"],
            id="502 from a proxy is endpoint unavailable",
        ),
        pytest.param(
            reply(503),
            EndpointFailedError,
            Reason.ENDPOINT_UNAVAILABLE,
            503,
            None,
            ["HTTP 503", "empty body"],
            id="503 with an empty body is endpoint unavailable",
        ),
        pytest.param(
            reply(201, PALISADE_OK),
            InvalidResponseError,
            Reason.INVALID_RESPONSE,
            201,
            None,
            ["unexpected HTTP 201"],
            id="a success other than 200 is an invalid response",
        ),
    ],
)
async def test_non_200_answers_are_classified(
    handler: Handler,
    error_type: type[ExchangeError],
    reason: Reason,
    status: int,
    code: int | None,
    fragments: list[str],
) -> None:
    error = await failure(handler)
    assert type(error) is error_type
    assert error.reason is reason
    assert error.http_status == status
    assert error.code == code
    for fragment in fragments:
        assert fragment in error.message
    assert str(error) == error.message


@pytest.mark.parametrize(
    ("handler", "described"),
    [
        pytest.param(
            reply(
                503,
                "<!DOCTYPE html><html><head><title>Service Unavailable</title></head>"
                "<body><p>upstream connect error or disconnect/reset before headers</p></body></html>",
                content_type="text/html; charset=utf-8",
            ),
            "an HTML page (a proxy or load balancer answered?)",
            id="an HTML error page is described, not quoted",
        ),
        pytest.param(
            reply(403, "  <html><body>Forbidden by WAF rule 942100</body></html>"),
            "an HTML page (a proxy or load balancer answered?)",
            id="HTML without a content type is recognised by its first character",
        ),
        pytest.param(reply(500, ""), "an empty body", id="an empty body says so"),
        pytest.param(reply(500, " \r\n "), "an empty body", id="a blank body counts as empty"),
        pytest.param(
            reply(502, "upstream connect error or disconnect/reset before headers", content_type="text/plain"),
            "a body that is not the expected JSON (text/plain)",
            id="a plain-text body is described with its content type",
        ),
        pytest.param(
            reply(400, {"error": "invalid_request"}),
            "a body that is not the expected JSON (application/json)",
            id="JSON in the wrong shape is described, not quoted",
        ),
        pytest.param(
            reply(400, b"\xff\xfe\x00garbage"),
            "a body that is not the expected JSON (no content type)",
            id="undecodable bytes are described without a content type",
        ),
    ],
)
async def test_unusable_error_bodies_get_a_short_clear_message(handler: Handler, described: str) -> None:
    error = await failure(handler)
    assert error.message.endswith(described)
    assert "<" not in error.message
    for noise in ("upstream", "WAF", "Service Unavailable", "garbage", "invalid_request"):
        assert noise not in error.message


async def test_a_huge_error_message_is_capped() -> None:
    error = await failure(reply(400, {"code": 3, "message": "x" * 10_000}))
    assert len(error.message) <= MAX_MESSAGE_CHARS
    assert error.message.endswith("…")


async def test_whitespace_in_error_messages_is_collapsed() -> None:
    error = await failure(reply(401, {"code": 16, "message": "bad\n\n   credentials\tgiven"}))
    assert error.message.endswith("bad credentials given")


# Retry-After ---------------------------------------------------------------------------------

FIXED_NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


class _FixedDatetime(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _FixedDatetime:
        return cls.fromtimestamp(FIXED_NOW.timestamp(), tz)


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange module computes HTTP-date Retry-After against a pinned clock."""
    monkeypatch.setattr(exchange_module, "datetime", _FixedDatetime)


@pytest.mark.parametrize(
    ("status", "retry_after", "seconds"),
    [
        pytest.param(429, "120", 120, id="delta seconds are parsed"),
        pytest.param(429, " 30 ", 30, id="delta seconds with spaces are parsed"),
        pytest.param(429, "0", 0, id="zero seconds are parsed"),
        pytest.param(429, "Tue, 01 Jan 2030 12:02:00 GMT", 120, id="an HTTP date is parsed relative to now"),
        pytest.param(429, "Tue, 01 Jan 2030 11:00:00 GMT", 0, id="an HTTP date in the past means now"),
        pytest.param(503, "5", 5, id="a 503 carries its Retry-After too"),
        pytest.param(429, "soon", None, id="an unparsable value is ignored"),
        pytest.param(429, "-5", None, id="a negative value is ignored"),
        pytest.param(429, "", None, id="an empty value is ignored"),
    ],
)
async def test_retry_after(fixed_now: None, status: int, retry_after: str, seconds: int | None) -> None:
    error = await failure(reply(status, {"code": 8, "message": "slow down"}, retry_after=retry_after))
    if seconds is None:
        assert error.retry_after is None
    else:
        assert error.retry_after is not None
        assert error.retry_after.total_seconds() == seconds


@pytest.mark.parametrize(
    "raw_header",
    [
        pytest.param(b"99999999999999", id="a huge delta-seconds value"),
        pytest.param(b"\xb2", id="a latin-1 superscript digit"),
    ],
)
async def test_a_broken_retry_after_header_still_gives_a_rate_limited_error(raw_header: bytes) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers=[(b"Retry-After", raw_header)], json={"code": 8, "message": "slow"})

    error = await failure(handler)
    assert error.reason is Reason.RATE_LIMITED


# Redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(status: int) -> None:
    recorder = Recorder(
        reply(status, location=f"https://login.palisade.co/v3/token?client_secret={SECRET}", content_type="text/html")
    )
    error = await failure(recorder)
    assert len(recorder.requests) == 1, "the credentials must not be replayed to another location"
    assert isinstance(error, EndpointRejectedError)
    assert error.reason is Reason.ENDPOINT_NOT_FOUND
    assert error.http_status == status
    assert "login.palisade.co" in error.message
    assert "set tokenURL to the final URL" in error.message
    assert SECRET not in error.message


async def test_a_redirect_without_location_still_explains_itself() -> None:
    error = await failure(reply(307))
    assert error.reason is Reason.ENDPOINT_NOT_FOUND
    assert "another location" in error.message


# 200 answers that are not a token ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param("not json at all", "not a JSON object", id="a non-JSON body"),
        pytest.param(f"access_token={TOKEN}&expires=3600", "not a JSON object", id="a form-encoded body"),
        pytest.param([PALISADE_OK], "not a JSON object", id="a JSON array"),
        pytest.param("", "not a JSON object", id="an empty body"),
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "accessToken"}, "accessToken", id="no accessToken"),
        pytest.param({**PALISADE_OK, "accessToken": ""}, "accessToken", id="an empty accessToken"),
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "tokenType"}, "tokenType", id="no tokenType"),
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "scope"}, "scope", id="no scope"),
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "expiresIn"}, "expiresIn", id="no expiresIn"),
        pytest.param({**PALISADE_OK, "expiresIn": 0}, "expiresIn", id="expiresIn zero"),
        pytest.param({**PALISADE_OK, "expiresIn": -60}, "expiresIn", id="expiresIn negative"),
        pytest.param({**PALISADE_OK, "expiresIn": 10**12}, "expiresIn", id="expiresIn absurdly large"),
        pytest.param({**PALISADE_OK, "expiresIn": "3600"}, "expiresIn", id="expiresIn as a string"),
        pytest.param({**PALISADE_OK, "expiresIn": True}, "expiresIn", id="expiresIn as a boolean"),
        pytest.param({**PALISADE_OK, "expiresIn": 3600.5}, "expiresIn", id="expiresIn as a float"),
        pytest.param({**PALISADE_OK, "expiresIn": None}, "expiresIn", id="expiresIn null"),
    ],
)
async def test_a_200_without_a_usable_token_is_an_invalid_response(body: Any, fragment: str) -> None:
    error = await failure(reply(200, body))
    assert isinstance(error, InvalidResponseError)
    assert error.reason is Reason.INVALID_RESPONSE
    assert error.http_status == 200
    assert fragment in error.message


@pytest.mark.parametrize(
    "streamed",
    [
        pytest.param(False, id="a declared Content-Length over the cap is refused"),
        pytest.param(True, id="a chunked body growing over the cap is cut off"),
    ],
)
async def test_a_body_over_the_size_cap_is_an_invalid_response(streamed: bool) -> None:
    big = json.dumps({**PALISADE_OK, "padding": "x" * 500}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 50):
            yield big[i : i + 50]

    def handler(_request: httpx.Request) -> httpx.Response:
        if streamed:
            return httpx.Response(200, content=chunks())
        return httpx.Response(200, content=big)

    error = await failure(handler, max_bytes=256)
    assert isinstance(error, InvalidResponseError)
    assert error.reason is Reason.INVALID_RESPONSE
    assert "exceeds 256 bytes" in error.message


async def test_a_body_under_the_size_cap_is_accepted() -> None:
    token = await run(reply(200, PALISADE_OK), max_bytes=256)
    assert token.access_token == TOKEN


# Transport failures --------------------------------------------------------------------------


def raising(exc_type: type[httpx.TransportError], text: str = "boom") -> SyncHandler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(text, request=request)

    return handler


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        pytest.param(raising(httpx.ConnectError), "cannot reach api.palisade.co", id="a connect error"),
        pytest.param(raising(httpx.RemoteProtocolError), "cannot reach api.palisade.co", id="a protocol error"),
        pytest.param(raising(httpx.ConnectTimeout), "timed out talking to api.palisade.co", id="a connect timeout"),
        pytest.param(raising(httpx.ReadTimeout), "timed out talking to api.palisade.co", id="a read timeout"),
        pytest.param(raising(httpx.PoolTimeout), "timed out", id="a pool timeout"),
    ],
)
async def test_transport_failures_are_endpoint_unavailable(handler: Handler, fragment: str) -> None:
    error = await failure(handler)
    assert isinstance(error, EndpointUnreachableError)
    assert error.reason is Reason.ENDPOINT_UNAVAILABLE
    assert error.http_status is None
    assert fragment in error.message


@pytest.mark.looptime
async def test_the_whole_exchange_has_a_deadline() -> None:
    async def never_answers(_request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)  # loop time (looptime), not the wall clock
        return httpx.Response(200, json=PALISADE_OK)

    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await failure(never_answers, deadline=7.0)
    assert loop.time() - started == pytest.approx(7.0)
    assert isinstance(error, EndpointUnreachableError)
    assert error.reason is Reason.ENDPOINT_UNAVAILABLE
    assert "took longer than 7s" in error.message


# The host allowlist --------------------------------------------------------------------------


async def test_a_host_not_in_the_allowlist_is_refused_before_any_request() -> None:
    recorder = Recorder(reply(200, PALISADE_OK))
    error = await failure(recorder, url="https://tokens.evil.example/v2/credentials/oauth/token")
    assert recorder.requests == []
    assert isinstance(error, HostNotAllowedError)
    assert error.reason is Reason.HOST_NOT_ALLOWED
    assert "tokens.evil.example" in error.message
    assert "allowlist" in error.message


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        pytest.param(PALISADE_URL, ["api.palisade.co"], True, id="the exact host name matches"),
        pytest.param("https://api.palisade.co:8443/t", ["api.palisade.co"], True, id="any port matches"),
        pytest.param("https://API.Palisade.CO/t", ["api.palisade.co"], True, id="the URL's case does not matter"),
        pytest.param(PALISADE_URL, ["API.PALISADE.CO"], True, id="the allowlist's case does not matter"),
        pytest.param("https://api.palisade.co./t", ["api.palisade.co"], True, id="a trailing root dot matches"),
        pytest.param("https://127.0.0.1:9443/t", ["127.0.0.1"], True, id="an IP address matches itself"),
        pytest.param("https://[::1]:9443/t", ["::1"], True, id="an IPv6 address matches itself"),
        pytest.param("https://evil-api.palisade.co/t", ["api.palisade.co"], False, id="a prefixed name does not match"),
        pytest.param("https://api.palisade.co.evil.com/t", ["api.palisade.co"], False, id="a suffixed name is refused"),
        pytest.param("https://x.api.palisade.co/t", ["api.palisade.co"], False, id="a subdomain does not match"),
        pytest.param("https://palisade.co/t", ["api.palisade.co"], False, id="the parent domain does not match"),
        pytest.param("https://api.palisade.co@evil.com/t", ["api.palisade.co"], False, id="userinfo is not the host"),
        pytest.param(
            "https://api.palisade.co:443@evil.com/t",
            ["api.palisade.co"],
            False,
            id="userinfo with a port is not a host",
        ),
        pytest.param("https://evil.com#@api.palisade.co", ["api.palisade.co"], False, id="a fragment is not the host"),
        pytest.param("https://evil.com/?h=api.palisade.co", ["api.palisade.co"], False, id="a query is not the host"),
        pytest.param("api.palisade.co/t", ["api.palisade.co"], False, id="a URL without a scheme has no host"),
        pytest.param("", ["api.palisade.co"], False, id="an empty URL is refused"),
        pytest.param(PALISADE_URL, [], False, id="an empty allowlist refuses everything"),
        pytest.param("https:///t", [""], False, id="an empty host never matches an empty entry"),
    ],
)
def test_host_allowed(url: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(url, allowed) is expected


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com\\@api.palisade.co/t",
        "https://api.palisade.co\\@evil.com/t",
        "https://api.palisade.co%2eevil.com/t",
        "https://evil.com%40api.palisade.co/t",
        "https://api.palisade.co:443@evil.com/t",
        "https://evil.com?@api.palisade.co/t",
        "https://API.palisade.co:8443/t",
    ],
)
def test_an_allowed_url_connects_to_the_host_that_was_checked(url: str) -> None:
    """No parser differential: whenever the allowlist says yes, httpx connects to that very host."""
    if host_allowed(url, ["api.palisade.co"]):
        assert httpx.URL(url).host == "api.palisade.co"
    else:
        assert httpx.URL(url).host != "api.palisade.co"


# The OAuth 2.0 dialect -----------------------------------------------------------------------


async def test_oauth2_basic_sends_a_form_with_scope_audience_and_extra_params() -> None:
    recorder = Recorder(reply(200, OAUTH2_OK))
    spec = oauth2(
        scopes=["balances:read", "wallets:write"],
        audience="https://api.example.com",
        extraParams={"resource": "urn:r1", "grant_type": "password"},
    )
    token = await run(recorder, spec=spec)

    assert token == IssuedToken(access_token=TOKEN, token_type="Bearer", scope="read write", expires_in=3600)
    [request] = recorder.requests
    assert str(request.url) == OAUTH2_URL
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode(), strict_parsing=True)
    assert form == {
        "grant_type": ["client_credentials"],  # extraParams cannot change the grant
        "scope": ["balances:read wallets:write"],
        "audience": ["https://api.example.com"],
        "resource": ["urn:r1"],
    }
    assert request.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        pytest.param("plain-id", "plain-secret", id="plain values survive the basic encoding"),
        pytest.param("id:with:colons", "p@ss:w+rd/ %=&é", id="reserved characters are form-encoded first"),
    ],
)
async def test_oauth2_basic_form_encodes_id_and_secret_before_base64(client_id: str, secret: str) -> None:
    recorder = Recorder(reply(200, OAUTH2_OK))
    await run(recorder, spec=OAUTH2, credentials=ClientCredentials(client_id, secret))
    [request] = recorder.requests

    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    pair = base64.b64decode(encoded, validate=True).decode()
    # RFC 6749 §2.3.1: the id cannot contain a raw colon, so the first colon splits the pair.
    raw_id, _, raw_secret = pair.partition(":")
    assert (unquote_plus(raw_id), unquote_plus(raw_secret)) == (client_id, secret)
    form = parse_qs(request.content.decode())
    assert "client_secret" not in form
    assert "client_id" not in form


async def test_oauth2_post_puts_the_credentials_in_the_form() -> None:
    recorder = Recorder(reply(200, OAUTH2_OK))
    secret = "p@ss+w rd&x=1"
    await run(recorder, spec=oauth2(clientAuthentication="post"), credentials=ClientCredentials(CLIENT_ID, secret))
    [request] = recorder.requests
    assert "authorization" not in request.headers
    assert parse_qs(request.content.decode(), strict_parsing=True) == {
        "grant_type": ["client_credentials"],
        "client_id": [CLIENT_ID],
        "client_secret": [secret],
    }


async def test_oauth2_without_scope_or_audience_sends_only_the_grant() -> None:
    recorder = Recorder(reply(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 60}))
    token = await run(recorder, spec=OAUTH2)
    assert token.scope == ""
    assert parse_qs(recorder.requests[0].content.decode()) == {"grant_type": ["client_credentials"]}


@pytest.mark.parametrize(
    ("status", "body", "reason", "fragment"),
    [
        pytest.param(
            401,
            {"error": "invalid_client", "error_description": "client authentication failed"},
            Reason.INVALID_CREDENTIALS,
            "invalid_client: client authentication failed",
            id="invalid_client is invalid credentials",
        ),
        pytest.param(
            400,
            {"error": "invalid_client"},
            Reason.INVALID_CREDENTIALS,
            "invalid_client",
            id="invalid_client on a 400 is still invalid credentials",
        ),
        pytest.param(
            400,
            {"error": "invalid_scope", "error_description": "scope wallets:write not granted"},
            Reason.INVALID_REQUEST,
            "invalid_scope: scope wallets:write not granted",
            id="invalid_scope is an invalid request",
        ),
        pytest.param(
            400,
            {"error": "unauthorized_client"},
            Reason.FORBIDDEN,
            "unauthorized_client",
            id="unauthorized_client is forbidden",
        ),
        pytest.param(
            400,
            {"error": "unsupported_grant_type"},
            Reason.INVALID_REQUEST,
            "unsupported_grant_type",
            id="unsupported_grant_type is an invalid request",
        ),
        pytest.param(
            429,
            {"error": "invalid_request", "error_description": "too many requests"},
            Reason.RATE_LIMITED,
            "too many requests",
            id="a 429 is rate limited whatever its error code",
        ),
        pytest.param(
            403,
            {"error": "something_new"},
            Reason.FORBIDDEN,
            "something_new",
            id="an unknown error code falls back to the HTTP status",
        ),
    ],
)
async def test_oauth2_error_bodies_are_classified(status: int, body: Any, reason: Reason, fragment: str) -> None:
    error = await failure(reply(status, body), spec=OAUTH2)
    assert isinstance(error, EndpointRejectedError)
    assert error.reason is reason
    assert error.http_status == status
    assert fragment in error.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(
            {"access_token": TOKEN, "token_type": "Bearer"}, "without expires_in", id="a 200 without expires_in"
        ),
        pytest.param({"token_type": "Bearer", "expires_in": 60}, "access_token", id="a 200 without access_token"),
        pytest.param({"access_token": TOKEN, "expires_in": 60}, "token_type", id="a 200 without token_type"),
        pytest.param({**OAUTH2_OK, "expires_in": 0}, "expires_in", id="a 200 with expires_in zero"),
    ],
)
async def test_oauth2_200_without_a_usable_token_is_an_invalid_response(body: Any, fragment: str) -> None:
    error = await failure(reply(200, body), spec=OAUTH2)
    assert isinstance(error, InvalidResponseError)
    assert error.reason is Reason.INVALID_RESPONSE
    assert fragment in error.message


# Nothing leaks -------------------------------------------------------------------------------


def echo_request_body(status: int) -> SyncHandler:
    """An endpoint that quotes the request it received in its error message."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"code": 3, "message": f"bad request: {request.content.decode()}"})

    return handler


def oauth2_echo(request: httpx.Request) -> httpx.Response:
    form = parse_qs(request.content.decode())
    return httpx.Response(
        400,
        json={"error": "invalid_client", "error_description": f"unknown secret {form['client_secret'][0]!r}"},
    )


LEAK_CASES = [
    pytest.param(
        reply(401, {"code": 16, "message": f"secret {SECRET} is wrong"}),
        PALISADE,
        id="a 401 that echoes the secret",
    ),
    pytest.param(echo_request_body(400), PALISADE, id="a 400 that echoes the whole request body"),
    pytest.param(echo_request_body(500), PALISADE, id="a 500 that echoes the whole request body"),
    pytest.param(
        reply(429, {"code": 8, "message": f"slow down, {CLIENT_ID}/{SECRET}"}, retry_after="1"),
        PALISADE,
        id="a 429 that echoes the secret",
    ),
    pytest.param(
        reply(502, f"<html><body>bad gateway for {SECRET}</body></html>", content_type="text/html"),
        PALISADE,
        id="an HTML page that contains the secret",
    ),
    pytest.param(
        reply(400, f"invalid secret {SECRET}", content_type="text/plain"),
        PALISADE,
        id="a plain-text body that contains the secret",
    ),
    pytest.param(
        reply(401, {"error": "invalid_client", "error_description": f"bad secret {SECRET}"}),
        OAUTH2,
        id="an oauth2 error that echoes the secret",
    ),
    pytest.param(oauth2_echo, oauth2(clientAuthentication="post"), id="an oauth2 error that echoes the posted secret"),
    pytest.param(
        reply(307, location=f"https://other.example/t?secret={SECRET}&token={TOKEN}"),
        PALISADE,
        id="a redirect whose location holds the secret",
    ),
    pytest.param(
        reply(200, {k: v for k, v in PALISADE_OK.items() if k != "expiresIn"}),
        PALISADE,
        id="a 200 whose token lacks expiresIn",
    ),
    pytest.param(reply(200, {**PALISADE_OK, "expiresIn": "3600"}), PALISADE, id="a 200 whose expiresIn is a string"),
    pytest.param(
        reply(200, {k: v for k, v in PALISADE_OK.items() if k != "tokenType"}),
        PALISADE,
        id="a 200 whose token lacks tokenType",
    ),
    pytest.param(reply(200, [PALISADE_OK]), PALISADE, id="a 200 whose token is wrapped in a list"),
    pytest.param(
        reply(200, f"access_token={TOKEN}&expires_in=3600", content_type="application/x-www-form-urlencoded"),
        PALISADE,
        id="a 200 with a form-encoded token",
    ),
    pytest.param(
        reply(200, {"access_token": TOKEN, "token_type": "Bearer"}), OAUTH2, id="an oauth2 200 without expires_in"
    ),
    pytest.param(reply(201, PALISADE_OK), PALISADE, id="a 201 that carries a token"),
    pytest.param(reply(200, {**PALISADE_OK, "padding": "x" * 2000}), PALISADE, id="a 200 over the size cap"),
    pytest.param(raising(httpx.ConnectError, f"refused {SECRET}"), PALISADE, id="a transport error naming the secret"),
]


def texts_of(error: ExchangeError) -> dict[str, str]:
    return {
        "str": str(error),
        "repr": repr(error),
        "message": error.message,
        "args": repr(error.args),
        "traceback": "".join(traceback.format_exception(error)),
    }


@pytest.mark.parametrize(("handler", "spec"), LEAK_CASES)
async def test_no_secret_or_token_in_any_failure(handler: Handler, spec: ClientCredentialSpec) -> None:
    error = await failure(handler, spec=spec, max_bytes=1024)
    for where, text in texts_of(error).items():
        assert SECRET not in text, f"the client secret leaked into {where}: {text}"
        assert TOKEN not in text, f"the access token leaked into {where}: {text}"


async def test_an_echoed_secret_is_replaced_not_dropped() -> None:
    error = await failure(reply(401, {"code": 16, "message": f"secret {SECRET} is wrong"}))
    assert error.message.endswith("secret <redacted> is wrong")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "expiresIn"}, id="a token without expiresIn"),
        pytest.param({k: v for k, v in PALISADE_OK.items() if k != "tokenType"}, id="a token without tokenType"),
    ],
)
async def test_no_token_anywhere_in_the_exception_chain(body: Any) -> None:
    error = await failure(reply(200, body))
    for linked in _chain(error):
        assert TOKEN not in str(linked)
        assert TOKEN not in repr(linked)
        if isinstance(linked, ValidationError):
            assert TOKEN not in repr(linked.errors())


@pytest.mark.parametrize(
    "error_type", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError], ids=lambda t: t.__name__
)
async def test_no_secret_anywhere_in_the_exception_chain_of_a_transport_error(error_type: type[Exception]) -> None:
    # httpx's errors carry the request, whose body holds the client secret: they must not ride along.
    error = await failure(raising(error_type))
    for linked in _chain(error):
        assert SECRET not in str(linked)
        assert SECRET not in repr(linked)
        request = getattr(linked, "_request", None)
        assert request is None or SECRET.encode() not in request.content


def test_reprs_hide_the_secret_and_the_token() -> None:
    credentials = ClientCredentials(CLIENT_ID, SECRET)
    token = IssuedToken(access_token=TOKEN, token_type="Bearer", scope="balances:read", expires_in=3600)
    for text in (repr(credentials), str(credentials), f"{credentials!r}", repr([credentials])):
        assert SECRET not in text
        assert CLIENT_ID in text  # the id is not a secret and helps debugging
    for text in (repr(token), str(token), repr({"t": token})):
        assert TOKEN not in text
        assert "expires_in=3600" in text


# TLS with a real HTTPS server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A Palisade-like token endpoint over HTTPS on 127.0.0.1, certified by ``ca``."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    seen: list[tuple[dict[str, str], bytes]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.json_response(PALISADE_OK)

    app = web.Application()
    app.router.add_post("/v2/credentials/oauth/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/v2/credentials/oauth/token", seen
    finally:
        await runner.cleanup()


async def test_tls_trusts_the_ca_bundle_and_nothing_else(
    ca: trustme.CA, tls_server: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, seen = tls_server
    pool = ClientPool()
    try:
        trusted = pool.get(ca.cert_pem.bytes().decode())
        token = await exchange(trusted, PALISADE, url, CREDS, allowed_hosts=["127.0.0.1"])
        assert token.access_token == TOKEN
        [(headers, body)] = seen
        assert headers["User-Agent"].startswith("tokensync/")
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"clientId": CLIENT_ID, "clientSecret": SECRET}

        with pytest.raises(EndpointUnreachableError) as info:
            await exchange(pool.get(None), PALISADE, url, CREDS, allowed_hosts=["127.0.0.1"])
        assert info.value.reason is Reason.ENDPOINT_UNAVAILABLE
        assert "TLS verification failed for 127.0.0.1" in info.value.message
        assert "caBundleRef" in info.value.message

        other_ca = trustme.CA().cert_pem.bytes().decode()
        with pytest.raises(EndpointUnreachableError, match="caBundleRef"):
            await exchange(pool.get(other_ca), PALISADE, url, CREDS, allowed_hosts=["127.0.0.1"])
        assert len(seen) == 1, "no request may reach a server that failed verification"
    finally:
        await pool.aclose()


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("not a certificate", id="plain text"),
        pytest.param("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", id="a broken PEM block"),
    ],
)
def test_an_invalid_ca_bundle_is_refused(pem: str) -> None:
    with pytest.raises(InvalidCABundleError):
        ssl_context(pem)
    with pytest.raises(InvalidCABundleError):
        ClientPool().get(pem)


def test_verification_is_always_on(ca: trustme.CA) -> None:
    for context in (ssl_context(None), ssl_context(ca.cert_pem.bytes().decode())):
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname is True


# Palisade's gRPC codes, retryable 4xx and every httpx failure ---------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        pytest.param(400, 16, Reason.INVALID_CREDENTIALS, id="400 UNAUTHENTICATED is invalid credentials"),
        pytest.param(400, 7, Reason.FORBIDDEN, id="400 PERMISSION_DENIED is forbidden"),
        pytest.param(403, 3, Reason.INVALID_REQUEST, id="403 INVALID_ARGUMENT is an invalid request"),
        pytest.param(400, 8, Reason.RATE_LIMITED, id="400 RESOURCE_EXHAUSTED is rate limited"),
        pytest.param(400, 14, Reason.ENDPOINT_UNAVAILABLE, id="400 UNAVAILABLE is transient"),
        pytest.param(400, 12, Reason.ENDPOINT_NOT_FOUND, id="400 UNIMPLEMENTED is endpoint not found"),
        pytest.param(401, 2, Reason.INVALID_CREDENTIALS, id="UNKNOWN leaves the HTTP status to decide"),
        pytest.param(503, 16, Reason.ENDPOINT_UNAVAILABLE, id="a 5xx stays transient whatever its code"),
        pytest.param(503, 8, Reason.RATE_LIMITED, id="503 RESOURCE_EXHAUSTED is rate limited"),
    ],
)
async def test_palisade_codes_refine_the_http_status(status: int, code: int, reason: Reason) -> None:
    error = await failure(reply(status, {"code": code, "message": "nope"}))
    assert error.reason is reason
    assert (error.http_status, error.code) == (status, code)
    assert f"code {code}" in error.message


@pytest.mark.parametrize("status", [408, 425])
async def test_request_timeout_and_too_early_are_transient(status: int) -> None:
    error = await failure(reply(status, {"code": 2, "message": "try again"}))
    assert error.reason is Reason.ENDPOINT_UNAVAILABLE
    assert error.reason not in STALLED_REASONS


async def test_a_body_that_fails_to_decompress_is_an_invalid_response() -> None:
    error = await failure(reply(200, b"this is not gzip", content_type="application/json", content_encoding="gzip"))
    assert isinstance(error, InvalidResponseError)
    assert "could not be decoded" in error.message
    assert "gzip" in error.message


def raising_any(exc: Exception) -> SyncHandler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        pytest.param(httpx.StreamClosed(), Reason.ENDPOINT_UNAVAILABLE, id="a stream error"),
        pytest.param(httpx.InvalidURL("bad \x07 url"), Reason.INVALID_SPEC, id="an invalid URL"),
        pytest.param(UnicodeError("label too long"), Reason.INVALID_SPEC, id="an IDNA failure"),
        pytest.param(httpx.ProxyError("no"), Reason.ENDPOINT_UNAVAILABLE, id="a proxy error"),
        pytest.param(httpx.UnsupportedProtocol("no"), Reason.ENDPOINT_UNAVAILABLE, id="an unsupported protocol"),
    ],
)
async def test_every_httpx_failure_is_an_exchange_error(exc: Exception, reason: Reason) -> None:
    error = await failure(raising_any(exc))
    assert error.reason is reason


# Redaction of every form of the secret -------------------------------------------------------

ODD_SECRET = 'p@ss w/"quote"+&é%'


def _basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(lambda: ODD_SECRET, id="as is"),
        pytest.param(lambda: json.dumps(ODD_SECRET)[1:-1], id="JSON-escaped"),
        pytest.param(lambda: quote(ODD_SECRET, safe=""), id="percent-encoded"),
        pytest.param(lambda: quote_plus(ODD_SECRET), id="form-encoded"),
        pytest.param(lambda: _basic(CLIENT_ID, quote(ODD_SECRET, safe="")), id="Basic base64 of id:secret"),
        pytest.param(lambda: _basic(CLIENT_ID, ODD_SECRET), id="Basic base64 of the raw pair"),
    ],
)
@pytest.mark.parametrize("spec", [PALISADE, OAUTH2, oauth2(clientAuthentication="post")], ids=["json", "basic", "post"])
async def test_an_echo_of_the_secret_in_any_encoding_is_redacted(
    echo: Callable[[], str], spec: ClientCredentialSpec
) -> None:
    echoed = echo()
    body = (
        {"code": 16, "message": f"bad {echoed}"}
        if spec.provider.value == "palisade"
        else {
            "error": "invalid_client",
            "error_description": f"bad {echoed}",
        }
    )
    error = await failure(reply(401, body), spec=spec, credentials=ClientCredentials(CLIENT_ID, ODD_SECRET))
    assert echoed not in error.message
    assert "<redacted>" in error.message


def test_a_token_request_never_shows_its_credentials_in_a_repr() -> None:
    for request in (
        build_palisade_request(PALISADE_URL, CREDS),
        build_oauth2_request(OAUTH2_URL, CREDS, OAUTH2),
        build_oauth2_request(OAUTH2_URL, CREDS, oauth2(clientAuthentication="post")),
    ):
        text = repr(request) + str(request)
        assert SECRET not in text
        assert _basic(CLIENT_ID, SECRET) not in text
        assert "Basic" not in text


# Lifetime from any OAuth 2.0 server: expires_in, a JWT's exp, or spec.defaultLifetime --------


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_expires_in_wins_over_a_jwt_exp() -> None:
    body = json.dumps(
        {"access_token": jwt({"exp": int(NOW.timestamp()) + 60}), "token_type": "Bearer", "expires_in": 300}
    )
    token = parse_success(Provider.OAUTH2, body.encode(), now=NOW)
    assert (token.expires_in, token.lifetime_source) == (300, LifetimeSource.EXPIRES_IN)


def test_a_jwt_without_expires_in_lives_until_its_exp() -> None:
    exp = int(NOW.timestamp()) + 900
    body = json.dumps({"access_token": jwt({"exp": exp, "sub": "client"}), "token_type": "Bearer"})
    token = parse_success(Provider.OAUTH2, body.encode(), default_lifetime=timedelta(minutes=5), now=NOW)
    assert (token.expires_in, token.lifetime_source, token.expires_at_epoch) == (900, LifetimeSource.JWT, exp)


def test_an_opaque_token_without_expires_in_takes_the_default_lifetime() -> None:
    body = json.dumps({"access_token": "opaque-token", "token_type": "Bearer"})
    token = parse_success(Provider.OAUTH2, body.encode(), default_lifetime=timedelta(minutes=5), now=NOW)
    assert (token.expires_in, token.lifetime_source, token.expires_at_epoch) == (300, LifetimeSource.DEFAULT, None)


@pytest.mark.parametrize(
    ("access_token", "fragment"),
    [
        pytest.param("opaque-token", "set spec.defaultLifetime", id="an opaque token"),
        pytest.param(jwt({"sub": "x"}), "set spec.defaultLifetime", id="a JWT without exp"),
        pytest.param(jwt({"exp": "tomorrow"}), "set spec.defaultLifetime", id="a JWT with a text exp"),
        pytest.param("a.b.c", "set spec.defaultLifetime", id="three parts that are not a JWT"),
        pytest.param(jwt({"exp": int(NOW.timestamp()) - 5}), "has passed", id="a JWT already expired"),
        pytest.param(
            jwt({"exp": int(NOW.timestamp()) + 10 * 366 * 86400}), "more than a year", id="a JWT for 10 years"
        ),
    ],
)
def test_no_usable_lifetime_is_an_invalid_response_naming_the_remedies(access_token: str, fragment: str) -> None:
    body = json.dumps({"access_token": access_token, "token_type": "Bearer"})
    with pytest.raises(InvalidResponseError) as info:
        parse_success(Provider.OAUTH2, body.encode(), now=NOW)
    assert fragment in info.value.message
    assert access_token not in info.value.message


def test_jwt_expiry_reads_only_well_formed_claims() -> None:
    assert jwt_expiry(jwt({"exp": 1893456000})) == 1893456000
    assert jwt_expiry(jwt({"exp": 1893456000.7})) == 1893456000
    assert jwt_expiry(jwt({"exp": True})) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None


async def test_the_exchange_uses_the_specs_default_lifetime() -> None:
    spec = oauth2(defaultLifetime="10m")
    token = await run(reply(200, {"access_token": TOKEN, "token_type": "Bearer"}), spec=spec)
    assert (token.expires_in, token.lifetime_source) == (600, LifetimeSource.DEFAULT)


def test_host_matching_lower_cases_ascii_only() -> None:
    # The Kelvin sign lower-cases to "k" in Python; DNS and the admission policy do not do that.
    assert not host_allowed("https://\u212aeycloak.example/token", ["keycloak.example"])
    assert host_allowed("https://KEYCLOAK.example/token", ["keycloak.example"])
