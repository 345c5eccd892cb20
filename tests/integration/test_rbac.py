"""Every API call the operator makes is allowed by the RBAC the chart renders, in both install modes.

The operator runs against the API stand-in through a whole life (issue, refresh, failure,
events, deletion, leader election); the stand-in records each (verb, group, resource,
namespace) it was asked for; each must be granted to the chart's ServiceAccount by the
rendered (Cluster)Roles and bindings, evaluated the way Kubernetes RBAC evaluates them.
"""

from __future__ import annotations

from tests.chart.support import NAMESPACE as RELEASE_NAMESPACE
from tests.chart.support import helm_template, rbac_allows
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import NAMESPACE, Api, OperatorRunner, cc_spec, eventually

SERVICE_ACCOUNT = "tokensync"


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


async def exercise(seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, **settings: object) -> None:
    """A life that makes every kind of call: lists, watches, reads, writes, events, the Lease."""
    await operator.stop()
    # The test's own writes come first: only the operator's calls are counted.
    seeded.create_cc("palisade", cc_spec(token_server))
    seeded.put_secret("wrong", {"clientId": "client-a", "clientSecret": "not-it"})
    seeded.create_cc("broken", cc_spec(token_server, credentialsRef={"name": "wrong"}))
    seeded.cluster.reset_counts()
    await operator.start(**settings)
    await eventually(lambda: ready(seeded, "palisade"))
    await eventually(lambda: seeded.condition("broken", "Ready").get("reason") == "InvalidCredentials")
    await operator.stop()


#: The one named read the operator makes: its credentials-hash key (the stand-in records calls
#: without names, so this call is checked with its name; the chart grants it by resourceNames).
HASH_KEY_READ = ("get", "", "secrets", RELEASE_NAMESPACE)
HASH_KEY_SECRET = "tokensync-hash-key"


def uncovered(cluster: FakeCluster, *helm_args: str) -> list[tuple[str, str, str, str]]:
    docs = helm_template(*helm_args).docs

    def allowed(call: tuple[str, str, str, str]) -> bool:
        name = HASH_KEY_SECRET if call == HASH_KEY_READ else ""
        return rbac_allows(docs, SERVICE_ACCOUNT, RELEASE_NAMESPACE, *call, name=name)

    return sorted(call for call in cluster.api_calls() if not allowed(call))


async def test_cluster_wide_install_grants_every_call_the_operator_makes(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    await exercise(
        seeded, token_server, operator, leader_election=True, election_namespace=RELEASE_NAMESPACE, retry_period=0.5
    )
    assert cluster.api_calls(), "no calls recorded"
    assert uncovered(cluster, "--set", "replicaCount=2") == []
    assert cluster.get("v1", "secrets", RELEASE_NAMESPACE, HASH_KEY_SECRET) is not None, "no key was kept"


async def test_watch_namespaces_install_grants_every_call_the_operator_makes(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, operator: OperatorRunner
) -> None:
    await exercise(
        seeded,
        token_server,
        operator,
        namespaces=(NAMESPACE,),
        leader_election=True,
        election_namespace=RELEASE_NAMESPACE,
        retry_period=0.5,
    )
    calls = cluster.api_calls()
    assert all(namespace for (_, _, _, namespace) in calls), "a cluster-scope call in watchNamespaces mode"
    assert HASH_KEY_READ in calls, "the operator did not read its credentials-hash key"
    assert uncovered(cluster, "--set", f"watchNamespaces={{{NAMESPACE}}}", "--set", "replicaCount=2") == []
