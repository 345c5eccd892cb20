"""The target Secret: fingerprints, rendering, reading back, ownership, patches and the one writer.

Everything but ``apply_secret()`` is pure; ``apply_secret()`` runs against ``FakeKube``, a small
in-memory stand-in that honours create (AlreadyExists) and resourceVersion preconditions the
way the API server does, and can be told to fail or to let "someone else" change the Secret
just before a write.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tokensync import models
from tokensync.dev.cluster import merge_patch  # the stand-in applies patches as the API server does
from tokensync.exchange import ClientCredentials
from tokensync.kubeapi import KubeError
from tokensync.models import ClientCredentialSpec, DeletionPolicy, Target
from tokensync.secrets import (
    ANNOTATION_CREDENTIALS_HASH,
    ANNOTATION_EXPIRES_AT,
    ANNOTATION_ISSUED_AT,
    ANNOTATION_MANAGED_METADATA,
    ANNOTATION_OWNER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    Owner,
    Ownership,
    SecretConflictError,
    StoredToken,
    apply_secret,
    fingerprint,
    ownership,
    read_token,
    release_patch,
    render_secret,
    secret_patch,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
URL = "https://auth.example.com/oauth2/token"
CLIENT_SECRET = "s3cr3t-Zq9Kx7Wm"
CREDS = ClientCredentials("client-1234", CLIENT_SECRET)
ACCESS_TOKEN = "tok-ACCESS-7f3e9a1c55d0"
FP = "f" * 32

OWNER = Owner(f"{models.GROUP}/{models.VERSION}", models.KIND, "palisade", "team-a", "uid-1111")
OTHER_OWNER_REF = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "something-else",
    "uid": "uid-other",
}


def make_spec(**fields: Any) -> ClientCredentialSpec:
    return ClientCredentialSpec.model_validate({"credentialsRef": {"name": "creds"}, **fields})


def oauth2_spec(**fields: Any) -> ClientCredentialSpec:
    base: dict[str, Any] = {
        "provider": "oauth2",
        "tokenURL": URL,
        "scopes": ["read", "write"],
        "audience": "https://api.example.com",
        "clientAuthentication": "basic",
        "extraParams": {"resource": "api"},
    }
    return make_spec(**{**base, **fields})


def make_token(**changes: Any) -> StoredToken:
    fields: dict[str, Any] = {
        "access_token": ACCESS_TOKEN,
        "token_type": "Bearer",
        "scope": "balances:read",
        "issued_at": T0,
        "expires_at": T0 + HOUR,
        "fingerprint": FP,
    }
    return StoredToken(**{**fields, **changes})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: unb64(value) for key, value in secret["data"].items()}


def with_template(spec: ClientCredentialSpec, template: dict[str, str]) -> ClientCredentialSpec:
    """A spec whose template skipped validation (as if the API server's CEL rules were off)."""
    target = Target.model_construct(
        name=None, labels={}, annotations={}, template=template, deletion_policy=DeletionPolicy.DELETE
    )
    return spec.model_copy(update={"target": target})


def live(secret: dict[str, Any], version: str = "5") -> dict[str, Any]:
    """``secret`` as the API server returns it: with a resourceVersion and server-set fields."""
    result = copy.deepcopy(secret)
    result["metadata"].update(
        {"resourceVersion": version, "uid": "secret-uid", "creationTimestamp": "2030-01-01T00:00:00Z"}
    )
    return result


# fingerprint() -------------------------------------------------------------------------------

KEY = b"k" * 32
BASE_FINGERPRINT = fingerprint(oauth2_spec(), URL, CREDS, KEY)


@pytest.mark.parametrize(
    ("spec", "url", "credentials"),
    [
        pytest.param(oauth2_spec(), "https://auth.example.com/v2/token", CREDS, id="another token URL changes it"),
        pytest.param(oauth2_spec(provider="palisade"), URL, CREDS, id="another provider with the same URL changes it"),
        pytest.param(
            oauth2_spec(), URL, ClientCredentials("client-5678", CLIENT_SECRET), id="another client ID changes it"
        ),
        pytest.param(oauth2_spec(), URL, ClientCredentials("client-1234", "rotated"), id="a rotated secret changes it"),
        pytest.param(oauth2_spec(scopes=["read"]), URL, CREDS, id="fewer scopes change it"),
        pytest.param(oauth2_spec(scopes=[]), URL, CREDS, id="no scopes change it"),
        pytest.param(oauth2_spec(audience="https://other.example.com"), URL, CREDS, id="another audience changes it"),
        pytest.param(oauth2_spec(audience=None), URL, CREDS, id="dropping the audience changes it"),
        pytest.param(
            oauth2_spec(clientAuthentication="post"), URL, CREDS, id="another client authentication changes it"
        ),
        pytest.param(
            oauth2_spec(extraParams={"resource": "other"}), URL, CREDS, id="another extra param value changes it"
        ),
        pytest.param(oauth2_spec(extraParams={}), URL, CREDS, id="dropping the extra params changes it"),
    ],
)
def test_fingerprint_changes_with_what_determines_the_token(
    spec: ClientCredentialSpec, url: str, credentials: ClientCredentials
) -> None:
    assert fingerprint(spec, url, credentials, KEY) != BASE_FINGERPRINT


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(oauth2_spec(target={"labels": {"team": "a"}}), id="target labels do not change it"),
        pytest.param(oauth2_spec(target={"annotations": {"note": "x"}}), id="target annotations do not change it"),
        pytest.param(oauth2_spec(target={"template": {"auth": "Bearer ${accessToken}"}}), id="a template does not"),
        pytest.param(oauth2_spec(target={"name": "elsewhere"}), id="the target name does not change it"),
        pytest.param(oauth2_spec(target={"deletionPolicy": "Retain"}), id="the deletion policy does not change it"),
        pytest.param(oauth2_spec(renewal={"percent": 50}), id="a renewal percentage does not change it"),
        pytest.param(oauth2_spec(renewal={"before": "10m"}), id="a renewal before does not change it"),
        pytest.param(oauth2_spec(suspend=True), id="suspend does not change it"),
        pytest.param(
            oauth2_spec(credentialsRef={"name": "other-secret", "clientIdKey": "id"}),
            id="another credentials Secret holding the same values does not change it",
        ),
        pytest.param(
            oauth2_spec(rolloutRestartTargets=[{"kind": "Deployment", "name": "web"}]),
            id="rollout restart targets do not change it",
        ),
    ],
)
def test_fingerprint_ignores_cosmetic_spec_fields(spec: ClientCredentialSpec) -> None:
    assert fingerprint(spec, URL, CREDS, KEY) == BASE_FINGERPRINT


