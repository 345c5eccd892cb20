"""HA by a Lease: two operator processes, one actor; a SIGKILLed leader is replaced within the
lease duration, a SIGTERMed one hands over at once. Real processes, as in a cluster."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import OperatorProcess
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import NAMESPACE, Api, cc_spec, eventually

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 0.5
#: Scheduling slack on a loaded 2-core machine, on top of what the protocol allows.
SLACK = 8.0


class Replica(OperatorProcess):
    def __init__(self, name: str, kubeconfig: Path, log: Path, lease: float, renew: float) -> None:
        self.name = name
        args = [
            "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE, "--allowed-token-host", "127.0.0.1",
            "--log-format", "json", "--leader-elect", "--leader-election-namespace", NAMESPACE,
            "--leader-election-id", "tokensync", f"--lease-duration={lease}", f"--renew-deadline={renew}",
            f"--retry-period={RETRY_PERIOD}",
        ]  # fmt: skip
        super().__init__(args, log, pod_name=name)


@pytest.fixture
def replicas(kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Replica]]:
    """Two operator processes; ``@pytest.mark.parametrize("lease", ...)`` may set (duration, deadline)."""
    lease, renew = getattr(request, "param", (LEASE_DURATION, RENEW_DEADLINE))
    started = {name: Replica(name, kubeconfig, tmp_path / f"{name}.log", lease, renew) for name in ("op-a", "op-b")}
    try:
        yield started
    finally:
        for replica in started.values():
            replica.close()
        logs = "\n".join((tmp_path / f"{name}.log").read_text() for name in started)
        assert '"level": "ERROR"' not in logs, logs[-3000:]


def holder(cluster: FakeCluster) -> str:
    lease = cluster.get("coordination.k8s.io/v1", "leases", NAMESPACE, "tokensync") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def ready(api: Api, name: str) -> bool:
    return api.condition(name, "Ready").get("status") == "True"


async def test_one_replica_acts_and_a_killed_leader_is_replaced_within_the_lease_duration(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, replicas: dict[str, Replica]
) -> None:
    first = await eventually(lambda: holder(cluster), timeout=60, message="a leader")
    seeded.create_cc("palisade", cc_spec(token_server))
    seeded.create_cc("second", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "palisade") and ready(seeded, "second"), timeout=60)
    assert token_server.issued == 1, "two replicas exchanged, or identical credentials were not shared"

    killed = time.monotonic()
    replicas[first].signal(signal.SIGKILL)
    seeded.request_refresh("palisade", "after-failover")
    second = await eventually(
        lambda: holder(cluster) if holder(cluster) not in ("", first) else None, timeout=60, message="a new leader"
    )
    took_over = time.monotonic() - killed
    await eventually(lambda: seeded.status("palisade").get("lastRefreshRequest") == "after-failover", timeout=60)
    assert second != first
    assert took_over <= LEASE_DURATION + 2 * RETRY_PERIOD + SLACK, f"failover took {took_over:.1f}s"
    assert token_server.issued == 2, "the new leader exchanged more than the one requested refresh"


LONG_LEASE = 60.0


@pytest.mark.parametrize("replicas", [(LONG_LEASE, 40.0)], indirect=True)
async def test_a_stopped_leader_releases_the_lease_and_the_standby_takes_over_at_once(
    cluster: FakeCluster, seeded: Api, token_server: DevTokenServer, replicas: dict[str, Replica]
) -> None:
    first = await eventually(lambda: holder(cluster), timeout=60, message="a leader")
    # The standby has synced its caches too before the hand-over is timed.
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: ready(seeded, "palisade"), timeout=60)

    stopped = time.monotonic()
    replicas[first].signal(signal.SIGTERM)
    assert replicas[first].process.wait(60) == 0, "SIGTERM did not end the leader cleanly"
    second = await eventually(lambda: holder(cluster) if holder(cluster) not in ("", first) else None, timeout=60)
    took_over = time.monotonic() - stopped
    assert second != first
    # Released: the standby takes over at its next retry, not after the (long) lease duration.
    assert took_over < RETRY_PERIOD + SLACK < LONG_LEASE, f"hand-over took {took_over:.1f}s"
    seeded.request_refresh("palisade", "after-handover")
    await eventually(lambda: seeded.status("palisade").get("lastRefreshRequest") == "after-handover", timeout=60)
