"""A third-party OAuth 2.0 authorization server for the tests: authlib's server side over HTTPS.

The token logic, client authentication (``client_secret_basic`` with RFC 6749 §2.3.1 form-decoding,
``client_secret_post``), scope checks, JWT access tokens (RFC 9068, signed RS256 with joserfc) and
every error answer (``invalid_client``, ``invalid_scope``, ``unauthorized_client``, ...) come from
authlib's ``AuthorizationServer`` and ``ClientCredentialsGrant``; this module only supplies what
authlib leaves to a framework integration (turning an HTTP request into an ``OAuth2Request`` and a
``(status, body, headers)`` triple into an HTTP response), a client registry, and a record of what
the server saw (never a client secret). It is served by aiohttp over HTTPS on 127.0.0.1 with a
throwaway ``trustme`` CA, in a thread and event loop of its own, like the project's dev token server.

Per client, a token is ``opaque`` (authlib's ``BearerTokenGenerator``) or ``jwt``
(``JWTBearerTokenGenerator``), with or without ``expires_in`` in the response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import trustme
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc.jwk import RSAKey

TOKEN_PATH = "/oauth2/token"
ISSUER = "https://127.0.0.1/authlib-test-issuer"
BASIC = "client_secret_basic"
POST = "client_secret_post"

TokenFormat = Literal["opaque", "jwt"]


@dataclass(frozen=True)
class Registration:
    """A registered client, as an authorization server's admin would set it up."""

    client_id: str
    client_secret: str = field(repr=False)
    auth_method: str = BASIC
    scopes: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("client_credentials",)
    token_format: TokenFormat = "opaque"
    send_expires_in: bool = True


@dataclass(frozen=True)
class Seen:
    """One token request as the server saw it. Never holds the client secret or a token."""

    status: int
    #: The authenticated client, or None when authentication failed.
    client_id: str | None
    #: authlib's name for how the client authenticated (client_secret_basic / client_secret_post).
    auth_method: str | None
    #: The form parameters, without client_secret.
    form: Mapping[str, str]
    #: The ``error`` of an error answer.
    error: str | None
    #: The response's top-level keys (to see what was left out, e.g. expires_in).
    response_keys: tuple[str, ...]


@dataclass(frozen=True)
class Issued:
    client_id: str
    access_token: str = field(repr=False)
    response: Mapping[str, Any] = field(repr=False)


class Client(ClientMixin):  # type: ignore[misc]  # authlib is untyped
    """authlib's client model, backed by a ``Registration``."""

    def __init__(self, registration: Registration) -> None:
        self.registration = registration

    def get_client_id(self) -> str:
        return self.registration.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        # None makes authlib's token generator answer invalid_scope: a client gets exactly
        # the scopes it asked for, or an error, never a silently narrowed set.
        if not scope:
            return ""
        requested = scope_to_list(scope)
        if not set(requested) <= set(self.registration.scopes):
            return None
        return str(list_to_scope(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.registration.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == self.registration.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.registration.grant_types


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """authlib's grant, accepting both client authentication methods (each client is held to its own)."""

    TOKEN_ENDPOINT_AUTH_METHODS = [BASIC, POST]


class _FormPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: Sequence[tuple[str, str]]) -> None:
        self._datalist: dict[str, list[str]] = defaultdict(list)
        for key, value in form:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: web.Request, form: Sequence[tuple[str, str]]) -> None:
        super().__init__(method=request.method, uri=str(request.url), headers=request.headers)
        self.payload = _FormPayload(form)
        self.authenticated: Client | None = None

    @property
    def args(self) -> Mapping[str, str]:
        return {}

    @property
    def form(self) -> Mapping[str, str]:
        return dict(self.payload.data)


@dataclass
class _Incoming:
    """What the HTTP layer hands to authlib; authlib's own request object is kept on it."""

    request: web.Request
    form: list[tuple[str, str]]
    oauth2: _Request | None = None