def test_fingerprint_is_stable_and_short_hex() -> None:
    assert fingerprint(oauth2_spec(), URL, ClientCredentials("client-1234", CLIENT_SECRET), KEY) == BASE_FINGERPRINT
    assert len(BASE_FINGERPRINT) == 32
    int(BASE_FINGERPRINT, 16)  # hex only


def test_fingerprint_never_contains_the_secret_or_the_client_id() -> None:
    # A hex-looking secret too: a fingerprint that merely encoded its input would show it.
    for secret in (CLIENT_SECRET, "deadbeefcafe0123456789"):
        value = fingerprint(oauth2_spec(), URL, ClientCredentials("client-1234", secret), KEY)
        for leak in (secret, secret.encode().hex(), b64(secret), "client-1234"):
            assert leak not in value


def test_fingerprint_is_keyed_so_a_reader_cannot_test_guesses_offline() -> None:
    # Without the key, hashing a guessed secret the way the operator does gives another value.
    assert fingerprint(oauth2_spec(), URL, CREDS, b"another key" * 3) != BASE_FINGERPRINT
    guess = ClientCredentials("client-1234", CLIENT_SECRET)
    unkeyed = hashlib.sha256(json.dumps(sorted(vars(guess).items())).encode()).hexdigest()[:32]
    assert unkeyed != BASE_FINGERPRINT


# render_secret() -----------------------------------------------------------------------------


def test_render_secret_shape() -> None:
    secret = render_secret(OWNER, make_spec(), make_token())
    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "palisade"
    assert secret["metadata"]["namespace"] == "team-a"


def test_render_secret_uses_the_target_name_when_set() -> None:
    secret = render_secret(OWNER, make_spec(target={"name": "palisade-token"}), make_token())
    assert secret["metadata"]["name"] == "palisade-token"
    assert secret["metadata"]["namespace"] == "team-a"


