"""The operator process dying or stopping mid-exchange: ``tokensync run`` as a real process.

SIGKILL while an exchange is in flight loses no token (the Secret keeps the old one), creates no
second Secret, and costs at most the one exchange that died; SIGTERM lets the exchange in flight
finish and its token land in the Secret before the process exits.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import OperatorProcess
from tokensync.dev.cluster import FakeCluster
from tokensync.dev.tokenserver import DevTokenServer

from .conftest import (
    CLIENT_SECRET,
    NAMESPACE,
    Api,
    LogCapture,
    TokenRecorder,
    assert_no_leaks,
    cc_spec,
    eventually,
    exchanges,
    free_port,
    has_event,
    settled,
    spelled,
)


class Operator(OperatorProcess):
    """``tokensync run`` logging JSON to a file, with its readiness probe."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.health_port = free_port()
        args = [
            "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE, "--allowed-token-host", "127.0.0.1",
            "--log-format", "json", "--log-level", "debug", "--health-port", str(self.health_port),
        ]  # fmt: skip
        super().__init__(args, log)

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self) -> None:
        # Generous: importing and starting a process on a loaded 2-core machine takes seconds.
        await eventually(lambda: self.ready() or self.process.poll() is not None, timeout=90, interval=0.2)
        assert self.process.poll() is None, f"the operator exited: {self.log_path.read_text()[-3000:]}"


@pytest.fixture
def processes(kubeconfig: Path, tmp_path: Path) -> Iterator[list[Operator]]:
    """Operator processes started by the test (``start(processes, ...)``); all killed at the end."""
    started: list[Operator] = []
    yield started
    for process in started:
        process.close()
    text = (tmp_path / "operator.log").read_text() if (tmp_path / "operator.log").exists() else ""
    assert '"level": "ERROR"' not in text, text[-3000:]


def start(processes: list[Operator], kubeconfig: Path, tmp_path: Path) -> Operator:
    process = Operator(kubeconfig, tmp_path / "operator.log")
    processes.append(process)
    return process


def assert_no_leaks_in(log: Path, *values: str) -> None:
    text = log.read_text()
    assert '"level"' in text  # it logged at all
    for value in spelled(*values):
        assert value not in text, "a secret or token reached the operator's log"


async def test_sigkill_mid_exchange_loses_no_token_and_costs_at_most_the_exchange_that_died(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    kubeconfig: Path,
    tmp_path: Path,
    processes: list[Operator],
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    first = start(processes, kubeconfig, tmp_path)
    await first.wait_ready()
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: settled(seeded, "palisade"), timeout=30)
    old = seeded.secret("palisade")
    assert old is not None

    # A refresh whose exchange never comes back, then SIGKILL while it is in flight.
    token_server.fail("hang")
    seeded.request_refresh("palisade", "before-the-kill")
    await eventually(lambda: token_server.inflight == 1, timeout=30, message="the exchange in flight")
    first.signal(signal.SIGKILL)
    assert first.process.wait(30) == -signal.SIGKILL
    # The server sees its client die (recorded as 499): no token was minted for that exchange.
    await eventually(lambda: exchanges(token_server)[-1].status == 499, timeout=15, message="the client died")
    assert token_server.inflight == 0
    after_kill = seeded.secret("palisade")
    assert after_kill is not None
    assert after_kill["data"] == old["data"], "the kill cost the stored token"

    token_server.fail(None)
    second = start(processes, kubeconfig, tmp_path)
    await second.wait_ready()
    # The refresh request survived the kill: the new process acts on it, once.
    await eventually(
        lambda: (
            seeded.status("palisade").get("lastRefreshRequest") == "before-the-kill"
            and settled(seeded, "palisade", token_server.tokens[-1])
        ),
        timeout=30,
    )
    records = exchanges(token_server)
    assert [r.status for r in records] == [200, 499, 200], "more than one extra exchange"
    assert token_server.issued == 2
    secrets = [
        s["metadata"]["name"]
        for s in cluster.list("v1", "secrets", NAMESPACE)
        if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "tokensync"
    ]
    assert secrets == ["palisade"]
    assert cluster.object_request_counts(NAMESPACE, "palisade").get(("create", "secrets")) == 1
    assert has_event(seeded, "palisade", "Normal", "Issued")
    assert not [e for e in seeded.events() if e.get("type") == "Warning"]
    assert_no_leaks_in(first.log_path, CLIENT_SECRET, *minted.tokens)
    assert_no_leaks(seeded, logs, minted)


async def test_sigterm_waits_for_the_exchange_in_flight_and_its_token_lands_before_exit(
    cluster: FakeCluster,
    seeded: Api,
    token_server: DevTokenServer,
    kubeconfig: Path,
    tmp_path: Path,
    processes: list[Operator],
    logs: LogCapture,
    minted: TokenRecorder,
) -> None:
    process = start(processes, kubeconfig, tmp_path)
    await process.wait_ready()
    token_server.fail("slow", delay=3)
    seeded.create_cc("palisade", cc_spec(token_server))
    await eventually(lambda: token_server.inflight == 1, timeout=30, message="the exchange in flight")

    process.signal(signal.SIGTERM)
    signalled = time.time()
    await eventually(lambda: process.process.poll() is not None, timeout=60, message="the process exited")
    exited = time.time()
    assert process.process.returncode == 0, process.log_path.read_text()[-3000:]
    # The exchange was not cut off: it completed, and its token is in the Secret and in status.
    [record] = exchanges(token_server)
    assert record.status == 200
    assert signalled < record.at < exited
    assert token_server.issued == 1
    assert seeded.secret_data("palisade").get("accessToken") == token_server.tokens[0]
    assert settled(seeded, "palisade", token_server.tokens[0])
    assert cluster.object_request_counts(NAMESPACE, "palisade").get(("create", "secrets")) == 1
    assert has_event(seeded, "palisade", "Normal", "Issued")  # the whole round ran before the exit
    assert_no_leaks_in(process.log_path, CLIENT_SECRET, *minted.tokens)
    assert_no_leaks(seeded, logs, minted)
