"""Reactive: spec edits, credential rotation, Secret deletion or tampering, refresh requests, suspend."""

from __future__ import annotations

import asyncio
import base64

from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CLIENT_ID, CLIENT_SECRET, Api, LogCapture, OperatorRunner, assert_clean, cc_spec, eventually


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


def token_in(api: Api, secret: str) -> str | None:
    return api.secret_data(secret).get("accessToken")


async def issued(api: Api, server: DevTokenServer, name: str) -> str:
    """Create a ClientCredential and wait for its first token."""
    api.create_cc(name, cc_spec(server))
    await eventually(lambda: ready(api, name) and token_in(api, name), message="first token")
    token = token_in(api, name)
    assert token is not None
    return token


async def test_rotating_the_client_secret_triggers_a_new_exchange_at_once(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    first = await issued(seeded, token_server, "rotating")
    token_server.credentials = {CLIENT_ID: "rotated-secret-0b5e"}
    seeded.put_secret("palisade-credentials", {"clientId": CLIENT_ID, "clientSecret": "rotated-secret-0b5e"})

    await eventually(lambda: token_in(seeded, "rotating") not in (None, first), timeout=5, message="new token")
    assert token_server.issued == 2
    assert ready(seeded, "rotating")
    assert_clean(logs, CLIENT_SECRET, "rotated-secret-0b5e", *token_server.tokens)


async def test_a_deleted_target_secret_is_restored_without_a_new_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    token = await issued(seeded, token_server, "restored")
    seeded.delete_secret("restored")

    await eventually(lambda: token_in(seeded, "restored") == token, timeout=5, message="Secret restored")
    assert token_server.issued == 1


async def test_a_tampered_target_secret_is_repaired(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    token = await issued(seeded, token_server, "tampered")
    seeded.put_secret("tampered", {"accessToken": "forged", "extra": "x"})

    await eventually(
        lambda: token_in(seeded, "tampered") == token and "extra" not in seeded.secret_data("tampered"),
        timeout=5,
        message="Secret repaired",
    )
    assert token_server.issued == 1


async def test_changing_what_the_token_is_minted_from_triggers_a_new_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    first = await issued(seeded, token_server, "edited")
    seeded.put_secret("other-credentials", {"id": CLIENT_ID, "secret": CLIENT_SECRET})
    seeded.patch_cc(
        "edited",
        {"spec": {"credentialsRef": {"name": "other-credentials", "clientIdKey": "id", "clientSecretKey": "secret"}}},
    )
    # Same client, other Secret and keys: the same inputs, so no exchange is needed...
    await eventually(
        lambda: seeded.status("edited").get("observedGeneration") == seeded.cc("edited")["metadata"]["generation"],
        message="the edit was observed",
    )
    assert token_server.issued == 1

    # ... while a different token URL (another host name for the same server) is a new input.
    seeded.patch_cc("edited", {"spec": {"tokenURL": token_server.token_url.replace("127.0.0.1", "localhost")}})
    await eventually(lambda: token_in(seeded, "edited") not in (None, first), timeout=5, message="new token")
    assert token_server.issued == 2


async def test_cosmetic_spec_changes_apply_at_once_without_an_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    token = await issued(seeded, token_server, "cosmetic")
    seeded.patch_cc(
        "cosmetic",
        {
            "spec": {
                "target": {
                    "labels": {"team": "payments"},
                    "annotations": {"example.com/owner": "payments"},
                    "template": {"authorization": "Bearer ${accessToken}"},
                }
            }
        },
    )

    def updated() -> bool:
        secret = seeded.secret("cosmetic") or {}
        return (secret.get("metadata", {}).get("labels") or {}).get("team") == "payments"

    await eventually(updated, timeout=5, message="labels applied")
    data = seeded.secret_data("cosmetic")
    assert data["authorization"] == f"Bearer {token}"
    assert seeded.secret("cosmetic")["metadata"]["annotations"]["example.com/owner"] == "payments"
    assert token_server.issued == 1


async def test_a_refresh_request_annotation_triggers_exactly_one_new_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    first = await issued(seeded, token_server, "manual")
    seeded.request_refresh("manual", "2026-11-29T10:00:00Z")

    await eventually(lambda: token_in(seeded, "manual") not in (None, first), timeout=5, message="refreshed")
    await eventually(
        lambda: seeded.status("manual").get("lastRefreshRequest") == "2026-11-29T10:00:00Z", message="recorded"
    )
    await asyncio.sleep(1)
    assert token_server.issued == 2, "the same request value must not refresh again"

    seeded.request_refresh("manual", "2026-11-29T10:05:00Z")
    await eventually(lambda: token_server.issued == 3, timeout=5, message="a second request refreshes again")


async def test_suspend_stops_refreshing_and_says_so(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    token_server.lifetime = 4
    seeded.create_cc("paused", cc_spec(token_server, suspend=True))
    await eventually(lambda: seeded.condition("paused", "Ready").get("reason") == "Suspended", message="Suspended")
    await asyncio.sleep(1)
    assert token_server.issued == 0

    seeded.patch_cc("paused", {"spec": {"suspend": False}})
    await eventually(lambda: ready(seeded, "paused") and token_in(seeded, "paused"), timeout=5)
    token = token_in(seeded, "paused")
    seeded.patch_cc("paused", {"spec": {"suspend": True}})
    await eventually(lambda: seeded.condition("paused", "Ready").get("reason") == "Suspended")
    issued_before = token_server.issued
    # Past the renewal point and the expiry: no refresh while suspended; Ready turns False at expiry.
    await eventually(lambda: seeded.condition("paused", "Ready").get("status") == "False", timeout=8)
    assert token_server.issued == issued_before
    assert token_in(seeded, "paused") == token


async def test_deletion_policy_delete_owns_the_secret_and_retain_does_not(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    seeded.create_cc("deleted", cc_spec(token_server))
    seeded.create_cc("retained", cc_spec(token_server, target={"deletionPolicy": "Retain"}))
    await eventually(lambda: token_in(seeded, "deleted") and token_in(seeded, "retained"))
    assert "ownerReferences" not in seeded.secret("retained")["metadata"]

    seeded.delete_cc("deleted")
    seeded.delete_cc("retained")
    # The stand-in garbage-collects by ownerReference as a real API server does.
    await eventually(lambda: seeded.cc("deleted") is None and seeded.cc("retained") is None, message="CRs gone")
    await eventually(lambda: seeded.secret("deleted") is None, message="owned Secret collected")
    assert token_in(seeded, "retained") is not None


async def test_many_resources_with_identical_credentials_share_one_exchange(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    for index in range(5):
        seeded.create_cc(f"shared-{index}", cc_spec(token_server))
    for index in range(5):
        await eventually(lambda index=index: ready(seeded, f"shared-{index}"))
    tokens = {token_in(seeded, f"shared-{index}") for index in range(5)}
    assert len(tokens) == 1
    assert token_server.issued == 1


async def test_the_secret_keeps_labels_and_annotations_other_tools_added(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    await issued(seeded, token_server, "annotated")
    seeded.core.patch_namespaced_secret(
        "annotated",
        "payments",
        {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "x"}}},
        _content_type="application/merge-patch+json",
    )
    seeded.request_refresh("annotated", "now")
    await eventually(lambda: token_server.issued == 2, timeout=5)
    await eventually(
        lambda: base64.b64decode(seeded.secret("annotated")["data"]["accessToken"]).decode() == token_server.tokens[-1]
    )
    annotations = seeded.secret("annotated")["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/tracking-id"] == "x"


async def test_the_oauth2_dialect_issues_tokens_with_basic_and_post_authentication(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    for method in ("basic", "post"):
        seeded.create_cc(
            f"oauth2-{method}",
            cc_spec(
                token_server,
                provider="oauth2",
                tokenURL=token_server.oauth2_token_url,
                clientAuthentication=method,
                scopes=[token_server.scope],
            ),
        )
    for method in ("basic", "post"):
        await eventually(lambda method=method: ready(seeded, f"oauth2-{method}"), message=f"{method} ready")
        assert seeded.secret_data(f"oauth2-{method}")["tokenType"] == "Bearer"
    # Different client authentication is a different request: two exchanges.
    assert token_server.issued == 2
    assert {r.path for r in token_server.requests} == {"/oauth2/token"}
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)