class _OpaqueTokens(BearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, lifetime: int) -> None:
        super().__init__(lambda **_: generate_token(42), expires_generator=lambda client, grant_type: lifetime)
        self.lifetime = lifetime

    def generate(self, grant_type: str, client: Client, *args: Any, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = super().generate(grant_type, client, *args, **kwargs)
        if not client.registration.send_expires_in:
            token.pop("expires_in", None)
        return token


class _JWTTokens(JWTBearerTokenGenerator):  # type: ignore[misc]
    def __init__(self, key: RSAKey, lifetime: int) -> None:
        super().__init__(issuer=ISSUER, alg="RS256", expires_generator=lambda client, grant_type: lifetime)
        self.key = key

    def get_jwks(self) -> RSAKey:
        return self.key

    def generate(self, grant_type: str, client: Client, *args: Any, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = super().generate(grant_type, client, *args, **kwargs)
        if not client.registration.send_expires_in:
            token.pop("expires_in", None)
        return token


class _Server(AuthorizationServer):  # type: ignore[misc]
    """authlib's AuthorizationServer with the parts a framework integration supplies."""

    def __init__(self, owner: AuthlibTokenServer, scopes_supported: Sequence[str]) -> None:
        super().__init__(scopes_supported=list(scopes_supported))
        self.owner = owner

    def query_client(self, client_id: str) -> Client | None:
        registration = self.owner.clients.get(client_id)
        return Client(registration) if registration is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.owner.issued.append(Issued(request.client.get_client_id(), token["access_token"], dict(token)))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_authenticate_client":  # kept for the record: grants set request.client later
            kwargs["grant"].request.authenticated = kwargs["client"]

    def create_oauth2_request(self, request: _Incoming) -> _Request:
        request.oauth2 = _Request(request.request, request.form)
        return request.oauth2

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("only the token endpoint is served")

    def handle_response(
        self, status: int, body: Any, headers: Sequence[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers)


class AuthlibTokenServer:
    """authlib's authorization server over HTTPS on 127.0.0.1, in a thread of its own.

    ``requests`` records every token request (no secrets), ``issued`` every token handed out.
    """

    def __init__(self, clients: Sequence[Registration], *, lifetime: int = 3600) -> None:
        self.clients = {c.client_id: c for c in clients}
        self.lifetime = lifetime
        self.requests: list[Seen] = []
        self.issued: list[Issued] = []
        # The JWT signing key: RS256, the RFC 9068 profile's usual algorithm.
        self.jwt_key = RSAKey.generate_key(2048)
        ca = trustme.CA(organization_name="tokensync tests: authlib authorization server")
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl)
        self.ca_pem = ca.cert_pem.bytes().decode()

        all_scopes = sorted({s for c in clients for s in c.scopes})
        self.server = _Server(self, all_scopes)
        self.server.register_grant(_ClientCredentialsGrant)
        opaque, jwt = _OpaqueTokens(lifetime), _JWTTokens(self.jwt_key, lifetime)
        self.server.register_token_generator(
            "default",
            lambda grant_type, client, **kw: (jwt if client.registration.token_format == "jwt" else opaque)(
                grant_type, client, **kw
            ),
        )

        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._authlib_log_level = logging.NOTSET

    @property
    def token_url(self) -> str:
        assert self._port is not None, "the server is not running"
        return f"https://127.0.0.1:{self._port}{TOKEN_PATH}"

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)

    def seen(self, client_id: str | None = None) -> list[Seen]:
        return [r for r in self.requests if client_id is None or r.client_id == client_id]

    def tokens(self) -> Iterator[str]:
        return (i.access_token for i in self.issued)

    # -- HTTP ------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        form = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
        incoming = _Incoming(request, form)
        status, body, headers = self.server.create_token_response(incoming)
        oauth2 = incoming.oauth2
        client = oauth2.authenticated if oauth2 is not None else None
        self.requests.append(
            Seen(
                status=status,
                client_id=client.get_client_id() if client is not None else None,
                auth_method=oauth2.auth_method if oauth2 is not None else None,
                form={k: v for k, v in form if k != "client_secret"},
                error=body.get("error") if isinstance(body, dict) else None,
                response_keys=tuple(body) if isinstance(body, dict) else (),
            )
        )
        return web.Response(status=status, text=json.dumps(body), headers=dict(headers))

    async def _astart(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self._port = int(runner.addresses[0][1])
        return runner

    def start(self) -> None:
        # authlib logs issued tokens at DEBUG; the tests capture every DEBUG record to prove that
        # the *operator* leaks nothing, and this stand-in for a remote server must not muddy that.
        authlib_log = logging.getLogger("authlib")
        self._authlib_log_level = authlib_log.level
        authlib_log.setLevel(logging.INFO)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner: web.AppRunner | None = None
            try:
                try:
                    runner = loop.run_until_complete(self._astart())
                except BaseException as exc:
                    errors.append(exc)
                    return
                finally:
                    started.set()
                loop.run_forever()
            finally:
                if runner is not None:
                    loop.run_until_complete(runner.cleanup())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="authlib-token-server", daemon=True)
        thread.start()
        # Generous: a loaded 2-core machine may take a while to start a thread and bind.
        if not started.wait(60):
            raise RuntimeError("the authlib token server did not start within 60 s")
        if errors:
            thread.join()
            raise errors[0]
        self._thread, self._loop = thread, loop

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(60)
        self._thread = self._loop = None
        self._port = None
        logging.getLogger("authlib").setLevel(self._authlib_log_level)

    def __enter__(self) -> AuthlibTokenServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
