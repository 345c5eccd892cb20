"""``kubectl get cc`` reads right: the real kubectl against the API stand-in, with the real operator.

kubectl asks the server for a Table and prints its cells. The stand-in renders it from the CRD's
printer columns as the apiserver does (tests/devcluster/test_tables.py; tests/e2e/test_table_fidelity.py
checks the same rendering against a real apiserver), so what kubectl prints here is what a user sees:
the expiry and the next renewal as timestamps (a ``date`` column would print a future time as
``<invalid>``), Ready and the reason of a failure.

kubectl is the binary ``make tools`` installs in .tools/bin; without it the tests fail and say so.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import subprocess
from pathlib import Path

import pytest

from tokensync.core import parse_rfc3339
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import CLIENT_ID, NAMESPACE, Api, OperatorRunner, cc_spec, eventually

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
WRONG_SECRET = "wr0ng-K-1b7e4c9a2d"
#: A loaded 2-core machine: every wait is on a condition, with a generous deadline.
DEADLINE = 60.0
AGE = re.compile(r"\d+s|\dm\d*s?")


def kubectl_binary() -> Path:
    """The kubectl that ``make tools`` installs; a test failure that says so when it is missing."""
    if not (KUBECTL.is_file() and os.access(KUBECTL, os.X_OK)):
        pytest.fail(
            f"{KUBECTL.relative_to(REPO)} is missing: run `make tools` (scripts/install-tools.sh)", pytrace=False
        )
    return KUBECTL


def run_kubectl(kubeconfig: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as a user runs it, with its discovery cache kept out of $HOME."""
    argv = [str(kubectl_binary()), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args]
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


def table(output: str) -> list[dict[str, str]]:
    """The rows of kubectl's table, as {HEADER: cell}, cut at the columns' positions (cells may be empty)."""
    header, *lines = output.splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines:
        bounds = [*starts[1:], None]
        rows.append({name: line[start:end].strip() for name, start, end in zip(names, starts, bounds, strict=True)})
    return rows


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


def reason(api: Api, name: str) -> str | None:
    return api.condition(name, "Ready").get("reason")


async def test_kubectl_get_cc_prints_expiry_and_renewal_as_timestamps(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path, tmp_path: Path
) -> None:
    kubectl_binary()  # fail early, before waiting for the operator, when it is missing
    seeded.create_cc("orders", cc_spec(token_server))
    seeded.put_secret("bad-credentials", {"clientId": CLIENT_ID, "clientSecret": WRONG_SECRET})
    seeded.create_cc("broken", cc_spec(token_server, credentialsRef={"name": "bad-credentials"}))
    await eventually(lambda: ready(seeded, "orders"), timeout=DEADLINE, message="orders Ready")
    await eventually(lambda: reason(seeded, "broken") == "InvalidCredentials", timeout=DEADLINE, message="broken")
    status = seeded.status("orders")

    cache = tmp_path / "kubectl-cache"
    plain, wide = await asyncio.gather(
        asyncio.to_thread(run_kubectl, kubeconfig, cache, "get", "cc", "-n", NAMESPACE),
        asyncio.to_thread(run_kubectl, kubeconfig, cache / "wide", "get", "cc", "-n", NAMESPACE, "-o", "wide"),
    )

    for result in (plain, wide):
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no warnings either (a short name matching a subresource)
    assert plain.stdout.splitlines()[0].split() == ["NAME", "READY", "SECRET", "EXPIRES", "AGE"]
    assert wide.stdout.splitlines()[0].split() == ["NAME", "READY", "REASON", "SECRET", "EXPIRES", "RENEWS", "AGE"]

    broken, orders = table(plain.stdout)
    assert (orders["NAME"], orders["READY"], orders["SECRET"]) == ("orders", "True", status["secretName"])
    # The expiry as stored: a timestamp about an hour ahead (a date column would print <invalid>).
    assert orders["EXPIRES"] == status["expiresAt"]
    expires = parse_rfc3339(orders["EXPIRES"])
    ahead = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=55) < ahead <= datetime.timedelta(hours=1)
    assert AGE.fullmatch(orders["AGE"]), orders["AGE"]
    assert (broken["NAME"], broken["READY"]) == ("broken", "False")
    assert broken["EXPIRES"] == (seeded.status("broken").get("expiresAt") or "")  # never issued: empty
    assert AGE.fullmatch(broken["AGE"]), broken["AGE"]

    wide_broken, wide_orders = table(wide.stdout)
    assert wide_orders["REASON"] == "TokenIssued"
    assert wide_orders["EXPIRES"] == status["expiresAt"]
    assert wide_orders["RENEWS"] == status["renewalTime"]
    assert parse_rfc3339(wide_orders["RENEWS"]) < expires
    assert (wide_broken["READY"], wide_broken["REASON"]) == ("False", "InvalidCredentials")
    assert "<invalid>" not in plain.stdout + wide.stdout


async def test_kubectl_get_one_cc_by_name_and_by_category(
    seeded: Api, token_server: DevTokenServer, operator: OperatorRunner, kubeconfig: Path, tmp_path: Path
) -> None:
    kubectl_binary()
    seeded.create_cc("orders", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "orders"), timeout=DEADLINE, message="orders Ready")
    status = seeded.status("orders")
    cache = tmp_path / "kubectl-cache"

    one = await asyncio.to_thread(run_kubectl, kubeconfig, cache, "get", "clientcredential", "orders")
    # The CRD's category: `kubectl get tokensync` lists ClientCredentials.
    category = await asyncio.to_thread(run_kubectl, kubeconfig, cache, "get", "tokensync", "-o", "wide")

    assert one.returncode == 0, one.stderr
    [row] = table(one.stdout)  # the namespace comes from the kubeconfig's context
    assert (row["NAME"], row["READY"], row["EXPIRES"]) == ("orders", "True", status["expiresAt"])
    assert category.returncode == 0, category.stderr
    [row] = table(category.stdout)
    assert row["NAME"] == "orders"
    assert (row["REASON"], row["RENEWS"]) == ("TokenIssued", status["renewalTime"])