def test_render_secret_data_is_base64_of_the_token_fields() -> None:
    secret = render_secret(OWNER, make_spec(), make_token())
    assert secret["data"] == {
        "accessToken": b64(ACCESS_TOKEN),
        "tokenType": b64("Bearer"),
        "expiresAt": b64("2030-01-01T13:00:00Z"),
        "scope": b64("balances:read"),
    }


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [
        pytest.param(T0 + HOUR, "2030-01-01T13:00:00Z", id="a UTC time is written with a Z"),
        pytest.param(T0 + HOUR + timedelta(microseconds=999_999), "2030-01-01T13:00:00Z", id="microseconds are cut"),
        pytest.param(
            datetime(2030, 1, 1, 15, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=2))),
            "2030-01-01T13:00:00Z",
            id="another time zone is converted to UTC",
        ),
    ],
)
def test_expires_at_is_rfc3339_utc_whole_seconds(expires_at: datetime, expected: str) -> None:
    secret = render_secret(OWNER, make_spec(), make_token(expires_at=expires_at))
    assert unb64(secret["data"]["expiresAt"]) == expected
    assert secret["metadata"]["annotations"][ANNOTATION_EXPIRES_AT] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Bearer ${accessToken}", f"Bearer {ACCESS_TOKEN}", id="the access token is substituted"),
        pytest.param("${tokenType} ${accessToken}", f"Bearer {ACCESS_TOKEN}", id="two placeholders are substituted"),
        pytest.param("${expiresAt}", "2030-01-01T13:00:00Z", id="the expiry is substituted in RFC 3339"),
        pytest.param("scope=${scope}", "scope=balances:read", id="the scope is substituted"),
        pytest.param("${unknown}", "${unknown}", id="an unknown placeholder is left as is"),
        pytest.param("$${accessToken}", "${accessToken}", id="a doubled dollar escapes a placeholder"),
        pytest.param("cost: $$5", "cost: $5", id="a doubled dollar becomes one dollar"),
        pytest.param("price $", "price $", id="a lone trailing dollar is left as is"),
        pytest.param("{accessToken}", "{accessToken}", id="format-style braces are not a placeholder"),
        pytest.param("%(accessToken)s", "%(accessToken)s", id="percent-style formatting is not applied"),
        pytest.param("{{ 7*7 }}", "{{ 7*7 }}", id="a Jinja-style expression is not evaluated"),
        pytest.param("${accessToken.__class__}", "${accessToken.__class__}", id="attribute access is not evaluated"),
        pytest.param(
            "${__import__('os').getcwd()}", "${__import__('os').getcwd()}", id="a Python expression is not evaluated"
        ),
        pytest.param("no placeholders", "no placeholders", id="plain text is copied"),
    ],
)
def test_template_rendering(text: str, expected: str) -> None:
    secret = render_secret(OWNER, make_spec(target={"template": {"rendered": text}}), make_token())
    assert decoded(secret)["rendered"] == expected


def test_template_keys_sit_next_to_the_token_keys() -> None:
    spec = make_spec(target={"template": {"authorization": "Bearer ${accessToken}", "config.json": "{}"}})
    assert sorted(render_secret(OWNER, spec, make_token())["data"]) == [
        "accessToken",
        "authorization",
        "config.json",
        "expiresAt",
        "scope",
        "tokenType",
    ]


@pytest.mark.parametrize("key", list(models.TOKEN_KEYS), ids=lambda key: f"a template cannot overwrite {key}")
def test_a_template_cannot_overwrite_a_token_key_even_if_validation_was_skipped(key: str) -> None:
    spec = with_template(make_spec(), {key: "evil", "extra": "${tokenType}"})
    data = decoded(render_secret(OWNER, spec, make_token()))
    assert data[key] != "evil"
    assert data["accessToken"] == ACCESS_TOKEN
    assert data["extra"] == "Bearer"


