"""The shell at cluster scale: API cost per refresh and per restart, no finalizer, the upgrade
from the kopf-based version, watchNamespaces mode, and log lines that name their resource.

Costs are counted where a cluster admin would count them: at the API server (the stand-in
counts every request by verb and resource) and at the token endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import (
    CC_GV,
    CLIENT_SECRET,
    NAMESPACE,
    Api,
    LogCapture,
    OperatorRunner,
    assert_clean,
    cc_spec,
    eventually,
)

WRITES = ("create", "update", "patch", "delete")
#: Settings.election_namespace's default: where the operator keeps its credentials-hash key.
OPERATOR_NAMESPACE = "default"
READS = ("get", "list")


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


def settled_refresh(api: Api, token_server: DevTokenServer) -> bool:
    """The newest token is in the Secret and the status says so."""
    data = api.secret_data("palisade")
    if data.get("accessToken") != token_server.tokens[-1]:
        return False
    return bool(api.status("palisade").get("expiresAt") == data.get("expiresAt"))


def requests(cluster: FakeCluster, verbs: tuple[str, ...]) -> Counter[tuple[str, str]]:
    return Counter({key: n for key, n in cluster.request_counts().items() if key[0] in verbs})


async def test_a_steady_refresh_costs_two_writes_and_no_read_or_event(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    token_server.lifetime = 6
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "palisade"))
    # Past the first refresh: from then on every refresh is routine.
    await eventually(lambda: token_server.issued >= 2, timeout=30)
    # Start counting right after a refresh has landed (the next is ~4 s away), so no refresh
    # straddles the start of the window.
    await eventually(lambda: settled_refresh(seeded, token_server), timeout=30)
    events_before = len(seeded.events())
    cluster.reset_counts()
    issued_before = token_server.issued
    await eventually(lambda: token_server.issued >= issued_before + 2, timeout=30)
    # Stop before counting: shutdown lets the round in flight finish its writes.
    await operator.stop()
    refreshes = token_server.issued - issued_before
    writes = requests(cluster, WRITES)
    assert writes[("patch", "secrets")] == refreshes, writes
    assert writes[("patch", "clientcredentials/status")] == refreshes, writes
    assert set(writes) <= {("patch", "secrets"), ("patch", "clientcredentials/status")}, writes
    assert requests(cluster, READS) == Counter(), "a refresh read from the API instead of the caches"
    assert len(seeded.events()) == events_before, "a routine refresh posted an Event"
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_a_restart_with_valid_tokens_costs_no_exchange_no_write_and_a_constant_number_of_lists(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    for number in range(6):
        name = f"cc-{number}"
        seeded.put_secret(f"creds-{number}", {"clientId": "client-a", "clientSecret": CLIENT_SECRET})
        seeded.create_cc(name, cc_spec(token_server, credentialsRef={"name": f"creds-{number}"}))
    for number in range(6):
        await eventually(lambda n=number: ready(seeded, f"cc-{n}"))  # type: ignore[misc]
    await operator.stop()
    cluster.reset_counts()
    issued = token_server.issued

    await operator.start()
    # The restart is over when the operator has listed and then stays quiet for a while.
    await eventually(lambda: requests(cluster, ("list",)).total() >= 4)
    settled = await _quiet(cluster, seconds=3.0)
    assert settled, "the operator kept calling the API after the restart"
    assert token_server.issued == issued, "a restart with valid tokens exchanged again"
    assert requests(cluster, WRITES) == Counter(), "a restart with valid tokens wrote"
    reads = requests(cluster, READS)
    # One GET: the operator's own credentials-hash key, in its own namespace; none per resource.
    assert reads[("get", "secrets")] == 1, "a restart read credentials Secrets one by one"
    # One list per informer: ClientCredentials, target Secrets, Secret and ConfigMap metadata.
    assert reads[("list", "secrets")] == 2, reads
    assert reads[("list", "clientcredentials")] == 1, reads
    assert reads[("list", "configmaps")] == 1, reads
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def _quiet(cluster: FakeCluster, *, seconds: float) -> bool:
    """Whether the request counts (watches aside) stop changing for ``seconds`` within a minute."""
    deadline = time.monotonic() + 60
    last, since = cluster.request_counts(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = {k: v for k, v in cluster.request_counts().items() if k[0] != "watch"}
        if now != {k: v for k, v in last.items() if k[0] != "watch"}:
            last, since = cluster.request_counts(), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return True
    return False


async def test_no_finalizer_so_a_resource_deleted_while_the_operator_is_down_goes_with_its_secret(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "palisade"))
    assert not seeded.cc("palisade")["metadata"].get("finalizers")  # type: ignore[index]
    await operator.stop()
    seeded.delete_cc("palisade")
    await eventually(lambda: seeded.cc("palisade") is None, message="deleted without the operator")
    await eventually(lambda: seeded.secret("palisade") is None, message="the Secret garbage-collected")


async def test_the_upgrade_from_the_kopf_version_removes_its_leftovers_once_without_an_exchange(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    """Resources and Secrets as tokensync 0.1 (kopf) left them: finalizer, kopf annotations, no inputs-version."""
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "palisade"))
    await operator.stop()
    seeded.patch_cc(
        "palisade",
        {
            "metadata": {
                "finalizers": ["tokensync.io/finalizer", "example.com/keep"],
                "annotations": {"tokensync.io/last-handled-configuration": "{}", "team": "payments"},
            }
        },
    )
    secret = seeded.secret("palisade")
    assert secret is not None
    seeded.core.patch_namespaced_secret(
        "palisade",
        NAMESPACE,
        {"metadata": {"annotations": {"tokensync.io/inputs-version": None}}},
        _content_type="application/merge-patch+json",
    )
    issued = token_server.issued

    await operator.start()

    def cleaned() -> bool:
        meta = seeded.cc("palisade")["metadata"]  # type: ignore[index]
        return meta.get("finalizers") == ["example.com/keep"] and meta["annotations"] == {"team": "payments"}

    await eventually(cleaned, message="kopf's finalizer and annotations removed, others kept")
    await eventually(
        lambda: "tokensync.io/inputs-version" in (seeded.secret("palisade") or {})["metadata"]["annotations"]
    )
    assert token_server.issued == issued, "the upgrade exchanged a still-valid token"
    assert ready(seeded, "palisade")
    # And the resource can now be deleted without the old finalizer blocking it.
    seeded.patch_cc("palisade", {"metadata": {"finalizers": None}})
    seeded.delete_cc("palisade")
    await eventually(lambda: seeded.cc("palisade") is None)
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


@pytest.mark.operator_settings(namespaces=(NAMESPACE,))
async def test_watch_namespaces_mode_serves_its_namespace_and_never_calls_at_cluster_scope(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    await operator.stop()  # count only the operator's own calls, from its start
    seeded.create_cc("palisade", cc_spec(token_server))
    other = {"apiVersion": CC_GV, "kind": "ClientCredential", "metadata": {"name": "x", "namespace": "elsewhere"}}
    seeded.custom.create_namespaced_custom_object(
        "tokensync.io", "v1alpha1", "elsewhere", "clientcredentials", {**other, "spec": cc_spec(token_server)}
    )
    cluster.reset_counts()
    await operator.start()
    await eventually(lambda: ready(seeded, "palisade"))
    calls = cluster.api_calls()
    assert calls, "no API calls recorded"
    # The watched namespace, and the operator's own (its credentials-hash key) for one GET.
    own = {call for call in calls if call[3] == OPERATOR_NAMESPACE}
    assert own == {("get", "", "secrets", OPERATOR_NAMESPACE)}, own
    assert {namespace for (_, _, _, namespace) in calls - own} == {NAMESPACE}, calls
    assert seeded.cluster.get(CC_GV, "clientcredentials", "elsewhere", "x").get("status") is None  # type: ignore[union-attr]
    assert_clean(logs, CLIENT_SECRET, *token_server.tokens)


async def test_every_log_line_about_a_resource_names_it(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, logs: LogCapture
) -> None:
    seeded.put_secret("wrong", {"clientId": "client-a", "clientSecret": "not-it"})
    seeded.create_cc("palisade", cc_spec(token_server))
    seeded.create_cc("broken", cc_spec(token_server, credentialsRef={"name": "wrong"}))
    await eventually(lambda: ready(seeded, "palisade"))
    await eventually(lambda: seeded.condition("broken", "Ready").get("reason") == "InvalidCredentials")
    names = ("palisade", "broken")
    about = [
        r
        for r in logs.records
        if r.name.startswith("tokensync")
        and r.levelno >= logging.INFO
        and (any(name in r.getMessage() for name in names) or hasattr(r, "resource"))
    ]
    assert about, "no log lines about the resources"
    for record in about:
        assert getattr(record, "resource", "") in (f"{NAMESPACE}/palisade", f"{NAMESPACE}/broken"), record.getMessage()
    assert not [r for r in logs.records if r.name.startswith("tokensync.informer") and r.levelno >= logging.INFO]
