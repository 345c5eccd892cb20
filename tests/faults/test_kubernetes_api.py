"""Faults of the Kubernetes API: conflicts, refused Secret writes, errors and silence on every verb, a
frozen API server, watches that break or expire, rapid spec churn, and a Secret the API server refuses.

The stand-in injects them (``FakeCluster.inject``, ``freeze``, ``drop_watches``, ``expire_watches``)
and counts every request by verb and resource. Each test checks the Secret, the status, the events
and the requests both sides saw: the operator converges without a second exchange where none is
needed, never claims a token the Secret does not hold, and never turns a fault into a hot loop.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    NAMESPACE,
    SECRET_WRITE_FAILED,
    Always,
    Api,
    LogCapture,
    OperatorRunner,
    TokenRecorder,
    api_requests,
    api_retry_ceiling,
    assert_no_leaks,
    cc_spec,
    condition,
    event_reasons,
    events_for,
    eventually,
    exchanges,
    has_condition,
    has_event,
    honest,
    is_ready,
    last_failure,
    operator_requests,
    secret_expiry,
    secret_token,
    settled,
)

CONFLICT = (
    'Operation cannot be fulfilled on {what} "palisade": the object has been modified; '
    "please apply your changes to the latest version and try again"
)
QUOTA = (
    'secrets "palisade" is forbidden: exceeded quota: secrets-quota, requested: count/secrets=1, '
    "used: count/secrets=10, limited: count/secrets=10"
)
WEBHOOK = (
    'admission webhook "secrets.policy.example.com" denied the request: '
    "Secrets in payments must carry a cost-center label"
)
ETCD = "Internal error occurred: etcdserver: request timed out"


def managed_secrets(cluster: FakeCluster) -> list[str]:
    return [
        s["metadata"]["name"]
        for s in cluster.list("v1", "secrets", NAMESPACE)
        if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "tokensync"
    ]


# Conflicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["secrets", "clientcredentials/status"], ids=["secret-patch", "status-patch"])
async def test_a_409_on_a_refresh_write_converges_without_a_second_exchange(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
    target: str,
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: settled(seeded, "palisade"))
    cluster.reset_counts()
    what = "secrets" if target == "secrets" else "clientcredentials.tokensync.io"
    fault = cluster.inject(
        verb="patch", resource=target, name="palisade", status=409, message=CONFLICT.format(what=what), times=1
    )

    # A requested refresh meets the conflict once, on its Secret or on its status write.
    async with Always(lambda: honest(seeded, "palisade")):
        seeded.request_refresh("palisade", "1")
        await eventually(lambda: fault.hits == 1, timeout=15, message="the refresh met the conflict")
        await eventually(
            lambda: (
                seeded.status("palisade").get("lastRefreshRequest") == "1"
                and settled(seeded, "palisade", token_server.tokens[-1])
            ),
            timeout=15,
        )
    assert token_server.issued == 2, "the conflict cost a second exchange"
    assert len(exchanges(token_server)) == token_server.issued
    counts = cluster.object_request_counts(NAMESPACE, "palisade")
    assert counts.get(("create", "secrets"), 0) == 0
    assert counts.get(("patch", "secrets"), 0) == (2 if target == "secrets" else 1)
    assert counts.get(("get", "secrets"), 0) <= 1  # at most one re-read after the conflict
    assert counts.get(("patch", "clientcredentials/status"), 0) <= 3
    assert managed_secrets(cluster) == ["palisade"]
    # A conflict is routine: no Warning for it.
    assert not [e for e in events_for(seeded, "palisade") if e.get("type") == "Warning"]
    assert_no_leaks(seeded, logs, minted)


# Refused Secret writes ----------------------------------------------------------------------


async def test_a_quota_refusing_the_secret_is_secret_write_failed_and_recovers_by_itself(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    fault = cluster.inject(verb="create", resource="secrets", status=403, reason="Forbidden", message=QUOTA)
    seeded.create_cc("palisade", cc_spec(token_server))

    async with Always(lambda: honest(seeded, "palisade")):
        await eventually(lambda: has_condition(seeded, "palisade", "Ready", "False", SECRET_WRITE_FAILED), timeout=20)
        first_refusal = time.monotonic()
        failure = last_failure(seeded, "palisade")
        assert failure["reason"] == SECRET_WRITE_FAILED
        assert "exceeded quota" in failure["message"], failure["message"]
        assert "exceeded quota" in condition(seeded, "palisade", "Ready")["message"]
        event = await eventually(lambda: has_event(seeded, "palisade", "Warning", SECRET_WRITE_FAILED))
        assert "exceeded quota" in str(event.get("message"))

        # The write is retried with the API backoff (1 s, doubling), the token is not exchanged again.
        await eventually(lambda: fault.hits >= 3, timeout=20, message="the write retried")
        elapsed = time.monotonic() - first_refusal
        assert fault.hits <= api_retry_ceiling(elapsed + 1) + 1, f"{fault.hits} creates in {elapsed:.1f}s"
        assert token_server.issued == 1
        assert len(exchanges(token_server)) == 1
        assert seeded.secret("palisade") is None
        assert not has_event(seeded, "palisade", "Normal", "Issued")
        assert "expiresAt" not in seeded.status("palisade")
        patches = api_requests(cluster, "patch", "clientcredentials/status", "palisade")
        assert patches <= fault.hits + 2, f"{patches} status patches for {fault.hits} refused writes"

        hits = fault.hits
        fault.remove()
        removed = time.monotonic()
        await eventually(lambda: settled(seeded, "palisade", token_server.tokens[0]), timeout=70)
    # It recovered by itself, at the next retry: within the API backoff's next delay (1 s doubling).
    took = time.monotonic() - removed
    assert took <= min(2 ** (hits - 1), 60) + 5, f"recovered {took:.1f}s after the quota was lifted ({hits} tries)"
    assert token_server.issued == 1, "the token was exchanged again instead of written"
    status = seeded.status("palisade")
    assert status["failedAttempts"] == 0
    assert "lastFailure" not in status
    assert has_condition(seeded, "palisade", "Stalled", "False")
    normal = await eventually(
        lambda: {r for t, r in event_reasons(seeded, "palisade") if t == "Normal"} & {"Issued", "Recovered"}
    )
    assert normal
    assert managed_secrets(cluster) == ["palisade"]
    assert_no_leaks(seeded, logs, minted)


async def test_a_webhook_denying_a_refresh_write_keeps_the_old_token_and_recovers_without_a_new_exchange(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: settled(seeded, "palisade"))
    before = seeded.secret("palisade")
    assert before is not None
    issued_events = event_reasons(seeded, "palisade")[("Normal", "Issued")]
    fault = cluster.inject(
        verb="patch", resource="secrets", name="palisade", status=403, reason="Forbidden", message=WEBHOOK
    )

    async with Always(lambda: honest(seeded, "palisade")):
        seeded.request_refresh("palisade", "1")
        await eventually(lambda: last_failure(seeded, "palisade").get("reason") == SECRET_WRITE_FAILED, timeout=20)
        assert "denied the request" in last_failure(seeded, "palisade")["message"]
        ready = condition(seeded, "palisade", "Ready")
        # The old token is still valid: Ready may stay True (saying why the refresh failed) or not,
        # but the reason is the refused write either way.
        assert ready["reason"] == SECRET_WRITE_FAILED or SECRET_WRITE_FAILED in ready["message"], ready
        event = await eventually(lambda: has_event(seeded, "palisade", "Warning", SECRET_WRITE_FAILED))
        assert "denied the request" in str(event.get("message"))
        first_refusal = time.monotonic()
        await eventually(lambda: fault.hits >= 3, timeout=20, message="the write retried")
        elapsed = time.monotonic() - first_refusal
        assert fault.hits <= api_retry_ceiling(elapsed + 1) + 1, f"{fault.hits} patches in {elapsed:.1f}s"
        assert token_server.issued == 2, "the refused write cost more exchanges"
        after = seeded.secret("palisade")
        assert after is not None
        assert after["data"] == before["data"], "the old token was damaged"
        assert event_reasons(seeded, "palisade")[("Normal", "Refreshed")] == 0
        assert event_reasons(seeded, "palisade")[("Normal", "Issued")] == issued_events

        hits = fault.hits
        fault.remove()
        removed = time.monotonic()
        await eventually(lambda: settled(seeded, "palisade", token_server.tokens[1]), timeout=70)
    took = time.monotonic() - removed
    assert took <= min(2 ** (hits - 1), 60) + 5, f"recovered {took:.1f}s after the webhook relented ({hits} tries)"
    assert token_server.issued == 2
    assert len(exchanges(token_server)) == 2
    await eventually(lambda: seeded.status("palisade").get("lastRefreshRequest") == "1")
    assert "lastFailure" not in seeded.status("palisade")
    assert await eventually(
        lambda: {r for t, r in event_reasons(seeded, "palisade") if t == "Normal"} & {"Refreshed", "Recovered"}
    )
    assert_no_leaks(seeded, logs, minted)


async def test_a_failing_secret_write_past_the_old_tokens_expiry_turns_ready_false(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    token_server.lifetime = 6
    seeded.create_cc("palisade", cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: settled(seeded, "palisade"))
    old = seeded.secret("palisade")
    old_expiry = secret_expiry(seeded, "palisade")
    assert old is not None
    assert old_expiry is not None
    fault = cluster.inject(verb="patch", resource="secrets", status=500, message=ETCD)
    injected = time.monotonic()

    async with Always(lambda: honest(seeded, "palisade")):
        await eventually(lambda: last_failure(seeded, "palisade").get("reason") == SECRET_WRITE_FAILED, timeout=15)
        assert "etcdserver" in last_failure(seeded, "palisade")["message"]
        await eventually(
            lambda: has_condition(seeded, "palisade", "Ready", "False", SECRET_WRITE_FAILED),
            timeout=old_expiry.timestamp() - time.time() + 15,
            message="Ready=False once the Secret's token expired",
        )
        assert await eventually(lambda: has_event(seeded, "palisade", "Warning", SECRET_WRITE_FAILED))
        still = seeded.secret("palisade")
        assert still is not None
        assert still["data"] == old["data"], "a failed write damaged the Secret"
        elapsed = time.monotonic() - injected
        # Bounded: a token is exchanged only when the remembered one is due, not per retried write.
        assert token_server.issued <= 2 + int(elapsed / 6), f"{token_server.issued} exchanges in {elapsed:.0f}s"
        assert fault.hits <= api_retry_ceiling(elapsed) + 2 * (1 + int(elapsed / 3)), f"{fault.hits} patches"

        fault.remove()
        await eventually(lambda: settled(seeded, "palisade", token_server.tokens[-1]), timeout=70)
    assert "lastFailure" not in seeded.status("palisade")
    assert await eventually(lambda: has_event(seeded, "palisade", "Normal", "Recovered"))
    assert managed_secrets(cluster) == ["palisade"]
    assert_no_leaks(seeded, logs, minted)


async def test_a_label_value_the_api_server_refuses_never_shows_ready_or_issued(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    spec = cc_spec(token_server, target={"labels": {"team": "payments team"}})
    reasons = ("InvalidSpec", SECRET_WRITE_FAILED)
    async with Always(lambda: "Ready=True" if is_ready(seeded, "palisade") else None):
        seeded.create_cc("palisade", spec)
        ready = await eventually(
            lambda: (
                (c := condition(seeded, "palisade", "Ready")).get("status") == "False"
                and c.get("reason") in reasons
                and c
            )
        )
        assert "team" in ready["message"] or "label" in ready["message"], ready["message"]
        assert last_failure(seeded, "palisade")["reason"] == ready["reason"]
        event = await eventually(lambda: has_event(seeded, "palisade", "Warning", ready["reason"]))
        assert event
        await asyncio.sleep(3.0)  # a bounded look: it stays that way, without a hot loop
    assert seeded.secret("palisade") is None
    assert not has_event(seeded, "palisade", "Normal", "Issued")
    assert "expiresAt" not in seeded.status("palisade")
    assert token_server.issued <= 1
    creates = api_requests(cluster, "create", "secrets", "palisade")
    assert creates <= api_retry_ceiling(4.0), f"{creates} refused creates in a few seconds"
    assert_no_leaks(seeded, logs, minted)


# Errors and silence on every verb -----------------------------------------------------------


async def _every_verb_fails_for_a_while(
    cluster: FakeCluster,
    api: Api,
    token_server: DevTokenServer,
    logs: LogCapture,
    minted: TokenRecorder,
    *,
    hang: bool,
) -> None:
    token_server.lifetime = 6
    names = ("first", "second")
    for name in names:
        api.create_cc(name, cc_spec(token_server, renewal={"percent": 50}))
    await eventually(lambda: all(settled(api, n) for n in names), timeout=20)
    issued = token_server.issued
    # The operator's requests only (User-Agent "tokensync"): the outage spans at least one refresh each.
    fault = cluster.inject(client="tokensync", hang=hang, status=500, message=ETCD)
    await asyncio.sleep(6)  # the outage: longer than the time to the next refresh of each
    during = fault.hits
    exchanged = token_server.issued - issued
    fault.remove()
    assert during >= 1, "the operator sent nothing during the outage"
    # Bounded: rounds back off (1 s doubling) and held calls hold their round.
    assert during <= 40, f"{during} API requests in a 6 s outage"
    assert exchanged <= 2 * 3, f"{exchanged} exchanges in a 6 s outage"

    # Within a minute of the API's return every resource is Ready, and refreshes go on.
    await eventually(lambda: all(settled(api, n) for n in names), timeout=60, message="Ready after the outage")
    tokens = {n: secret_token(api, n) for n in names}
    await eventually(
        lambda: all(settled(api, n) and secret_token(api, n) != tokens[n] for n in names),
        timeout=20,
        message="a refresh after the recovery",
    )
    for name in names:
        assert api.secret_data(name)["accessToken"] in token_server.tokens
        assert "lastFailure" not in api.status(name)
    assert sorted(managed_secrets(cluster)) == sorted(names)
    assert_no_leaks(api, logs, minted)


async def test_5xx_on_every_api_call_for_a_while_is_survived(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    await _every_verb_fails_for_a_while(cluster, seeded, token_server, logs, minted, hang=False)


async def test_api_calls_that_never_answer_for_a_while_are_survived(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    await _every_verb_fails_for_a_while(cluster, seeded, token_server, logs, minted, hang=True)


#: How long the API server stops answering: the issue's "a minute".
FROZEN_FOR = 60


@pytest.mark.timeout(240)
async def test_a_frozen_api_server_is_survived_and_every_resource_is_ready_within_a_minute_of_the_thaw(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    names = ("alpha", "beta", "gamma")
    token_server.credentials = {f"client-{n}": f"{CLIENT_SECRET}-{n}" for n in names}
    for name in names:
        seeded.put_secret(
            f"{name}-credentials", {"clientId": f"client-{name}", "clientSecret": f"{CLIENT_SECRET}-{name}"}
        )
        spec = cc_spec(token_server, credentialsRef={"name": f"{name}-credentials"}, renewal={"percent": 50})
        seeded.create_cc(name, spec)
    token_server.lifetime = 8
    await eventually(lambda: all(settled(seeded, n) for n in names), timeout=30)
    requests_before, issued_before = operator_requests(cluster), token_server.issued

    # A minute without a single answer, watch streams included: every token expires meanwhile.
    cluster.freeze()
    await asyncio.sleep(FROZEN_FOR)
    requests_during = operator_requests(cluster) - requests_before
    exchanged = token_server.issued - issued_before
    cluster.thaw()
    thawed = time.monotonic()
    # Bounded, not a hot loop: requests hang until their timeout and are retried with backoff.
    assert requests_during <= 3 * FROZEN_FOR, f"{requests_during} API requests while frozen: a hot loop"
    assert exchanged <= 3 * FROZEN_FOR / 5, f"{exchanged} exchanges in {FROZEN_FOR} s for 3 resources"

    await eventually(lambda: all(settled(seeded, n) for n in names), timeout=60, message="Ready within a minute")
    took = time.monotonic() - thawed
    assert took <= 60
    tokens = {n: secret_token(seeded, n) for n in names}
    await eventually(
        lambda: all(settled(seeded, n) and secret_token(seeded, n) != tokens[n] for n in names),
        timeout=30,
        message="refreshes go on after the thaw",
    )
    for name in names:
        assert seeded.secret_data(name)["accessToken"] in token_server.tokens
    assert sorted(managed_secrets(cluster)) == sorted(names)
    assert_no_leaks(seeded, logs, minted, *(f"{CLIENT_SECRET}-{n}" for n in names))


# Watches ------------------------------------------------------------------------------------


async def _watches_break_and_changes_made_meanwhile_are_acted_on(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    logs: LogCapture,
    minted: TokenRecorder,
    *,
    expire: bool,
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: settled(seeded, "palisade"))
    await eventually(lambda: cluster.open_watches("clientcredentials") >= 1 and cluster.open_watches("secrets") >= 2)
    cluster.reset_counts()

    # The operator hears nothing while its watches break and the world changes.
    cluster.freeze(client="tokensync")
    signal = cluster.expire_watches if expire else cluster.drop_watches
    assert signal("clientcredentials") >= 1
    assert signal("secrets") >= 2  # the target Secrets and the credentials' metadata
    # A rotation to a new client (the old one stays valid meanwhile, as rotations are done) and a refresh request.
    rotated = f"{CLIENT_SECRET}-rotated"
    token_server.credentials = {CLIENT_ID: CLIENT_SECRET, "client-b": rotated}
    seeded.put_secret("palisade-credentials", {"clientId": "client-b", "clientSecret": rotated})
    seeded.request_refresh("palisade", "meanwhile")
    cluster.thaw()

    # Both changes are acted on (the watches may deliver them in either order).
    await eventually(
        lambda: (
            seeded.status("palisade").get("lastRefreshRequest") == "meanwhile"
            and settled(seeded, "palisade", token_server.tokens[-1])
            and token_server.client_of(token_server.tokens[-1]) == "client-b"
        ),
        timeout=30,
        message="the changes made while the watches were down",
    )
    assert exchanges(token_server)[-1].status == 200
    assert 2 <= token_server.issued <= 3
    await eventually(lambda: cluster.open_watches("clientcredentials") >= 1 and cluster.open_watches("secrets") >= 2)
    counts = cluster.request_counts()
    if expire:  # 410: the version is gone, so each informer lists again, once
        assert counts.get(("list", "clientcredentials")) == 1
        assert counts.get(("list", "secrets")) == 2
    else:  # a broken stream: resumed from the last version seen, no list
        assert counts.get(("list", "clientcredentials"), 0) == 0
        assert counts.get(("list", "secrets"), 0) == 0
    assert 1 <= counts.get(("watch", "clientcredentials"), 0) <= 3
    assert 2 <= counts.get(("watch", "secrets"), 0) <= 6
    # Nothing failed as far as the user can tell.
    assert not [e for e in events_for(seeded, "palisade") if e.get("type") == "Warning"]
    assert "lastFailure" not in seeded.status("palisade")
    assert_no_leaks(seeded, logs, minted, rotated)


async def test_dropped_watches_resume_and_changes_made_meanwhile_are_acted_on(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    await _watches_break_and_changes_made_meanwhile_are_acted_on(
        cluster, seeded, token_server, logs, minted, expire=False
    )


async def test_watches_answering_410_relist_and_changes_made_meanwhile_are_acted_on(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    await _watches_break_and_changes_made_meanwhile_are_acted_on(
        cluster, seeded, token_server, logs, minted, expire=True
    )


# Spec churn ---------------------------------------------------------------------------------


async def test_rapid_spec_churn_converges_on_the_last_spec_without_overlapping_exchanges(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    operator: OperatorRunner,
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    versions = 8
    secrets = {f"client-{i}": f"{CLIENT_SECRET}-{i}" for i in range(versions)}
    token_server.credentials = secrets
    for i in range(versions):
        seeded.put_secret(f"creds-{i}", {"clientId": f"client-{i}", "clientSecret": secrets[f"client-{i}"]})
    # Each exchange takes a while, so an exchange for an older spec would overlap a newer one.
    token_server.fail("slow", delay=0.3)

    seeded.create_cc("palisade", cc_spec(token_server, credentialsRef={"name": "creds-0"}))
    for i in range(1, versions):
        await asyncio.sleep(0.05)  # edits in quick succession, as a script or a GitOps sync makes them
        seeded.patch_cc("palisade", {"spec": {"credentialsRef": {"name": f"creds-{i}"}}})
    final = f"client-{versions - 1}"

    def converged() -> bool:
        token = secret_token(seeded, "palisade")
        resource: dict[str, Any] = seeded.cc("palisade") or {}
        generation = resource.get("metadata", {}).get("generation")
        return (
            token is not None
            and token_server.client_of(token) == final
            and settled(seeded, "palisade", token)
            and seeded.status("palisade").get("observedGeneration") == generation
        )

    await eventually(converged, timeout=30, message="the Secret holds a token of the last spec")
    records = exchanges(token_server)
    assert token_server.peak_inflight == 1, "two exchanges for one resource overlapped"
    ordered = sorted(records, key=lambda r: r.started)
    for before, after in itertools.pairwise(ordered):
        assert after.started >= before.at, f"overlapping exchanges: {before} and {after}"
    assert len(records) <= versions, f"{len(records)} exchanges for {versions} versions of the spec"
    assert records[-1].client_id == final
    # Stays converged: no late exchange for an older spec lands afterwards.
    await asyncio.sleep(1.0)
    assert token_server.client_of(secret_token(seeded, "palisade") or "") == final
    assert len(exchanges(token_server)) == len(records)
    assert managed_secrets(cluster) == ["palisade"]
    assert api_requests(cluster, "create", "secrets", "palisade") == 1
    assert not [e for e in events_for(seeded, "palisade") if e.get("type") == "Warning"]
    assert_no_leaks(seeded, logs, minted, *secrets.values())