def test_labels_hold_the_managed_by_label_and_the_users_labels() -> None:
    secret = render_secret(OWNER, make_spec(target={"labels": {"team": "a", "tier": "gold"}}), make_token())
    assert secret["metadata"]["labels"] == {"team": "a", "tier": "gold", MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def test_the_user_cannot_override_the_managed_by_label() -> None:
    secret = render_secret(OWNER, make_spec(target={"labels": {MANAGED_BY_LABEL: "helm"}}), make_token())
    assert secret["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY_VALUE


def test_annotations_hold_owner_times_hash_and_the_users_annotations() -> None:
    token = make_token(issued_at=T0 + timedelta(microseconds=5), expires_at=T0 + HOUR)
    secret = render_secret(OWNER, make_spec(target={"annotations": {"note": "hello"}}), token)
    assert secret["metadata"]["annotations"] == {
        "note": "hello",
        "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
        "argocd.argoproj.io/sync-options": "Prune=false",
        "kustomize.toolkit.fluxcd.io/prune": "disabled",
        ANNOTATION_OWNER: "team-a/palisade",
        ANNOTATION_ISSUED_AT: "2030-01-01T12:00:00Z",
        ANNOTATION_EXPIRES_AT: "2030-01-01T13:00:00Z",
        ANNOTATION_CREDENTIALS_HASH: FP,
        "tokensync.io/lifetime-source": "ExpiresIn",
        ANNOTATION_MANAGED_METADATA: '{"labels":[],"annotations":["argocd.argoproj.io/compare-options",'
        '"argocd.argoproj.io/sync-options","kustomize.toolkit.fluxcd.io/prune","note"]}',
    }


def test_the_user_can_override_the_gitops_annotations() -> None:
    spec = make_spec(target={"annotations": {"argocd.argoproj.io/sync-options": "Prune=true"}})
    annotations = render_secret(OWNER, spec, make_token())["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/sync-options"] == "Prune=true"
    assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "disabled"


def test_the_user_cannot_override_tokensync_annotations() -> None:
    forged = {ANNOTATION_OWNER: "other/ns", ANNOTATION_CREDENTIALS_HASH: "forged", ANNOTATION_ISSUED_AT: "never"}
    annotations = render_secret(OWNER, make_spec(target={"annotations": forged}), make_token())["metadata"][
        "annotations"
    ]
    assert annotations[ANNOTATION_OWNER] == "team-a/palisade"
    assert annotations[ANNOTATION_CREDENTIALS_HASH] == FP
    assert annotations[ANNOTATION_ISSUED_AT] == "2030-01-01T12:00:00Z"


def test_the_token_is_only_in_data() -> None:
    secret = render_secret(OWNER, make_spec(target={"labels": {"a": "b"}}), make_token())
    assert ACCESS_TOKEN not in repr(secret["metadata"])
    assert ACCESS_TOKEN not in repr(make_token())


def test_delete_policy_sets_a_controller_owner_reference() -> None:
    secret = render_secret(OWNER, make_spec(target={"deletionPolicy": "Delete"}), make_token())
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tokensync.io/v1alpha1",
            "kind": "ClientCredential",
            "name": "palisade",
            "uid": "uid-1111",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_retain_policy_sets_no_owner_reference() -> None:
    secret = render_secret(OWNER, make_spec(target={"deletionPolicy": "Retain"}), make_token())
    assert "ownerReferences" not in secret["metadata"]


# read_token() --------------------------------------------------------------------------------


def test_read_token_round_trips_render_secret() -> None:
    token = make_token(scope="a b", token_type="DPoP")
    spec = make_spec(target={"template": {"x": "${accessToken}"}})
    assert read_token(live(render_secret(OWNER, spec, token))) == token


def test_read_token_gives_whole_seconds_back() -> None:
    token = make_token(issued_at=T0 + timedelta(microseconds=7), expires_at=T0 + HOUR + timedelta(microseconds=9))
    read = read_token(render_secret(OWNER, make_spec(), token))
    assert read is not None
    assert (read.issued_at, read.expires_at) == (T0, T0 + HOUR)
    assert read.issued_at.tzinfo is not None


def test_read_token_treats_a_missing_scope_as_empty() -> None:
    secret = render_secret(OWNER, make_spec(), make_token())
    del secret["data"]["scope"]
    read = read_token(secret)
    assert read is not None
    assert read.scope == ""


def _damage(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    secret = render_secret(OWNER, make_spec(), make_token())
    node: Any = secret
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return secret


_DELETE = object()


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(None, id="no Secret"),
        pytest.param({"metadata": {}}, id="a Secret with no data and no annotations"),
        pytest.param(_damage(("data",), _DELETE), id="a Secret without data"),
        pytest.param(_damage(("data", "accessToken"), _DELETE), id="a missing accessToken"),
        pytest.param(_damage(("data", "tokenType"), _DELETE), id="a missing tokenType"),
        pytest.param(_damage(("data", "expiresAt"), _DELETE), id="a missing expiresAt"),
        pytest.param(_damage(("data", "accessToken"), "not base64!!"), id="an accessToken that is not base64"),
        pytest.param(_damage(("data", "accessToken"), b64("x")[:-1]), id="truncated base64"),
        pytest.param(
            _damage(("data", "accessToken"), base64.b64encode(b"\xff\xfe").decode()), id="base64 of non-UTF-8 bytes"
        ),
        pytest.param(_damage(("data", "accessToken"), None), id="a null accessToken"),
        pytest.param(_damage(("data", "expiresAt"), b64("tomorrow")), id="an expiresAt that is not a time"),
        pytest.param(_damage(("data", "expiresAt"), b64("2030-01-01T13:00:00")), id="an expiresAt without a zone"),
        pytest.param(_damage(("metadata", "annotations"), _DELETE), id="no annotations"),
        pytest.param(_damage(("metadata", "annotations", ANNOTATION_ISSUED_AT), _DELETE), id="no issued-at"),
        pytest.param(_damage(("metadata", "annotations", ANNOTATION_ISSUED_AT), "soon"), id="a bad issued-at"),
        pytest.param(_damage(("metadata", "annotations", ANNOTATION_CREDENTIALS_HASH), _DELETE), id="no hash"),
    ],
)
def test_read_token_returns_none_for_missing_or_damaged_secrets(secret: dict[str, Any] | None) -> None:
    assert read_token(secret) is None


# ownership() ---------------------------------------------------------------------------------


def _ours(**meta_changes: Any) -> dict[str, Any]:
    secret = live(render_secret(OWNER, make_spec(), make_token()))
    for key, value in meta_changes.items():
        if value is _DELETE:
            secret["metadata"].pop(key, None)
        else:
            secret["metadata"][key] = value
    return secret


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(None, Ownership.ABSENT, id="no Secret is absent"),
        pytest.param(_ours(), Ownership.OURS, id="a Secret rendered for this resource is ours"),
        pytest.param(
            live(render_secret(OWNER, make_spec(target={"deletionPolicy": "Retain"}), make_token())),
            Ownership.OURS,
            id="a retained Secret without owner references is ours",
        ),
        pytest.param(
            _ours(annotations={}), Ownership.OURS, id="our controller reference without an owner annotation is ours"
        ),
        pytest.param(
            _ours(annotations={}, ownerReferences=[]),
            Ownership.FOREIGN,
            id="our managed-by label alone is not ours: anyone can set it",
        ),
        pytest.param(
            _ours(ownerReferences=[{**OTHER_OWNER_REF, "controller": False}]),
            Ownership.OURS,
            id="a non-controller reference to another owner does not make it foreign",
        ),
        pytest.param({"metadata": {"name": "palisade"}}, Ownership.FOREIGN, id="a Secret without labels is foreign"),
        pytest.param({}, Ownership.FOREIGN, id="a Secret without metadata is foreign"),
        pytest.param(
            _ours(labels={}), Ownership.OURS, id="a Secret of ours that lost its label is still ours (and relabelled)"
        ),
        pytest.param(
            _ours(annotations={ANNOTATION_OWNER: "team-a/another"}),
            Ownership.FOREIGN,
            id="our label with another owner annotation is foreign",
        ),
        pytest.param(
            _ours(ownerReferences=[{**OTHER_OWNER_REF, "controller": True}]),
            Ownership.FOREIGN,
            id="a controller reference with another uid is foreign",
        ),
    ],
)
def test_ownership(secret: dict[str, Any] | None, expected: Ownership) -> None:
    assert ownership(secret, OWNER) is expected


