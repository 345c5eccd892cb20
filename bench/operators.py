"""The operators under test and how to launch them: tokensync itself, and the naive kopf baseline.

Both run as their own process (``Children`` kills them on exit); the bench only talks to them
through their health and metrics ports, and watches them through the API stand-in.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .kube import Api
from .measure import Scrape, scrape
from .procs import Child, Children, child_environment, free_port

BENCH_DIR = Path(__file__).resolve().parent
NAIVE_OPERATOR = BENCH_DIR / "naive_operator.py"
ALLOWED_TOKEN_HOST = "127.0.0.1"
# The operator's defaults, stated so that the numbers name the configuration they were measured with.
WORKERS = 16
MAX_EXCHANGES_PER_HOST = 8


@dataclass(frozen=True)
class Election:
    namespace: str
    name: str
    lease_duration: int
    renew_deadline: int
    retry_period: int


@dataclass
class Operator:
    """A running operator process and its ports."""

    child: Child
    identity: str
    metrics_port: int
    health_port: int
    ready_path: str

    @property
    def pid(self) -> int:
        return self.child.pid

    def scrape(self) -> Scrape | None:
        return scrape(self.metrics_port)

    def probe(self, path: str) -> int | None:
        try:
            url = f"http://127.0.0.1:{self.health_port}{path}"
            return httpx.get(url, timeout=5.0, trust_env=False).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the ready probe answers 200 (/readyz; an operator without one falls back to /healthz)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.child.check_alive()
            status = self.probe(self.ready_path)
            if status == 200:
                return
            if status == 404 and self.ready_path != "/healthz":
                self.ready_path = "/healthz"  # an older build without /readyz
            time.sleep(0.1)
        raise TimeoutError(f"{self.child.name} not ready on {self.ready_path} within {timeout:.0f}s")


class Flavor:
    """How to start one kind of operator."""

    name: str
    uses_lease: bool  # leader election by a coordination.k8s.io Lease (else: kopf peering)
    ready_path: str
    timer_interval = 0.0  # a fixed refresh timer: the refresh window must span one period of it

    def command(
        self, kubeconfig: Path, metrics_port: int, health_port: int, election: Election | None, identity: str
    ) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def prepare_election(self, api: Api, election: Election) -> None:
        """Create what the election needs before the replicas start (nothing for a Lease)."""

    def start(
        self,
        children: Children,
        kubeconfig: Path,
        *,
        identity: str = "bench-0",
        election: Election | None = None,
    ) -> Operator:
        metrics_port, health_port = free_port(), free_port()
        argv, env = self.command(kubeconfig, metrics_port, health_port, election, identity)
        child = children.start(f"{self.name}-{identity}", argv, env)
        operator = Operator(child, identity, metrics_port, health_port, self.ready_path)
        try:
            operator.wait_ready()
        except BaseException:
            child.kill()
            raise
        return operator


class Tokensync(Flavor):
    """``tokensync run`` with the controller-runtime-style shell's flags."""

    name = "tokensync"
    uses_lease = True
    ready_path = "/readyz"

    def __init__(self, command: str | None = None) -> None:
        # Default: the console script next to this interpreter (the project's venv).
        default = [str(Path(sys.executable).with_name("tokensync")), "run"]
        self.base = shlex.split(command) if command else default

    def command(
        self, kubeconfig: Path, metrics_port: int, health_port: int, election: Election | None, identity: str
    ) -> tuple[list[str], dict[str, str]]:
        argv = [
            *self.base,
            "--kubeconfig", str(kubeconfig),
            "--all-namespaces",
            "--allowed-token-host", ALLOWED_TOKEN_HOST,
            "--metrics-port", str(metrics_port),
            "--health-port", str(health_port),
            "--workers", str(WORKERS),
            "--max-exchanges-per-host", str(MAX_EXCHANGES_PER_HOST),
        ]  # fmt: skip
        if election is not None:
            argv += [
                "--leader-elect",
                "--leader-election-namespace", election.namespace,
                "--leader-election-id", election.name,
                "--lease-duration", str(election.lease_duration),
                "--renew-deadline", str(election.renew_deadline),
                "--retry-period", str(election.retry_period),
            ]  # fmt: skip
        return argv, child_environment({"POD_NAME": identity})


class Naive(Flavor):
    """The comparison baseline (bench/naive_operator.py) under ``kopf run``; HA by kopf peering."""

    name = "naive"
    uses_lease = False
    ready_path = "/healthz"  # kopf's liveness endpoint: kopf has no readiness probe

    def __init__(self, interval: float) -> None:
        self.timer_interval = interval

    def command(
        self, kubeconfig: Path, metrics_port: int, health_port: int, election: Election | None, identity: str
    ) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(Path(sys.executable).with_name("kopf")), "run", str(NAIVE_OPERATOR),
            "--all-namespaces",
            "--liveness", f"http://127.0.0.1:{health_port}/healthz",
        ]  # fmt: skip
        if election is None:
            argv.append("--standalone")
        else:
            # kopf peering: the highest priority acts; the replica started first ("a") leads.
            argv += ["--peering", election.name, "--priority", "100" if identity.endswith("a") else "50"]
        env = {
            "KUBECONFIG": str(kubeconfig),
            "NAIVE_INTERVAL": str(self.timer_interval),
            "NAIVE_METRICS_PORT": str(metrics_port),
        }
        return argv, child_environment(env)

    def prepare_election(self, api: Api, election: Election) -> None:
        # kopf needs its peering object to exist; with --all-namespaces it is cluster-scoped.
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": election.name}}
        if api.get(f"/apis/kopf.dev/v1/clusterkopfpeerings/{election.name}") is None:
            api.create("/apis/kopf.dev/v1/clusterkopfpeerings", body)
