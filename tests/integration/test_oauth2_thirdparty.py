"""The oauth2 dialect against an authorization server we did not write: authlib's, over HTTPS.

``oauth2_server.AuthlibTokenServer`` is authlib's ``AuthorizationServer`` with its
``ClientCredentialsGrant``: client authentication (``client_secret_basic`` with RFC 6749 §2.3.1
form-decoding, ``client_secret_post``), scope checks, RFC 9068 JWT access tokens and the RFC 6749
§5.2 error answers are authlib's. Each behaviour is checked twice: through ``exchange()`` alone,
and end to end with the real operator against the Kubernetes API stand-in (status, Secret,
and what the server saw), never with a secret or a token in logs, status or events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt

from tokensync.core import parse_rfc3339
from tokensync.exchange import (
    ClientCredentials,
    EndpointRejectedError,
    InvalidResponseError,
    IssuedToken,
    exchange,
    secret_forms,
    ssl_context,
)
from tokensync.models import ClientCredentialSpec, LifetimeSource, Reason

from .conftest import NAMESPACE, Api, LogCapture, OperatorRunner, assert_clean, eventually
from .oauth2_server import BASIC, POST, AuthlibTokenServer, Registration

ALLOWED = ("127.0.0.1", "localhost")
CA_CONFIGMAP = "idp-ca"
LIFETIME = 3600
#: Generous: a loaded 2-core machine runs other suites beside this one.
WAIT = 60.0

#: Needs form-encoding before the Basic encoding (RFC 6749 §2.3.1): ':' '+' '/' '='.
BASIC_SECRET = "Sp3c:al+Secret/="
READ, WRITE, ADMIN = "payments:read", "payments:write", "admin"
AUDIENCE = "https://payments.example.com"
RESOURCE = "https://payments.example.com/api/"

BASIC_CLIENT = Registration("basic-client", BASIC_SECRET, BASIC, scopes=(READ, WRITE))
POST_CLIENT = Registration("post-client", "p0st-S3cret-9d1e77a4", POST, scopes=(READ,))
JWT_CLIENT = Registration(
    "jwt-client", "jwt-S3cret-4b7a0c2e", POST, scopes=(READ,), token_format="jwt", send_expires_in=False
)
OPAQUE_NO_EXPIRY = Registration("opaque-client", "0paque-S3cret-2c8f51d0", BASIC, send_expires_in=False)
#: Registered for the authorization-code grant only: client_credentials is unauthorized_client.
CODE_ONLY = Registration("code-only-client", "c0de-S3cret-6a0d93b5", BASIC, grant_types=("authorization_code",))
#: A client id with ':' and a secret with '%': sent without form-encoding, authlib reads them differently.
URN_CLIENT = Registration("urn:example:basic-client", "100%:Sp3c+/=", BASIC, scopes=(READ, WRITE))
#: Makes ADMIN a scope the server knows, so asking for it is a per-client refusal.
ADMIN_CLIENT = Registration("admin-client", "adm1n-S3cret-1f4e8b27", BASIC, scopes=(ADMIN,))
CLIENTS = (BASIC_CLIENT, URN_CLIENT, POST_CLIENT, JWT_CLIENT, OPAQUE_NO_EXPIRY, CODE_ONLY, ADMIN_CLIENT)
WRONG_SECRET = "wr0ng:S3cret+7e2d/="


@pytest.fixture
def idp() -> Iterator[AuthlibTokenServer]:
    with AuthlibTokenServer(CLIENTS, lifetime=LIFETIME) as server:
        yield server


def spec_for(server: AuthlibTokenServer, credentials: str, **fields: Any) -> dict[str, Any]:
    return {
        "provider": "oauth2",
        "tokenURL": server.token_url,
        "credentialsRef": {"name": credentials},
        "caBundleRef": {"kind": "ConfigMap", "name": CA_CONFIGMAP, "key": "ca.crt"},
        **fields,
    }


def leak_forms(client_id: str, secret: str) -> tuple[str, ...]:
    """The secret as is and in every encoding a request carries it (the Basic header's base64 too)."""
    return secret_forms(ClientCredentials(client_id, secret))


def jwt_claims(server: AuthlibTokenServer, token: str) -> dict[str, Any]:
    """The claims of a JWT the server issued, its RS256 signature verified with the server's key."""
    decoded = jwt.decode(token, server.jwt_key, algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"
    return dict(decoded.claims)


# (a) exchange() against the server ------------------------------------------------------------


async def run_exchange(server: AuthlibTokenServer, client_id: str, secret: str, **fields: Any) -> IssuedToken:
    """``exchange()`` with a spec of ``fields``, over HTTPS trusting the server's CA as caBundleRef would."""
    spec = ClientCredentialSpec.model_validate(spec_for(server, "unused", **fields))
    async with httpx.AsyncClient(verify=ssl_context(server.ca_pem), trust_env=False) as client:
        return await exchange(
            client, spec, server.token_url, ClientCredentials(client_id, secret), allowed_hosts=ALLOWED
        )


@pytest.mark.parametrize("registration", [BASIC_CLIENT, URN_CLIENT], ids=lambda r: r.client_id)
async def test_exchange_client_secret_basic_form_encodes_id_and_secret(
    idp: AuthlibTokenServer, registration: Registration
) -> None:
    issued = await run_exchange(
        idp, registration.client_id, registration.client_secret, clientAuthentication="basic", scopes=[READ, WRITE]
    )

    assert [i.access_token for i in idp.issued] == [issued.access_token]
    assert issued.token_type == "Bearer"
    assert issued.expires_in == LIFETIME
    assert issued.lifetime_source is LifetimeSource.EXPIRES_IN
    assert issued.scope == f"{READ} {WRITE}"
    (seen,) = idp.requests
    assert (seen.status, seen.client_id, seen.auth_method) == (200, registration.client_id, "client_secret_basic")
    assert seen.form == {"grant_type": "client_credentials", "scope": f"{READ} {WRITE}"}  # no client_id in the body


async def test_the_server_refuses_a_basic_header_that_is_not_form_encoded(idp: AuthlibTokenServer) -> None:
    """The control for the test above: the encoding is what makes URN_CLIENT's exchange work."""
    raw = f"{URN_CLIENT.client_id}:{URN_CLIENT.client_secret}".encode()
    async with httpx.AsyncClient(verify=ssl_context(idp.ca_pem), trust_env=False) as client:
        response = await client.post(
            idp.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_exchange_client_secret_post_sends_the_credentials_in_the_form(idp: AuthlibTokenServer) -> None:
    issued = await run_exchange(idp, POST_CLIENT.client_id, POST_CLIENT.client_secret, clientAuthentication="post")

    assert [i.access_token for i in idp.issued] == [issued.access_token]
    assert issued.expires_in == LIFETIME
    (seen,) = idp.requests
    assert (seen.status, seen.client_id, seen.auth_method) == (200, POST_CLIENT.client_id, "client_secret_post")
    assert seen.form["client_id"] == POST_CLIENT.client_id


async def test_exchange_sends_audience_and_extra_params_such_as_resource(idp: AuthlibTokenServer) -> None:
    await run_exchange(
        idp,
        BASIC_CLIENT.client_id,
        BASIC_SECRET,
        scopes=[READ],
        audience=AUDIENCE,
        extraParams={"resource": RESOURCE},
    )

    (seen,) = idp.requests
    assert seen.status == 200
    assert seen.form == {"grant_type": "client_credentials", "scope": READ, "audience": AUDIENCE, "resource": RESOURCE}


ERROR_CASES = [
    pytest.param(
        BASIC_CLIENT.client_id,
        WRONG_SECRET,
        {"clientAuthentication": "basic"},
        "invalid_client",
        401,
        Reason.INVALID_CREDENTIALS,
        id="wrong-secret-invalid_client",
    ),
    pytest.param(
        POST_CLIENT.client_id,
        POST_CLIENT.client_secret,
        {"clientAuthentication": "basic"},
        "invalid_client",
        401,
        Reason.INVALID_CREDENTIALS,
        id="unregistered-auth-method-invalid_client",
    ),
    pytest.param(
        BASIC_CLIENT.client_id,
        BASIC_SECRET,
        {"scopes": [READ, ADMIN]},
        "invalid_scope",
        400,
        Reason.INVALID_REQUEST,
        id="scope-not-allowed-invalid_scope",
    ),
    pytest.param(
        CODE_ONLY.client_id,
        CODE_ONLY.client_secret,
        {},
        "unauthorized_client",
        400,
        Reason.FORBIDDEN,
        id="grant-not-allowed-unauthorized_client",
    ),
]


@pytest.mark.parametrize(("client_id", "secret", "fields", "error", "http_status", "reason"), ERROR_CASES)
async def test_exchange_classifies_the_servers_error_answers(
    idp: AuthlibTokenServer,
    client_id: str,
    secret: str,
    fields: dict[str, Any],
    error: str,
    http_status: int,
    reason: Reason,
) -> None:
    with pytest.raises(EndpointRejectedError) as info:
        await run_exchange(idp, client_id, secret, **fields)

    failure = info.value
    (seen,) = idp.requests
    assert (seen.status, seen.error) == (http_status, error)  # what authlib answered
    assert failure.reason is reason
    assert failure.http_status == http_status
    assert error in str(failure)
    assert idp.issued == []
    for form in leak_forms(client_id, secret):
        assert form not in str(failure)
        assert form not in repr(failure)


async def test_exchange_takes_a_jwt_access_tokens_lifetime_from_its_exp_claim(idp: AuthlibTokenServer) -> None:
    issued = await run_exchange(idp, JWT_CLIENT.client_id, JWT_CLIENT.client_secret, clientAuthentication="post")

    (seen,) = idp.requests
    assert seen.status == 200
    assert "expires_in" not in seen.response_keys
    claims = jwt_claims(idp, issued.access_token)
    assert claims["client_id"] == JWT_CLIENT.client_id
    assert issued.lifetime_source is LifetimeSource.JWT
    assert issued.expires_at_epoch == claims["exp"]
    assert LIFETIME - 30 <= issued.expires_in <= LIFETIME


async def test_exchange_without_expires_in_or_jwt_needs_a_default_lifetime(idp: AuthlibTokenServer) -> None:
    with pytest.raises(InvalidResponseError) as info:
        await run_exchange(idp, OPAQUE_NO_EXPIRY.client_id, OPAQUE_NO_EXPIRY.client_secret)
    assert "defaultLifetime" in str(info.value)
    assert "expires_in" in str(info.value)
    (token,) = idp.tokens()
    assert token not in str(info.value)

    issued = await run_exchange(idp, OPAQUE_NO_EXPIRY.client_id, OPAQUE_NO_EXPIRY.client_secret, defaultLifetime="10m")
    assert "expires_in" not in idp.requests[-1].response_keys
    assert issued.lifetime_source is LifetimeSource.DEFAULT
    assert issued.expires_in == 600


# (b) end to end: the real operator ------------------------------------------------------------


@pytest.fixture
def idp_api(api: Api, idp: AuthlibTokenServer) -> Api:
    """The API stand-in with the ConfigMap that holds the authorization server's CA."""
    api.put_configmap(CA_CONFIGMAP, {"ca.crt": idp.ca_pem})
    return api


def credentials_for(api: Api, name: str, client_id: str, secret: str) -> str:
    """The credentials Secret for ClientCredential ``name`` (its token goes to a Secret called ``name``)."""
    api.put_secret(f"{name}-credentials", {"clientId": client_id, "clientSecret": secret})
    return f"{name}-credentials"


def has_condition(api: Api, name: str, type_: str, status: str, reason: str | None = None) -> bool:
    found = api.condition(name, type_)
    return found.get("status") == status and (reason is None or found.get("reason") == reason)


async def wait_for(api: Api, name: str, type_: str, status: str, reason: str) -> None:
    """Until the condition holds; on a timeout, the failure shows the resource's status."""
    try:
        await eventually(lambda: has_condition(api, name, type_, status, reason), timeout=WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{name}: {type_}={status} ({reason}) not reached; status: {api.status(name)}") from exc


def assert_nothing_leaked(api: Api, logs: LogCapture, server: AuthlibTokenServer) -> None:
    """No client secret (in any encoding) and no issued token in logs, status or events."""
    secrets = [form for c in CLIENTS for form in leak_forms(c.client_id, c.client_secret)]
    secrets += [form for c in CLIENTS for form in leak_forms(c.client_id, WRONG_SECRET)]
    tokens = list(server.tokens())
    assert_clean(logs, *secrets, *tokens)
    visible = json.dumps(
        [
            *(o.get("status") for o in api.cluster.list("tokensync.io/v1alpha1", "clientcredentials", NAMESPACE)),
            *api.events(),
        ]
    )
    for value in (*secrets, *tokens):
        assert value not in visible, "a secret or a token reached status or events"


@pytest.mark.parametrize("registration", [BASIC_CLIENT, URN_CLIENT], ids=lambda r: r.client_id)
async def test_operator_client_secret_basic_with_scopes_audience_and_resource(
    idp_api: Api, idp: AuthlibTokenServer, operator: OperatorRunner, logs: LogCapture, registration: Registration
) -> None:
    credentials = credentials_for(idp_api, "idp-basic", registration.client_id, registration.client_secret)
    idp_api.create_cc(
        "idp-basic",
        spec_for(
            idp,
            credentials,
            clientAuthentication="basic",
            scopes=[READ, WRITE],
            audience=AUDIENCE,
            extraParams={"resource": RESOURCE},
        ),
    )

    await wait_for(idp_api, "idp-basic", "Ready", "True", "TokenIssued")
    (issued,) = idp.issued
    data = idp_api.secret_data("idp-basic")
    assert data["accessToken"] == issued.access_token
    assert data["tokenType"] == "Bearer"
    assert data["scope"] == f"{READ} {WRITE}"
    status = idp_api.status("idp-basic")
    assert status["scope"] == f"{READ} {WRITE}"
    assert status["lifetimeSource"] == "ExpiresIn"
    lifetime = parse_rfc3339(status["expiresAt"]) - parse_rfc3339(status["issuedAt"])
    assert abs(lifetime - timedelta(seconds=LIFETIME)) <= timedelta(seconds=1)

    (seen,) = idp.requests
    assert (seen.status, seen.client_id, seen.auth_method) == (200, registration.client_id, "client_secret_basic")
    assert seen.form == {
        "grant_type": "client_credentials",
        "scope": f"{READ} {WRITE}",
        "audience": AUDIENCE,
        "resource": RESOURCE,
    }
    assert_nothing_leaked(idp_api, logs, idp)


async def test_operator_client_secret_post(
    idp_api: Api, idp: AuthlibTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    credentials = credentials_for(idp_api, "idp-post", POST_CLIENT.client_id, POST_CLIENT.client_secret)
    idp_api.create_cc("idp-post", spec_for(idp, credentials, clientAuthentication="post", scopes=[READ]))

    await wait_for(idp_api, "idp-post", "Ready", "True", "TokenIssued")
    (issued,) = idp.issued
    assert idp_api.secret_data("idp-post")["accessToken"] == issued.access_token
    assert idp_api.secret_data("idp-post")["scope"] == READ
    assert idp_api.status("idp-post")["scope"] == READ
    (seen,) = idp.requests
    assert (seen.status, seen.client_id, seen.auth_method) == (200, POST_CLIENT.client_id, "client_secret_post")
    assert seen.form == {"grant_type": "client_credentials", "scope": READ, "client_id": POST_CLIENT.client_id}
    assert_nothing_leaked(idp_api, logs, idp)


@pytest.mark.parametrize(("client_id", "secret", "fields", "error", "http_status", "reason"), ERROR_CASES)
async def test_operator_reports_the_servers_error_answers_and_stalls(
    idp_api: Api,
    idp: AuthlibTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    client_id: str,
    secret: str,
    fields: dict[str, Any],
    error: str,
    http_status: int,
    reason: Reason,
) -> None:
    credentials = credentials_for(idp_api, "rejected", client_id, secret)
    idp_api.create_cc("rejected", spec_for(idp, credentials, **fields))

    await wait_for(idp_api, "rejected", "Ready", "False", reason.value)
    assert has_condition(idp_api, "rejected", "Stalled", "True", reason.value)
    failure = idp_api.status("rejected")["lastFailure"]
    assert failure["reason"] == reason.value
    assert failure["httpStatus"] == http_status
    assert error in failure["message"]
    assert idp_api.secret("rejected") is None
    assert idp.issued == []
    assert [(r.status, r.error) for r in idp.requests] == [(http_status, error)]  # stalled: no quick retry
    assert_nothing_leaked(idp_api, logs, idp)


async def test_operator_takes_a_jwt_access_tokens_lifetime_from_its_exp_claim(
    idp_api: Api, idp: AuthlibTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    credentials = credentials_for(idp_api, "idp-jwt", JWT_CLIENT.client_id, JWT_CLIENT.client_secret)
    idp_api.create_cc("idp-jwt", spec_for(idp, credentials, clientAuthentication="post", scopes=[READ]))

    await wait_for(idp_api, "idp-jwt", "Ready", "True", "TokenIssued")
    (seen,) = idp.requests
    assert "expires_in" not in seen.response_keys
    (issued,) = idp.issued
    assert idp_api.secret_data("idp-jwt")["accessToken"] == issued.access_token
    exp = jwt_claims(idp, issued.access_token)["exp"]
    status = idp_api.status("idp-jwt")
    assert status.get("lifetimeSource") == "JWT"
    assert int(parse_rfc3339(status["expiresAt"]).timestamp()) == exp
    assert int(parse_rfc3339(idp_api.secret_data("idp-jwt")["expiresAt"]).timestamp()) == exp
    assert_nothing_leaked(idp_api, logs, idp)


async def test_operator_needs_a_default_lifetime_for_an_opaque_token_without_expires_in(
    idp_api: Api, idp: AuthlibTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    credentials = credentials_for(idp_api, "idp-opaque", OPAQUE_NO_EXPIRY.client_id, OPAQUE_NO_EXPIRY.client_secret)
    idp_api.create_cc("idp-opaque", spec_for(idp, credentials))

    await wait_for(idp_api, "idp-opaque", "Ready", "False", "InvalidResponse")
    failure = idp_api.status("idp-opaque")["lastFailure"]
    assert failure["reason"] == "InvalidResponse"
    assert "defaultLifetime" in failure["message"]
    assert "expires_in" in failure["message"]
    assert idp_api.secret("idp-opaque") is None

    # The remedy the message names: a default lifetime.
    idp_api.patch_cc("idp-opaque", {"spec": {"defaultLifetime": "10m"}})
    await wait_for(idp_api, "idp-opaque", "Ready", "True", "TokenIssued")
    status = idp_api.status("idp-opaque")
    assert status.get("lifetimeSource") == "Default"
    lifetime = parse_rfc3339(status["expiresAt"]) - parse_rfc3339(status["issuedAt"])
    assert abs(lifetime - timedelta(minutes=10)) <= timedelta(seconds=1)
    assert idp_api.secret_data("idp-opaque")["accessToken"] == idp.issued[-1].access_token
    assert "expires_in" not in idp.requests[-1].response_keys
    assert_nothing_leaked(idp_api, logs, idp)