# secret_patch() ------------------------------------------------------------------------------


def test_no_patch_when_the_live_secret_matches() -> None:
    desired = render_secret(OWNER, make_spec(), make_token())
    assert secret_patch(live(desired), desired, OWNER) is None


def test_no_patch_for_labels_and_annotations_other_tools_added() -> None:
    desired = render_secret(OWNER, make_spec(), make_token())
    actual = live(desired)
    actual["metadata"]["labels"]["argocd.argoproj.io/instance"] = "app"
    actual["metadata"]["annotations"]["reflector/reflected"] = "true"
    assert secret_patch(actual, desired, OWNER) is None


def test_a_new_token_patches_only_what_changed_with_the_resource_version() -> None:
    actual = live(render_secret(OWNER, make_spec(), make_token()), version="41")
    new = make_token(access_token="tok-NEW", issued_at=T0 + HOUR, expires_at=T0 + 2 * HOUR)
    desired = render_secret(OWNER, make_spec(), new)
    patch = secret_patch(actual, desired, OWNER)
    assert patch == {
        "data": {"accessToken": b64("tok-NEW"), "expiresAt": b64("2030-01-01T14:00:00Z")},
        "metadata": {
            "annotations": {
                ANNOTATION_ISSUED_AT: "2030-01-01T13:00:00Z",
                ANNOTATION_EXPIRES_AT: "2030-01-01T14:00:00Z",
            },
            "resourceVersion": "41",
        },
    }
    assert merge_patch(actual, patch)["data"] == desired["data"]


def test_data_is_made_exact_and_extra_keys_are_removed() -> None:
    desired = render_secret(OWNER, make_spec(), make_token())
    actual = live(desired, version="7")
    actual["data"]["stale-template-key"] = b64("old")
    actual["data"]["accessToken"] = b64("tampered")
    patch = secret_patch(actual, desired, OWNER)
    assert patch == {
        "data": {"stale-template-key": None, "accessToken": b64(ACCESS_TOKEN)},
        "metadata": {"resourceVersion": "7"},
    }
    assert merge_patch(actual, patch)["data"] == desired["data"]


def test_labels_and_annotations_are_only_added_to() -> None:
    desired = render_secret(
        OWNER, make_spec(target={"labels": {"team": "a"}, "annotations": {"note": "new"}}), make_token()
    )
    actual = live(render_secret(OWNER, make_spec(target={"annotations": {"note": "old"}}), make_token()))
    actual["metadata"]["labels"]["gitops/tracked"] = "yes"
    actual["metadata"]["annotations"]["other-tool/seen"] = "1"
    patch = secret_patch(actual, desired, OWNER)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"team": "a"}
    assert patch["metadata"]["annotations"] == {
        "note": "new",
        ANNOTATION_MANAGED_METADATA: desired["metadata"]["annotations"][ANNOTATION_MANAGED_METADATA],
    }
    assert "data" not in patch
    patched = merge_patch(actual, patch)
    assert patched["metadata"]["labels"]["gitops/tracked"] == "yes"
    assert patched["metadata"]["annotations"]["other-tool/seen"] == "1"
    assert patched["metadata"]["annotations"]["note"] == "new"


