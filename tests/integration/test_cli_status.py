"""``tokensync status`` and ``tokensync refresh`` end to end: the real operator, the API stand-in, a real token server.

The commands run as a user runs them (click's runner, in a thread of their own, since they run
their own event loop) against a kubeconfig whose context names the namespace ``payments``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from tokensync.cli import main
from tokensync.core import parse_rfc3339
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CC_GV, CLIENT_ID, CLIENT_SECRET, NAMESPACE, Api, LogCapture, OperatorRunner, cc_spec, eventually

REFRESH = "tokensync.io/refresh-requested-at"
WRONG_SECRET = "wr0ng-C-9d2e6a1f"
OTHER_CLIENT, OTHER_SECRET = "client-b", "s3cr3t-B-44aa0c6e9f1b"
#: A loaded 2-core machine: every wait is on a condition, with a generous deadline.
DEADLINE = 60.0


async def tokensync(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the command line in a thread (it runs its own event loop), as a user would."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


def reason(api: Api, name: str) -> str | None:
    return api.condition(name, "Ready").get("reason")


def issued_at(api: Api, secret: str) -> str | None:
    return ((api.secret(secret) or {}).get("metadata") or {}).get("annotations", {}).get("tokensync.io/issued-at")


async def create_ready(api: Api, server: DevTokenServer, name: str, **spec: Any) -> None:
    api.create_cc(name, cc_spec(server, **spec))
    await eventually(lambda: ready(api, name), timeout=DEADLINE, message=f"{name} Ready")


def put_secret_in(api: Api, namespace: str, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    api.core.create_namespaced_secret(namespace, body)


def create_cc_in(api: Api, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": CC_GV, "kind": "ClientCredential", "metadata": {"name": name, "namespace": namespace}}
    api.custom.create_namespaced_custom_object(
        "tokensync.io", "v1alpha1", namespace, "clientcredentials", {**body, "spec": spec}
    )


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def assert_no_secrets(result: Result, server: DevTokenServer) -> None:
    for secret in (CLIENT_SECRET, WRONG_SECRET, OTHER_SECRET, *server.tokens):
        assert secret not in result.output, "a secret or a token was printed"


# status -----------------------------------------------------------------------------------------


async def test_status_prints_a_table_of_ready_and_failing_resources_in_the_contexts_namespace(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path
) -> None:
    await create_ready(seeded, token_server, "good")
    seeded.put_secret("bad-credentials", {"clientId": CLIENT_ID, "clientSecret": WRONG_SECRET})
    seeded.create_cc("bad", cc_spec(token_server, credentialsRef={"name": "bad-credentials"}))
    await eventually(lambda: reason(seeded, "bad") == "InvalidCredentials", timeout=DEADLINE, message="bad fails")

    # The namespace comes from the kubeconfig's context ($KUBECONFIG), as with kubectl.
    result = await tokensync("status", env={"KUBECONFIG": str(kubeconfig)})

    assert result.exit_code == 0, result.output
    header, bad, good = lines(result)
    assert header.split() == ["NAME", "READY", "REASON", "EXPIRES", "IN", "NEXT", "RENEWAL", "LAST", "FAILURE"]
    assert re.fullmatch(r"good\s+True\s+TokenIssued\s+(59|60)m\s+(3\d|4\d)m\s+<none>", good), good
    assert re.fullmatch(r"bad\s+False\s+InvalidCredentials\s+<none>\s+<none>\s+InvalidCredentials: .+", bad), bad
    # Columns line up under their headers.
    assert good.index("True") == header.index("READY") == bad.index("False")
    assert_no_secrets(result, token_server)


async def test_status_of_one_name_as_json_and_yaml_holds_the_facts_and_the_raw_status(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path
) -> None:
    await create_ready(seeded, token_server, "single")
    await create_ready(seeded, token_server, "other")

    as_json = await tokensync("status", "single", "-o", "json", "--kubeconfig", str(kubeconfig))
    as_yaml = await tokensync("status", "single", "-o", "yaml", "--kubeconfig", str(kubeconfig))

    assert as_json.exit_code == 0, as_json.output
    assert as_yaml.exit_code == 0, as_yaml.output
    items = json.loads(as_json.stdout)
    assert yaml.safe_load(as_yaml.stdout) == items
    [item] = items
    status = seeded.status("single")
    assert item["name"] == "single"
    assert item["namespace"] == NAMESPACE
    assert item["ready"] == "True"
    assert item["reason"] == "TokenIssued"
    assert item["secretName"] == "single"
    assert item["expiresAt"] == status["expiresAt"]
    assert item["renewalTime"] == status["renewalTime"]
    assert 3500 < item["expiresInSeconds"] <= 3600
    assert item["lastFailure"] is None
    assert item["status"] == status
    assert_no_secrets(as_json, token_server)


async def test_status_of_a_missing_name_is_not_found_and_exits_1(cluster: FakeCluster, kubeconfig: Path) -> None:
    result = await tokensync("status", "nowhere", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 1
    assert result.stderr.strip() == 'Error from server (NotFound): clientcredentials.tokensync.io "nowhere" not found'


async def test_status_in_an_empty_namespace_says_so_and_exits_0(cluster: FakeCluster, kubeconfig: Path) -> None:
    table = await tokensync("status", "-n", "empty", "--kubeconfig", str(kubeconfig))
    as_json = await tokensync("status", "-n", "empty", "-o", "json", "--kubeconfig", str(kubeconfig))

    assert table.exit_code == 0, table.output
    assert table.stdout == ""
    assert table.stderr.strip() == "No resources found in empty namespace."
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == []


async def test_status_across_namespaces_adds_a_namespace_column_and_shows_resources_without_status(
    seeded: Api, token_server: DevTokenServer, cluster: FakeCluster, kubeconfig: Path
) -> None:
    # No operator: a resource nobody reported on yet is Unknown, with nothing else to say.
    seeded.create_cc("here", cc_spec(token_server))
    create_cc_in(seeded, "elsewhere", "there", cc_spec(token_server))

    result = await tokensync("status", "-A", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 0, result.output
    header, there, here = lines(result)
    assert header.split()[:3] == ["NAMESPACE", "NAME", "READY"]
    assert there.split() == ["elsewhere", "there", "Unknown", "<none>", "<none>", "<none>", "<none>"]
    assert here.split() == [NAMESPACE, "here", "Unknown", "<none>", "<none>", "<none>", "<none>"]


async def test_status_uses_the_chosen_context_and_its_namespace(
    seeded: Api, token_server: DevTokenServer, cluster: FakeCluster, tmp_path: Path
) -> None:
    # Two contexts on one server: "payments" is current, "billing" names the namespace billing.
    config = yaml.safe_load(cluster.write_kubeconfig(tmp_path / "two", namespace=NAMESPACE).read_text())
    billing = {"name": "billing", "context": {**config["contexts"][0]["context"], "namespace": "billing"}}
    config["contexts"].append(billing)
    (tmp_path / "two").write_text(yaml.safe_dump(config))
    create_cc_in(seeded, "billing", "invoices", cc_spec(token_server))

    current = await tokensync("status", "--kubeconfig", str(tmp_path / "two"))
    chosen = await tokensync("status", "--kubeconfig", str(tmp_path / "two"), "--context", "billing")
    unknown = await tokensync("status", "--kubeconfig", str(tmp_path / "two"), "--context", "nope")

    assert current.exit_code == 0, current.output
    assert "No resources found in payments namespace." in current.stderr
    assert chosen.exit_code == 0, chosen.output
    assert lines(chosen)[1].split()[0] == "invoices"
    assert unknown.exit_code == 1
    assert 'context "nope" does not exist' in unknown.stderr


# refresh ----------------------------------------------------------------------------------------


async def test_refresh_wait_returns_once_the_secret_holds_a_new_token(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path, logs: LogCapture
) -> None:
    await create_ready(seeded, token_server, "palisade")
    before = token_server.issued

    result = await tokensync("refresh", "palisade", "--wait", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 0, result.output
    assert token_server.issued == before + 1
    value = seeded.cc("palisade")["metadata"]["annotations"][REFRESH]
    assert seeded.status("palisade")["lastRefreshRequest"] == value
    assert parse_rfc3339(issued_at(seeded, "palisade") or "") >= parse_rfc3339(value).replace(microsecond=0)
    requested, refreshed = lines(result)
    assert requested == f"clientcredential.tokensync.io/palisade refresh requested ({REFRESH}={value})"
    assert re.fullmatch(
        r"clientcredential\.tokensync\.io/palisade refreshed: a new token was issued at \S+Z, expires in (59|60)m",
        refreshed,
    ), refreshed
    assert_no_secrets(result, token_server)
    assert CLIENT_SECRET not in logs.text


async def test_refresh_all_and_by_selector_wait_for_a_new_token_each(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path
) -> None:
    # Different clients, so no two resources can share one exchange: one new token per resource.
    token_server.credentials = {CLIENT_ID: CLIENT_SECRET, OTHER_CLIENT: OTHER_SECRET}
    seeded.put_secret("other-credentials", {"clientId": OTHER_CLIENT, "clientSecret": OTHER_SECRET})
    seeded.create_cc("alpha", cc_spec(token_server), labels={"team": "a"})
    seeded.create_cc("beta", cc_spec(token_server, credentialsRef={"name": "other-credentials"}), labels={"team": "b"})
    await eventually(lambda: ready(seeded, "alpha") and ready(seeded, "beta"), timeout=DEADLINE, message="Ready")
    before = token_server.issued

    everything = await tokensync("refresh", "--all", "--wait", "--kubeconfig", str(kubeconfig))

    assert everything.exit_code == 0, everything.output
    assert token_server.issued == before + 2
    assert sum("refreshed: a new token" in line for line in lines(everything)) == 2
    alpha_request = seeded.cc("alpha")["metadata"]["annotations"][REFRESH]

    selected = await tokensync("refresh", "-l", "team=b", "--wait", "--kubeconfig", str(kubeconfig))

    assert selected.exit_code == 0, selected.output
    assert token_server.issued == before + 3
    assert [line.split()[0] for line in lines(selected)] == ["clientcredential.tokensync.io/beta"] * 2
    assert seeded.cc("alpha")["metadata"]["annotations"][REFRESH] == alpha_request, "alpha was not selected"


async def test_refresh_wait_reports_a_failed_exchange_with_its_reason_and_exits_1(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path
) -> None:
    await create_ready(seeded, token_server, "rejected")
    token_server.credentials = {CLIENT_ID: "rotated-at-the-provider-only"}

    result = await tokensync("refresh", "rejected", "--wait", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 1, result.output
    assert "error: clientcredential.tokensync.io/rejected: the refresh failed: InvalidCredentials" in result.stderr
    assert (
        seeded.status("rejected")["pendingRefreshRequest"] == seeded.cc("rejected")["metadata"]["annotations"][REFRESH]
    )
    assert_no_secrets(result, token_server)


async def test_refresh_without_an_operator_sets_a_new_request_each_call_and_wait_times_out(
    seeded: Api, token_server: DevTokenServer, kubeconfig: Path
) -> None:
    seeded.create_cc("idle", cc_spec(token_server))

    first = await tokensync("refresh", "idle", "--kubeconfig", str(kubeconfig))
    value = seeded.cc("idle")["metadata"]["annotations"][REFRESH]
    waited = await tokensync("refresh", "idle", "--wait", "--timeout", "2", "--kubeconfig", str(kubeconfig))

    assert first.exit_code == 0, first.output
    assert parse_rfc3339(value)
    assert seeded.cc("idle")["metadata"]["annotations"][REFRESH] != value, "each call is a new request"
    assert waited.exit_code == 1
    assert "timed out after 2s waiting for a new token; it has no status: is the operator running?" in waited.stderr


async def test_refresh_wait_on_a_suspended_resource_fails_at_once(
    seeded: Api, token_server: DevTokenServer, kubeconfig: Path
) -> None:
    seeded.create_cc("paused", cc_spec(token_server, suspend=True))

    result = await tokensync("refresh", "paused", "--wait", "--kubeconfig", str(kubeconfig))

    assert result.exit_code == 1
    assert "it is suspended (spec.suspend: true)" in result.stderr
    assert REFRESH in seeded.cc("paused")["metadata"]["annotations"], "the request stays for when it is resumed"


async def test_refresh_of_a_missing_name_or_an_empty_selection_exits_1(cluster: FakeCluster, kubeconfig: Path) -> None:
    missing = await tokensync("refresh", "nowhere", "--kubeconfig", str(kubeconfig))
    nothing = await tokensync("refresh", "-l", "team=none", "--kubeconfig", str(kubeconfig))

    assert missing.exit_code == 1
    assert missing.stderr.strip() == 'Error from server (NotFound): clientcredentials.tokensync.io "nowhere" not found'
    assert nothing.exit_code == 1
    assert "No resources found in payments namespace. Nothing to refresh." in nothing.stderr
