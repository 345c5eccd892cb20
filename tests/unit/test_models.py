"""The pydantic models: spec validation the operator does itself, and the token response shapes.

``parse_duration`` and the CRD schema are covered in ``test_crd.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tokensync.models import (
    MAX_LIFETIME_SECONDS,
    PALISADE_TOKEN_URL,
    TOKEN_KEYS,
    ClientAuthentication,
    ClientCredentialSpec,
    DeletionPolicy,
    OAuth2TokenResponse,
    PalisadeTokenResponse,
    Provider,
    Target,
)

CREDS_REF = {"name": "creds"}


def spec(**fields: Any) -> ClientCredentialSpec:
    return ClientCredentialSpec.model_validate({"credentialsRef": CREDS_REF, **fields})


# Template keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("authorization", id="a plain word is a valid key"),
        pytest.param("config.json", id="a key with a dot is valid"),
        pytest.param("my-token_2", id="dashes underscores and digits are valid"),
        pytest.param("k" * 253, id="a key of 253 characters is valid"),
    ],
)
def test_valid_template_keys_are_accepted(key: str) -> None:
    parsed = spec(target={"template": {key: "Bearer ${accessToken}"}})
    assert parsed.target.template == {key: "Bearer ${accessToken}"}


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        pytest.param("has space", "not a valid Secret data key", id="a key with a space is rejected"),
        pytest.param("a/b", "not a valid Secret data key", id="a key with a slash is rejected"),
        pytest.param("", "not a valid Secret data key", id="an empty key is rejected"),
        pytest.param("k" * 254, "not a valid Secret data key", id="a key over 253 characters is rejected"),
        pytest.param("ключ", "not a valid Secret data key", id="a non-ASCII key is rejected"),
        *[
            pytest.param(reserved, "would replace a token key", id=f"the reserved key {reserved} is rejected")
            for reserved in TOKEN_KEYS
        ],
    ],
)
def test_invalid_template_keys_are_rejected(key: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(target={"template": {key: "x"}})
    assert complaint in str(info.value)


def test_the_template_key_check_also_runs_on_target_alone() -> None:
    with pytest.raises(ValidationError, match="would replace a token key"):
        Target.model_validate({"template": {"accessToken": "x"}})


# effective_token_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, PALISADE_TOKEN_URL, id="palisade without a tokenURL uses the Palisade endpoint"),
        pytest.param(
            {"tokenURL": "https://api.sandbox.palisade.co/v2/credentials/oauth/token"},
            "https://api.sandbox.palisade.co/v2/credentials/oauth/token",
            id="palisade with a tokenURL uses that URL",
        ),
        pytest.param(
            {"provider": "oauth2", "tokenURL": "https://auth.example.com/token"},
            "https://auth.example.com/token",
            id="oauth2 with a tokenURL uses that URL",
        ),
        pytest.param({"provider": "oauth2"}, None, id="oauth2 without a tokenURL has no URL"),
    ],
)
def test_effective_token_url(fields: dict[str, Any], expected: str | None) -> None:
    assert spec(**fields).effective_token_url() == expected


def test_a_plain_http_token_url_is_rejected() -> None:
    with pytest.raises(ValidationError):
        spec(tokenURL="http://auth.example.com/token")


# Aliases, names and unknown fields -----------------------------------------------------------


def test_camel_case_aliases_are_read() -> None:
    parsed = ClientCredentialSpec.model_validate(
        {
            "provider": "oauth2",
            "tokenURL": "https://auth.example.com/token",
            "credentialsRef": {"name": "creds", "clientIdKey": "id", "clientSecretKey": "secret"},
            "clientAuthentication": "post",
            "extraParams": {"resource": "api"},
            "target": {"deletionPolicy": "Retain"},
            "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}],
        }
    )
    assert parsed.provider is Provider.OAUTH2
    assert parsed.token_url == "https://auth.example.com/token"
    assert parsed.credentials_ref.client_id_key == "id"
    assert parsed.credentials_ref.client_secret_key == "secret"
    assert parsed.client_authentication is ClientAuthentication.POST
    assert parsed.extra_params == {"resource": "api"}
    assert parsed.target.deletion_policy is DeletionPolicy.RETAIN
    assert [(t.kind.value, t.name) for t in parsed.rollout_restart_targets] == [("Deployment", "web")]


def test_python_field_names_are_accepted_too() -> None:
    parsed = ClientCredentialSpec.model_validate(
        {
            "provider": "oauth2",
            "token_url": "https://auth.example.com/token",
            "credentials_ref": {"name": "creds", "client_id_key": "id"},
            "client_authentication": "post",
            "extra_params": {"resource": "api"},
        }
    )
    assert parsed.token_url == "https://auth.example.com/token"
    assert parsed.credentials_ref.client_id_key == "id"
    assert parsed.client_authentication is ClientAuthentication.POST
    assert parsed.extra_params == {"resource": "api"}


def test_dumping_by_alias_gives_the_camel_case_names_back() -> None:
    dumped = spec(tokenURL="https://auth.example.com/token").model_dump(by_alias=True, mode="json")
    assert dumped["tokenURL"] == "https://auth.example.com/token"
    assert dumped["credentialsRef"] == {"name": "creds", "clientIdKey": "clientId", "clientSecretKey": "clientSecret"}
    assert "token_url" not in dumped


def test_defaults_when_only_the_credentials_ref_is_given() -> None:
    parsed = spec()
    assert parsed.provider is Provider.PALISADE
    assert parsed.client_authentication is ClientAuthentication.BASIC
    assert parsed.target.deletion_policy is DeletionPolicy.DELETE
    assert parsed.credentials_ref.client_id_key == "clientId"
    assert parsed.credentials_ref.client_secret_key == "clientSecret"
    assert parsed.suspend is False
    assert parsed.target_name("my-resource") == "my-resource"
    assert spec(target={"name": "other"}).target_name("my-resource") == "other"


def test_unknown_fields_are_ignored_at_every_level() -> None:
    parsed = ClientCredentialSpec.model_validate(
        {
            "credentialsRef": {"name": "creds", "futureField": 1},
            "target": {"name": "tok", "somethingNew": True},
            "renewal": {"percent": 50, "jitter": "off"},
            "aFieldFromANewerCRD": {"x": 1},
        }
    )
    assert parsed.credentials_ref.name == "creds"
    assert parsed.target.name == "tok"
    assert parsed.renewal.percent == 50
    dumped = parsed.model_dump(by_alias=True)
    assert "aFieldFromANewerCRD" not in dumped
    assert "futureField" not in dumped["credentialsRef"]


def test_a_missing_credentials_ref_is_rejected() -> None:
    with pytest.raises(ValidationError, match="credentialsRef"):
        ClientCredentialSpec.model_validate({})


# Token responses -----------------------------------------------------------------------------

PALISADE_OK: dict[str, Any] = {
    "accessToken": "tok-abc",
    "scope": "balances:read",
    "expiresIn": 3600,
    "tokenType": "Bearer",
}


def test_a_palisade_response_is_parsed() -> None:
    parsed = PalisadeTokenResponse.model_validate({**PALISADE_OK, "extra": "ignored"})
    assert (parsed.access_token, parsed.scope, parsed.expires_in, parsed.token_type) == (
        "tok-abc",
        "balances:read",
        3600,
        "Bearer",
    )


def test_a_palisade_lifetime_of_exactly_the_maximum_is_accepted() -> None:
    assert PalisadeTokenResponse.model_validate({**PALISADE_OK, "expiresIn": MAX_LIFETIME_SECONDS}).expires_in == (
        MAX_LIFETIME_SECONDS
    )


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"expiresIn": True}, id="a boolean expiresIn is rejected"),
        pytest.param({"expiresIn": "3600"}, id="a string expiresIn is rejected"),
        pytest.param({"expiresIn": 3600.0}, id="a float expiresIn is rejected"),
        pytest.param({"expiresIn": None}, id="a null expiresIn is rejected"),
        pytest.param({"expiresIn": 0}, id="a zero expiresIn is rejected"),
        pytest.param({"expiresIn": -5}, id="a negative expiresIn is rejected"),
        pytest.param({"expiresIn": MAX_LIFETIME_SECONDS + 1}, id="an expiresIn over a year is rejected"),
        pytest.param({"expiresIn": 10**30}, id="a huge expiresIn is rejected"),
        pytest.param({"accessToken": ""}, id="an empty accessToken is rejected"),
        pytest.param({"tokenType": ""}, id="an empty tokenType is rejected"),
    ],
)
def test_bad_palisade_responses_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PalisadeTokenResponse.model_validate({**PALISADE_OK, **change})


@pytest.mark.parametrize(
    "missing", sorted(PALISADE_OK), ids=lambda key: f"a palisade response without {key} is rejected"
)
def test_every_palisade_field_is_required(missing: str) -> None:
    body = {k: v for k, v in PALISADE_OK.items() if k != missing}
    with pytest.raises(ValidationError):
        PalisadeTokenResponse.model_validate(body)


OAUTH2_OK: dict[str, Any] = {"access_token": "tok-abc", "token_type": "Bearer", "expires_in": 3600, "scope": "a b"}


def test_an_oauth2_response_without_scope_gets_an_empty_scope() -> None:
    body = {k: v for k, v in OAUTH2_OK.items() if k != "scope"}
    parsed = OAuth2TokenResponse.model_validate(body)
    assert parsed.scope == ""
    assert parsed.access_token == "tok-abc"


def test_an_oauth2_response_without_expires_in_parses_with_no_lifetime() -> None:
    body = {k: v for k, v in OAUTH2_OK.items() if k != "expires_in"}
    assert OAuth2TokenResponse.model_validate(body).expires_in is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({k: v for k, v in OAUTH2_OK.items() if k != "token_type"}, id="a missing token_type is rejected"),
        pytest.param({k: v for k, v in OAUTH2_OK.items() if k != "access_token"}, id="a missing token is rejected"),
        pytest.param({**OAUTH2_OK, "access_token": ""}, id="an empty access_token is rejected"),
        pytest.param({**OAUTH2_OK, "expires_in": 0}, id="a zero expires_in is rejected"),
        pytest.param({**OAUTH2_OK, "expires_in": MAX_LIFETIME_SECONDS + 1}, id="an expires_in over a year is rejected"),
    ],
)
def test_bad_oauth2_responses_are_rejected(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OAuth2TokenResponse.model_validate(body)