def test_missing_tokensync_metadata_is_restored() -> None:
    desired = render_secret(OWNER, make_spec(), make_token())
    actual = live(desired)
    actual["metadata"]["annotations"].pop(ANNOTATION_OWNER)
    actual["metadata"]["labels"].pop(MANAGED_BY_LABEL)
    patch = secret_patch(actual, desired, OWNER)
    assert patch is not None
    assert patch["metadata"]["annotations"] == {ANNOTATION_OWNER: "team-a/palisade"}
    assert patch["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


@pytest.mark.parametrize(
    ("live_refs", "policy", "expected_refs"),
    [
        pytest.param([OTHER_OWNER_REF, "ours"], "Delete", None, id="our ref after another owner's needs no patch"),
        pytest.param([], "Delete", ["ours"], id="a missing ref of ours is added"),
        pytest.param([OTHER_OWNER_REF], "Delete", [OTHER_OWNER_REF, "ours"], id="ours is added next to another"),
        pytest.param(
            [{**OTHER_OWNER_REF, "uid": "uid-1111", "controller": False}],
            "Delete",
            ["ours"],
            id="a stale ref with our uid is replaced by ours",
        ),
        pytest.param(["ours"], "Retain", [], id="switching to Retain removes our ref"),
        pytest.param(
            ["ours", OTHER_OWNER_REF], "Retain", [OTHER_OWNER_REF], id="switching to Retain keeps another owner's ref"
        ),
        pytest.param([OTHER_OWNER_REF], "Retain", None, id="Retain leaves another owner's ref alone"),
        pytest.param([], "Retain", None, id="Retain with no refs needs no patch"),
    ],
)
def test_owner_references(live_refs: list[Any], policy: str, expected_refs: list[Any] | None) -> None:
    ours = render_secret(OWNER, make_spec(), make_token())["metadata"]["ownerReferences"][0]

    def resolve(refs: list[Any]) -> list[dict[str, Any]]:
        return [ours if ref == "ours" else ref for ref in refs]

    desired = render_secret(OWNER, make_spec(target={"deletionPolicy": policy}), make_token())
    actual = live(render_secret(OWNER, make_spec(), make_token()), version="9")
    actual["metadata"]["ownerReferences"] = resolve(live_refs)
    patch = secret_patch(actual, desired, OWNER)
    if expected_refs is None:
        assert patch is None
    else:
        assert patch == {"metadata": {"ownerReferences": resolve(expected_refs), "resourceVersion": "9"}}


def test_applying_the_patch_to_a_bare_secret_gives_the_desired_data_and_metadata() -> None:
    desired = render_secret(OWNER, make_spec(target={"template": {"a": "${scope}"}}), make_token())
    actual = live({"metadata": {"name": "palisade", "namespace": "team-a"}, "data": {"junk": b64("x")}}, version="3")
    patch = secret_patch(actual, desired, OWNER)
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "3"
    patched = merge_patch(actual, patch)
    assert patched["data"] == desired["data"]
    assert patched["metadata"]["labels"] == desired["metadata"]["labels"]
    assert patched["metadata"]["annotations"] == desired["metadata"]["annotations"]
    assert patched["metadata"]["ownerReferences"] == desired["metadata"]["ownerReferences"]


# apply_secret() ------------------------------------------------------------------------------


class FakeKube:
    """Secrets in memory, with the API server's preconditions; records every call."""

    def __init__(self, secrets: dict[str, dict[str, Any]] | None = None) -> None:
        self.secrets = {name: copy.deepcopy(secret) for name, secret in (secrets or {}).items()}
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: dict[str, list[KubeError]] = {"get": [], "create": [], "patch": []}
        #: Runs just before each write is applied: "someone else" acting between our read and write.
        self.before_write: Callable[[FakeKube], None] | None = None
        self._version = 100

    def put(self, secret: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        stored = copy.deepcopy(secret)
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.secrets[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def _maybe_fail(self, op: str) -> None:
        if self.fail[op]:
            raise self.fail[op].pop(0)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", name, None))
        self._maybe_fail("get")
        secret = self.secrets.get(name)
        return copy.deepcopy(secret) if secret is not None else None

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body["metadata"]["name"], copy.deepcopy(body)))
        if self.before_write:
            self.before_write(self)
        self._maybe_fail("create")
        if body["metadata"]["name"] in self.secrets:
            raise KubeError(409, "AlreadyExists", "secrets already exists")
        return self.put(body)

    async def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", name, copy.deepcopy(patch)))
        if self.before_write:
            self.before_write(self)
        self._maybe_fail("patch")
        current = self.secrets.get(name)
        if current is None:
            raise KubeError(404, "NotFound", "secrets not found")
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        return self.put(merge_patch(current, patch))

    def ops(self) -> list[str]:
        return [op for op, _, _ in self.calls]


def foreign_secret() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "palisade", "namespace": "team-a"}, "data": {}}


