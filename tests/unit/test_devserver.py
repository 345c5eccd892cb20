"""Tests for the dev token server that the other test suites and the demo rely on."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokensync.dev.tokenserver import (
    FAILURE_MODES,
    PALISADE_TOKEN_PATH,
    REDIRECT_PREFIX,
    DevTokenServer,
    parse_credential,
)

CREDENTIALS = {"demo-client": "demo-secret", "second-client": "second-secret"}
GOOD = {"clientId": "demo-client", "clientSecret": "demo-secret"}


@pytest.fixture
async def server() -> AsyncIterator[DevTokenServer]:
    async with DevTokenServer(credentials=CREDENTIALS, lifetime=60, scope="balances:read") as srv:
        yield srv


@pytest.fixture
async def client(server: DevTokenServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=server.client_ssl_context(), timeout=5) as http:
        yield http


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def assert_palisade_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], list)
    assert all(isinstance(detail["@type"], str) for detail in body["details"])
    return body


# -- Palisade endpoint ---------------------------------------------------------------------


async def test_happy_path(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    response = await client.post(server.token_url, json=GOOD)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"accessToken", "scope", "expiresIn", "tokenType"}
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == 60
    assert body["scope"] == "balances:read"
    assert server.issued == 1
    assert server.tokens == [body["accessToken"]]
    [record] = server.requests
    assert (record.client_id, record.status, record.path) == ("demo-client", 200, PALISADE_TOKEN_PATH)
    assert record.failure is None
    assert "demo-secret" not in repr(record)


async def test_urls(server: DevTokenServer) -> None:
    assert server.base_url == f"https://127.0.0.1:{server.port}"
    assert server.token_url == server.base_url + "/v2/credentials/oauth/token"
    assert server.oauth2_token_url == server.base_url + "/oauth2/token"


async def test_several_clients_and_runtime_changes(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    second = {"clientId": "second-client", "clientSecret": "second-secret"}
    assert (await client.post(server.token_url, json=second)).status_code == 200

    server.credentials = {"demo-client": "rotated"}
    server.lifetime = 5
    assert (await client.post(server.token_url, json=GOOD)).status_code == 401
    assert (await client.post(server.token_url, json=second)).status_code == 401
    response = await client.post(server.token_url, json={"clientId": "demo-client", "clientSecret": "rotated"})
    assert response.status_code == 200
    assert response.json()["expiresIn"] == 5
    assert server.credentials == {"demo-client": "rotated"}


@pytest.mark.parametrize(
    "payload",
    [
        {"clientId": "demo-client", "clientSecret": "wrong"},
        {"clientId": "nobody", "clientSecret": "demo-secret"},
    ],
    ids=["wrong-secret", "unknown-client"],
)
async def test_wrong_credentials(server: DevTokenServer, client: httpx.AsyncClient, payload: Any) -> None:
    response = await client.post(server.token_url, json=payload)

    body = assert_palisade_error(response, 401, 16)
    assert body["details"][0]["reason"] == "UNAUTHENTICATED"
    assert server.issued == 0
    assert server.tokens == []
    assert server.requests[0].client_id == payload["clientId"]
    assert server.requests[0].status == 401


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'["demo-client", "demo-secret"]', "application/json"),
        (b'{"clientSecret": "demo-secret"}', "application/json"),
        (b'{"clientId": "demo-client"}', "application/json"),
        (b'{"clientId": "demo-client", "clientSecret": 42}', "application/json"),
        (b'{"clientId": "", "clientSecret": "demo-secret"}', "application/json"),
        (b'{"clientId": "demo-client", "clientSecret": "demo-secret"}', "text/plain"),
    ],
    ids=["not-json", "not-object", "no-id", "no-secret", "secret-not-str", "empty-id", "content-type"],
)
async def test_malformed_body(
    server: DevTokenServer, client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await client.post(server.token_url, content=content, headers={"Content-Type": content_type})

    assert_palisade_error(response, 400, 3)
    assert server.issued == 0


async def test_unknown_path_and_method(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    assert_palisade_error(await client.post(server.base_url + "/v1/token", json=GOOD), 404, 5)
    assert_palisade_error(await client.get(server.base_url + "/"), 404, 5)
    response = await client.get(server.token_url)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert [r.status for r in server.requests] == [404, 404, 405]


async def test_tokens_are_unique(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    for _ in range(20):
        assert (await client.post(server.token_url, json=GOOD)).status_code == 200
    assert server.issued == 20
    assert len(set(server.tokens)) == 20


# -- failure modes -------------------------------------------------------------------------


async def test_failure_unavailable(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("unavailable")
    assert_palisade_error(await client.post(server.token_url, json=GOOD), 503, 14)


async def test_failure_html_error(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("html-error")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


async def test_failure_rate_limited(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("rate-limited", retry_after=17)
    response = await client.post(server.token_url, json=GOOD)
    assert_palisade_error(response, 429, 8)
    assert response.headers["retry-after"] == "17"


async def test_failure_slow(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("slow", delay=0.2)
    started = time.monotonic()
    response = await client.post(server.token_url, json=GOOD)
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert server.issued == 1
    assert server.requests[0].failure == "slow"


async def test_failure_slow_does_not_delay_stop() -> None:
    srv = DevTokenServer()
    await srv.astart()
    srv.fail("slow", delay=30)
    async with httpx.AsyncClient(verify=srv.client_ssl_context(), timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(srv.token_url, json=GOOD)
    started = time.monotonic()
    await srv.astop()
    assert time.monotonic() - started < 1


async def test_failure_not_json(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("not-json")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


async def test_failure_missing_fields(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("missing-fields")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 200
    body = response.json()
    assert "accessToken" in body
    assert "expiresIn" not in body
    assert server.issued == 0  # an unusable token does not count


async def test_failure_unauthorized(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("unauthorized")
    assert_palisade_error(await client.post(server.token_url, json=GOOD), 401, 16)


async def test_failure_forbidden(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("forbidden")
    body = assert_palisade_error(await client.post(server.token_url, json=GOOD), 403, 7)
    assert "127.0.0.1" in body["message"]


async def test_failure_empty(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("empty")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 500
    assert response.content == b""


async def test_failure_redirect(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("redirect")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 307
    target = server.base_url + REDIRECT_PREFIX + PALISADE_TOKEN_PATH
    assert response.headers["location"] == target

    # The target answers normally, so a client that follows shows up in the records.
    followed = await client.post(server.token_url, json=GOOD, follow_redirects=True)
    assert followed.status_code == 200
    assert [r.path for r in server.requests][-2:] == [PALISADE_TOKEN_PATH, REDIRECT_PREFIX + PALISADE_TOKEN_PATH]


async def test_failure_hang(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("hang")
    # Held until the client gives up: recorded as 499 (client closed request), nothing issued.
    with pytest.raises(httpx.ReadTimeout):
        await client.post(server.token_url, json=GOOD, timeout=0.5)
    await wait_until(lambda: server.inflight == 0 and len(server.requests) == 1)
    [abandoned] = server.requests
    assert (abandoned.status, abandoned.failure, abandoned.client_id) == (499, "hang", "demo-client")
    assert abandoned.at - abandoned.started >= 0.5
    assert server.issued == 0

    # Held until the mode changes: then answered in the new mode.
    pending = asyncio.ensure_future(client.post(server.token_url, json=GOOD, timeout=30))
    await wait_until(lambda: server.inflight == 1)
    await asyncio.sleep(0.3)  # a bounded look: still unanswered
    assert not pending.done()
    server.fail(None)
    response = await pending
    assert response.status_code == 200
    assert server.requests[-1].failure == "hang"
    assert server.issued == 1


async def test_failure_hang_with_times_holds_only_that_many(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("hang", times=1)
    held = asyncio.ensure_future(client.post(server.token_url, json=GOOD, timeout=30))
    await wait_until(lambda: server.inflight == 1)
    assert (await client.post(server.token_url, json=GOOD)).status_code == 200  # the next one is not held
    assert not held.done()
    server.fail(None)  # any later call releases it
    assert (await held).status_code == 200


async def test_failure_hang_does_not_delay_stop() -> None:
    srv = DevTokenServer()
    await srv.astart()
    srv.fail("hang")
    async with httpx.AsyncClient(verify=srv.client_ssl_context(), timeout=30) as http:
        pending = asyncio.ensure_future(http.post(srv.token_url, json=GOOD))
        await wait_until(lambda: srv.inflight == 1)
        started = time.monotonic()
        await srv.astop()
        assert time.monotonic() - started < 1
        with pytest.raises(httpx.HTTPError):
            await pending


async def test_failure_trickle(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("trickle", interval=0.02)
    started = time.monotonic()
    async with client.stream("POST", server.token_url, json=GOOD) as response:
        headers_after = time.monotonic() - started
        assert response.status_code == 200
        length = int(response.headers["content-length"])
        chunks = [chunk async for chunk in response.aiter_raw()]
    took = time.monotonic() - started
    # Headers at once, then the body a byte at a time (each byte within a read timeout: only a
    # deadline over the whole exchange catches this).
    assert headers_after < took / 2
    assert took >= length * 0.02 * 0.9
    body = json.loads(b"".join(chunks))
    assert set(body) == {"accessToken", "scope", "expiresIn", "tokenType"}
    assert len(chunks) > length / 2
    assert server.issued == 0
    await wait_until(lambda: len(server.requests) == 1)  # recorded once the handler returns
    assert server.requests[0].failure == "trickle"


async def test_failure_huge(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("huge")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 200
    assert "content-length" not in response.headers  # chunked: only counting the bytes read catches it
    assert len(response.content) > 1024 * 1024
    body = response.json()
    assert body["tokenType"] == "Bearer"
    assert body["accessToken"]
    assert server.issued == 0


async def test_failure_truncated(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("truncated")
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        await client.post(server.token_url, json=GOOD)
    assert server.issued == 0
    assert server.requests[0].failure == "truncated"


async def test_failure_not_utf8(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("not-utf8")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        json.loads(response.content)


async def test_failure_wrong_shape(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("wrong-shape")
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert "accessToken" in body[0]
    assert server.issued == 0


async def test_failure_gzip_broken(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("gzip-broken")
    with pytest.raises(httpx.DecodingError):
        await client.post(server.token_url, json=GOOD)
    server.fail("gzip-broken")
    async with client.stream("POST", server.token_url, json=GOOD) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert json.loads(raw)["accessToken"]  # plain JSON, not gzip


@pytest.mark.parametrize("value", [0, -5, 3.5, "3600", 10 * 365 * 86400, None])
async def test_failure_expires_in(server: DevTokenServer, client: httpx.AsyncClient, value: Any) -> None:
    server.fail("expires-in", expires_in=value)
    body = (await client.post(server.token_url, json=GOOD)).json()
    assert body["expiresIn"] == value
    assert type(body["expiresIn"]) is type(value)
    assert body["accessToken"]
    server.fail("expires-in", expires_in=value)
    form = {"grant_type": "client_credentials"}
    oauth = (await client.post(server.oauth2_token_url, data=form, auth=("demo-client", "demo-secret"))).json()
    assert oauth["expires_in"] == value
    assert server.issued == 0


def test_failure_expires_in_must_be_json() -> None:
    with pytest.raises(TypeError):
        DevTokenServer(tls=False).fail("expires-in", expires_in=object())


@pytest.mark.parametrize(
    ("status", "code", "expected_code", "name"),
    [(400, 16, 16, "UNAUTHENTICATED"), (400, 8, 8, "RESOURCE_EXHAUSTED"), (503, 14, 14, "UNAVAILABLE"),
     (408, None, 2, "UNKNOWN"), (403, None, 7, "PERMISSION_DENIED")],
)  # fmt: skip
async def test_failure_error(
    server: DevTokenServer, client: httpx.AsyncClient, status: int, code: int | None, expected_code: int, name: str
) -> None:
    server.fail("error", status=status, code=code, message="went wrong", headers={"X-Test": "1"})
    response = await client.post(server.token_url, json=GOOD)
    body = assert_palisade_error(response, status, expected_code)
    assert body["message"] == "went wrong"
    assert body["details"][0]["reason"] == name
    assert response.headers["x-test"] == "1"
    assert "retry-after" not in response.headers


async def test_failure_error_on_the_oauth2_endpoint(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    form = {"grant_type": "client_credentials"}
    server.fail("error", status=503)
    response = await client.post(server.oauth2_token_url, data=form, auth=("demo-client", "demo-secret"))
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    server.fail("error", status=400, code=16)  # a code asks for Palisade's shape on either endpoint
    response = await client.post(server.oauth2_token_url, data=form, auth=("demo-client", "demo-secret"))
    assert response.json()["code"] == 16


async def test_failure_unauthenticated_grpc(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("unauthenticated-grpc")
    body = assert_palisade_error(await client.post(server.token_url, json=GOOD), 400, 16)
    assert body["details"][0]["reason"] == "UNAUTHENTICATED"
    assert server.issued == 0


async def test_failure_rate_limited_no_retry_after(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("rate-limited-no-retry-after")
    response = await client.post(server.token_url, json=GOOD)
    assert_palisade_error(response, 429, 8)
    assert "retry-after" not in response.headers
    server.fail("rate-limited", retry_after=None)  # the same through the rate-limited mode
    response = await client.post(server.token_url, json=GOOD)
    assert response.status_code == 429
    assert "retry-after" not in response.headers


async def test_failure_raw(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("raw", status=425, headers={"Content-Type": "text/plain", "X-Why": "early"}, body="too early")
    response = await client.post(server.token_url, json=GOOD)
    assert (response.status_code, response.text, response.headers["x-why"]) == (425, "too early", "early")
    server.fail("raw", status=408)
    response = await client.post(server.token_url, json=GOOD)
    assert (response.status_code, response.content) == (408, b"")
    server.fail("raw")
    response = await client.post(server.token_url, json=GOOD)
    assert (response.status_code, response.content) == (200, b"")
    assert server.issued == 0


async def test_requests_record_when_they_started_and_how_many_overlapped(
    server: DevTokenServer, client: httpx.AsyncClient
) -> None:
    server.fail("slow", delay=0.3, times=2)
    await asyncio.gather(*(client.post(server.token_url, json=GOOD) for _ in range(2)))
    assert server.peak_inflight == 2
    assert server.inflight == 0
    first, second = server.requests
    assert first.started < first.at
    assert first.at - first.started >= 0.3
    assert second.started < first.at  # they overlapped
    server.reset()
    assert server.peak_inflight == 0


async def test_client_of_a_token(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    token = (await client.post(server.token_url, json=GOOD)).json()["accessToken"]
    second = {"clientId": "second-client", "clientSecret": "second-secret"}
    other = (await client.post(server.token_url, json=second)).json()["accessToken"]
    assert (server.client_of(token), server.client_of(other), server.client_of("nope")) == (
        "demo-client",
        "second-client",
        None,
    )


async def test_every_failure_mode_is_covered() -> None:
    tested = {name.removeprefix("test_failure_").replace("_", "-") for name in globals()}
    assert set(FAILURE_MODES) <= tested


async def test_failure_times_reverts(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("unavailable", times=2)
    statuses = [(await client.post(server.token_url, json=GOOD)).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert server.failure is None
    assert [r.failure for r in server.requests] == ["unavailable", "unavailable", None, None]


async def test_failure_switched_off(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("unavailable")
    assert server.failure == "unavailable"
    server.fail(None)
    assert (await client.post(server.token_url, json=GOOD)).status_code == 200


def test_fail_rejects_bad_arguments() -> None:
    srv = DevTokenServer(tls=False)
    with pytest.raises(ValueError, match="unknown failure mode"):
        srv.fail("explode")
    with pytest.raises(ValueError, match="times"):
        srv.fail("slow", times=0)
    with pytest.raises(ValueError, match="negative"):
        srv.fail("trickle", interval=-1)
    with pytest.raises(ValueError, match="status"):
        srv.fail("raw", status=1000)
    with pytest.raises(ValueError, match="certificate"):
        DevTokenServer(certificate="self-signed")


async def test_reset(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    await client.post(server.token_url, json=GOOD)
    server.fail("unavailable")
    server.lifetime = 1
    server.credentials = {"x": "y"}
    server.reset()
    assert (server.issued, server.requests, server.tokens, server.failure) == (0, [], [], None)
    assert server.lifetime == 60
    assert server.credentials == CREDENTIALS


# -- RFC 6749 endpoint ---------------------------------------------------------------------


async def test_oauth2_basic_auth(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    response = await client.post(
        server.oauth2_token_url,
        data={"grant_type": "client_credentials", "audience": "https://api.example"},
        auth=("demo-client", "demo-secret"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "access_token": server.tokens[0],
        "token_type": "Bearer",
        "expires_in": 60,
        "scope": "balances:read",
    }
    assert server.requests[0].client_id == "demo-client"


async def test_oauth2_post_auth(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    form = {"grant_type": "client_credentials", "client_id": "second-client", "client_secret": "second-secret"}
    response = await client.post(server.oauth2_token_url, data=form)
    assert response.status_code == 200
    assert response.json()["access_token"] == server.tokens[0]


async def test_oauth2_basic_auth_is_form_urlencoded(client: httpx.AsyncClient) -> None:
    async with DevTokenServer(credentials={"id:1": "p@ss word+%"}) as srv:
        # RFC 6749 2.3.1: each part is form-urlencoded before base64.
        encoded = base64.b64encode(b"id%3A1:p%40ss+word%2B%25").decode()
        async with httpx.AsyncClient(verify=srv.client_ssl_context()) as http:
            response = await http.post(
                srv.oauth2_token_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {encoded}"},
            )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("demo-client", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "demo-client"}, None, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({}, ("demo-client", "demo-secret"), 400, "invalid_request"),
        ({"grant_type": "password"}, ("demo-client", "demo-secret"), 400, "unsupported_grant_type"),
        (
            {"grant_type": "client_credentials", "client_secret": "demo-secret"},
            ("demo-client", "demo-secret"),
            400,
            "invalid_request",
        ),
        ({"grant_type": "client_credentials", "scope": "admin"}, ("demo-client", "demo-secret"), 400, "invalid_scope"),
    ],
    ids=["wrong-secret", "no-secret", "no-client", "no-grant", "bad-grant", "two-auth-methods", "bad-scope"],
)
async def test_oauth2_errors(
    server: DevTokenServer,
    client: httpx.AsyncClient,
    form: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    basic = httpx.BasicAuth(*auth) if auth else httpx.USE_CLIENT_DEFAULT
    response = await client.post(server.oauth2_token_url, data=form, auth=basic)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")
    assert server.issued == 0


async def test_oauth2_rejects_json(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    response = await client.post(server.oauth2_token_url, json={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_oauth2_failure_modes_use_rfc_errors(server: DevTokenServer, client: httpx.AsyncClient) -> None:
    server.fail("missing-fields", times=1)
    form = {"grant_type": "client_credentials"}
    auth = ("demo-client", "demo-secret")
    basic = httpx.BasicAuth(*auth) if auth else httpx.USE_CLIENT_DEFAULT
    response = await client.post(server.oauth2_token_url, data=form, auth=basic)
    assert response.status_code == 200
    assert "expires_in" not in response.json()

    server.fail("unavailable", times=1)
    basic = httpx.BasicAuth(*auth) if auth else httpx.USE_CLIENT_DEFAULT
    response = await client.post(server.oauth2_token_url, data=form, auth=basic)
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"


# -- TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_cert_verifies_against_ca(server: DevTokenServer, host: str) -> None:
    url = f"https://{host}:{server.port}{PALISADE_TOKEN_PATH}"
    async with httpx.AsyncClient(verify=server.client_ssl_context()) as http:
        assert (await http.post(url, json=GOOD)).status_code == 200
    # And it is really the CA that makes it pass.
    async with httpx.AsyncClient(verify=ssl.create_default_context()) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.post(url, json=GOOD)


async def test_cert_names(server: DevTokenServer) -> None:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=server.client_ssl_context(), server_hostname="localhost"
    )
    cert = writer.get_extra_info("peercert")
    writer.close()
    await writer.wait_closed()
    names = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
    ips = {ipaddress.ip_address(value.strip()) for kind, value in cert["subjectAltName"] if kind == "IP Address"}
    assert "localhost" in names
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= ips


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback() -> None:
    async with DevTokenServer(host="::1") as srv:
        assert srv.base_url.startswith("https://[::1]:")
        async with httpx.AsyncClient(verify=srv.client_ssl_context()) as http:
            assert (await http.post(srv.token_url, json=GOOD)).status_code == 200


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("unknown-ca", "unable to get local issuer certificate"),
        ("wrong-host", "not valid for '127.0.0.1'"),
        ("expired", "certificate has expired"),
        ("not-yet-valid", "certificate is not yet valid"),
    ],
)
async def test_certificates_that_fail_verification(kind: str, error: str) -> None:
    async with DevTokenServer(certificate=kind) as srv:
        assert srv.certificate == kind
        # The client trusts the server's CA, as a ClientCredential's caBundleRef would.
        async with httpx.AsyncClient(verify=srv.client_ssl_context()) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED") as failure:
                await http.post(srv.token_url, json=GOOD)
        assert error in str(failure.value)
        assert srv.requests == []  # nothing was sent: the handshake failed


def test_ca_written_to_cert_dir(tmp_path: Path) -> None:
    srv = DevTokenServer(cert_dir=tmp_path / "certs")
    assert srv.ca_path == tmp_path / "certs" / "ca.pem"
    assert srv.ca_path.read_bytes() == srv.ca_pem
    assert srv.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_ca_in_temp_dir_by_default() -> None:
    srv = DevTokenServer()
    assert srv.ca_path.read_bytes() == srv.ca_pem


async def test_plain_http() -> None:
    async with DevTokenServer(tls=False) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            assert (await http.post(srv.token_url, json=GOOD)).status_code == 200
        with pytest.raises(RuntimeError, match="TLS is disabled"):
            _ = srv.ca_pem


# -- threads, logs, CLI helpers ------------------------------------------------------------


async def test_own_thread_survives_and_is_controllable() -> None:
    # The way kopf-based tests use it: the server lives outside the test's loop.
    with DevTokenServer() as srv:
        async with httpx.AsyncClient(verify=srv.client_ssl_context()) as http:
            assert (await http.post(srv.token_url, json=GOOD)).status_code == 200
            await asyncio.to_thread(srv.fail, "unavailable", times=1)
            assert (await http.post(srv.token_url, json=GOOD)).status_code == 503
            assert (await http.post(srv.token_url, json=GOOD)).status_code == 200
        assert srv.issued == 2
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.base_url


def test_sync_start_stop_twice() -> None:
    srv = DevTokenServer(tls=False)
    for _ in range(2):
        srv.start()
        with pytest.raises(RuntimeError, match="already running"):
            srv.start()
        assert httpx.post(srv.token_url, json=GOOD).status_code == 200
        srv.stop()
    srv.stop()  # idempotent
    assert srv.issued == 2


def test_start_reports_bind_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        srv = DevTokenServer(tls=False, port=sock.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            srv.start()


async def test_logs_never_contain_secrets_or_tokens(
    server: DevTokenServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.post(server.token_url, json=GOOD)
    await client.post(server.token_url, json={"clientId": "demo-client", "clientSecret": "wrong-secret"})
    await client.post(server.token_url, content=b'{"clientId": "demo-client", "clientSecret": "demo-secret"')
    await client.post(
        server.oauth2_token_url, data={"grant_type": "client_credentials"}, auth=("demo-client", "demo-secret")
    )
    form = {"grant_type": "client_credentials", "client_id": "second-client", "client_secret": "second-secret"}
    await client.post(server.oauth2_token_url, data=form)
    await client.post(server.oauth2_token_url + "?client_secret=demo-secret", data=form)
    server.fail("missing-fields", times=1)
    missing = (await client.post(server.token_url, json=GOOD)).json()["accessToken"]

    server_logs = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith(("tokensync", "aiohttp"))
    )
    assert "demo-client" in server_logs  # the log is captured at all
    assert "second-client" in server_logs
    assert len(server.tokens) == 4
    for secret in ("demo-secret", "second-secret", "wrong-secret", *server.tokens, missing):
        assert secret not in server_logs


def test_parse_credential() -> None:
    assert parse_credential("demo-client:demo:secret") == ("demo-client", "demo:secret")
    with pytest.raises(ValueError, match="CLIENT_ID:CLIENT_SECRET"):
        parse_credential("demo-client")
    with pytest.raises(ValueError, match="CLIENT_ID:CLIENT_SECRET"):
        parse_credential(":secret")


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        DevTokenServer(credentials={"demo-client": ""}, tls=False)
    with pytest.raises(ValueError, match="lifetime"):
        DevTokenServer(lifetime=-1, tls=False)


def test_serve_forever(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from tokensync.dev.tokenserver import serve_forever; "
        f"serve_forever(port=0, cert_dir=Path({str(tmp_path)!r}), credentials={{'cli': 'cli-secret'}})"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(4)]
            output = "".join(lines)
            token_url = lines[0].split()[-1]
            assert str(tmp_path / "ca.pem") in output
            assert "cli-secret" not in output
            ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            response = httpx.post(token_url, json={"clientId": "cli", "clientSecret": "cli-secret"}, verify=ctx)
            assert response.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