DESIRED = render_secret(OWNER, make_spec(), make_token())
OLD = render_secret(OWNER, make_spec(), make_token(access_token="tok-OLD"))


async def test_apply_creates_an_absent_secret() -> None:
    kube = FakeKube()
    applied = await apply_secret(kube, OWNER, DESIRED, None)  # type: ignore[arg-type]
    assert applied.written is True
    assert kube.ops() == ["create"]
    assert kube.calls[0][2] == DESIRED
    assert decoded(kube.secrets["palisade"])["accessToken"] == ACCESS_TOKEN
    assert applied.secret["metadata"]["resourceVersion"] == kube.secrets["palisade"]["metadata"]["resourceVersion"]


async def test_apply_patches_with_the_resource_version_it_read() -> None:
    kube = FakeKube()
    actual = kube.put(OLD)
    applied = await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert applied.written is True
    assert kube.ops() == ["patch"]
    patch = kube.calls[0][2]
    assert patch["metadata"]["resourceVersion"] == actual["metadata"]["resourceVersion"]
    assert patch["data"] == {"accessToken": b64(ACCESS_TOKEN)}
    assert decoded(applied.secret)["accessToken"] == ACCESS_TOKEN


async def test_apply_makes_no_write_when_nothing_changed() -> None:
    kube = FakeKube()
    actual = kube.put(DESIRED)
    applied = await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert applied.written is False
    assert applied.secret == actual
    assert kube.calls == []


async def test_apply_rereads_and_retries_after_a_conflict() -> None:
    kube = FakeKube()
    actual = kube.put(OLD)
    # Someone else touched the Secret after our read: the stored version moved on.
    touched = copy.deepcopy(actual)
    touched["metadata"]["annotations"]["other-tool/seen"] = "1"
    kube.put(touched)
    applied = await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert applied.written is True
    assert kube.ops() == ["patch", "get", "patch"]
    first, second = kube.calls[0][2], kube.calls[2][2]
    assert first["metadata"]["resourceVersion"] == actual["metadata"]["resourceVersion"]
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    stored = kube.secrets["palisade"]
    assert decoded(stored)["accessToken"] == ACCESS_TOKEN
    assert stored["metadata"]["annotations"]["other-tool/seen"] == "1"


async def test_apply_retries_a_create_that_lost_a_race_to_our_own_secret() -> None:
    kube = FakeKube()

    def another_replica_creates_it(k: FakeKube) -> None:
        k.put(OLD)
        k.before_write = None

    kube.before_write = another_replica_creates_it
    applied = await apply_secret(kube, OWNER, DESIRED, None)  # type: ignore[arg-type]
    assert kube.ops() == ["create", "get", "patch"]
    assert applied.written is True
    assert decoded(kube.secrets["palisade"])["accessToken"] == ACCESS_TOKEN


async def test_apply_recreates_a_secret_deleted_between_read_and_patch() -> None:
    kube = FakeKube()
    actual = kube.put(OLD)
    kube.secrets.clear()
    applied = await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert kube.ops() == ["patch", "get", "create"]
    assert applied.written is True
    assert decoded(kube.secrets["palisade"])["accessToken"] == ACCESS_TOKEN


@pytest.mark.parametrize(
    "ours_at_read",
    [
        pytest.param(False, id="absent at read then created by someone else"),
        pytest.param(True, id="ours at read then replaced by a foreign Secret"),
    ],
)
async def test_apply_never_writes_a_secret_that_became_foreign(ours_at_read: bool) -> None:
    kube = FakeKube()
    actual = kube.put(OLD) if ours_at_read else None
    kube.put(foreign_secret())  # replaces ours, or appears where there was nothing
    before = copy.deepcopy(kube.secrets)
    with pytest.raises(SecretConflictError, match="palisade"):
        await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert kube.secrets == before
    # The first write was refused by its precondition; after the re-read, nothing more was sent.
    assert kube.ops() == ["patch" if ours_at_read else "create", "get"]


async def test_apply_refuses_a_foreign_secret_without_any_call() -> None:
    kube = FakeKube()
    with pytest.raises(SecretConflictError):
        await apply_secret(kube, OWNER, DESIRED, live(foreign_secret()))  # type: ignore[arg-type]
    assert kube.calls == []


@pytest.mark.parametrize("attempts", [1, 3, 5], ids=lambda n: f"gives up after {n} attempts")
async def test_apply_gives_up_when_the_secret_keeps_changing(attempts: int) -> None:
    kube = FakeKube()
    actual = kube.put(OLD)

    def touch(k: FakeKube) -> None:
        k.put(k.secrets["palisade"])  # a new resourceVersion before every write

    kube.before_write = touch
    with pytest.raises(KubeError) as info:
        await apply_secret(kube, OWNER, DESIRED, actual, attempts=attempts)  # type: ignore[arg-type]
    assert info.value.status == 409
    assert kube.ops().count("patch") == attempts
    assert kube.ops().count("get") == attempts - 1
    assert decoded(kube.secrets["palisade"])["accessToken"] == "tok-OLD"


@pytest.mark.parametrize(
    ("op", "status", "actual_present"),
    [
        pytest.param("patch", 500, True, id="a server error on patch is not retried"),
        pytest.param("patch", 403, True, id="a forbidden patch is not retried"),
        pytest.param("patch", 422, True, id="an invalid patch is not retried"),
        pytest.param("create", 404, False, id="a create into a missing namespace is not retried"),
        pytest.param("create", 500, False, id="a server error on create is not retried"),
    ],
)
async def test_apply_passes_other_errors_on_at_once(op: str, status: int, actual_present: bool) -> None:
    kube = FakeKube()
    actual = kube.put(OLD) if actual_present else None
    kube.fail[op].append(KubeError(status, "Failure", "no"))
    with pytest.raises(KubeError) as info:
        await apply_secret(kube, OWNER, DESIRED, actual)  # type: ignore[arg-type]
    assert info.value.status == status
    assert kube.ops() == [op]


def test_labels_and_annotations_dropped_from_the_spec_are_removed_and_others_stay() -> None:
    before = make_spec(target={"labels": {"team": "a", "tier": "1"}, "annotations": {"note": "x", "keep": "y"}})
    after = make_spec(target={"labels": {"team": "a"}, "annotations": {"keep": "y"}})
    actual = live(render_secret(OWNER, before, make_token()))
    actual["metadata"]["labels"]["gitops/tracked"] = "yes"
    actual["metadata"]["annotations"]["other-tool/seen"] = "1"
    patch = secret_patch(actual, render_secret(OWNER, after, make_token()), OWNER)
    assert patch is not None
    assert patch["metadata"]["labels"] == {"tier": None}
    assert patch["metadata"]["annotations"]["note"] is None
    assert "other-tool/seen" not in patch["metadata"]["annotations"]
    assert "gitops/tracked" not in patch["metadata"]["labels"]


def test_a_secret_from_before_the_managed_metadata_annotation_loses_nothing() -> None:
    actual = live(render_secret(OWNER, make_spec(target={"labels": {"team": "a"}}), make_token()))
    del actual["metadata"]["annotations"][ANNOTATION_MANAGED_METADATA]
    patch = secret_patch(actual, render_secret(OWNER, make_spec(), make_token()), OWNER)
    assert patch is not None
    assert "labels" not in patch["metadata"], "without a record of what tokensync set, nothing is removed"


def test_a_damaged_managed_metadata_annotation_removes_nothing() -> None:
    actual = live(render_secret(OWNER, make_spec(target={"labels": {"team": "a"}}), make_token()))
    actual["metadata"]["annotations"][ANNOTATION_MANAGED_METADATA] = "{not json"
    patch = secret_patch(actual, render_secret(OWNER, make_spec(), make_token()), OWNER)
    assert patch is not None
    assert "labels" not in patch["metadata"]


def test_release_patch_hands_the_secret_over_and_keeps_its_data() -> None:
    actual = live(render_secret(OWNER, make_spec(target={"labels": {"team": "a"}}), make_token()))
    patch = release_patch(actual, OWNER)
    meta = patch["metadata"]
    assert meta["labels"] == {MANAGED_BY_LABEL: None}
    assert meta["ownerReferences"] is None
    assert meta["annotations"][ANNOTATION_OWNER] is None
    assert meta["resourceVersion"] == actual["metadata"]["resourceVersion"]
    assert "data" not in patch
    released = merge_patch(actual, patch)
    assert ownership(released, OWNER) is Ownership.FOREIGN, "a released Secret is never adopted again"


@pytest.mark.parametrize(("source", "read"), [("JWT", "JWT"), ("Default", "Default"), ("bogus", "ExpiresIn")])
def test_the_lifetime_source_round_trips_and_a_tampered_one_reads_as_expires_in(source: str, read: str) -> None:
    secret = live(render_secret(OWNER, make_spec(), make_token()))
    secret["metadata"]["annotations"]["tokensync.io/lifetime-source"] = source
    token = read_token(secret)
    assert token is not None
    assert token.lifetime_source == read
