"""One soak run: the API stand-in and the operator as processes, the token server, reader and chaos as threads.

1. Set-up: namespaces, CA ConfigMaps and one credentials Secret per resource; the reader starts;
   the operator starts; the ClientCredentials are created spread over one maximal lifetime (so
   their renewals do not come due in one burst); the run waits until every Secret holds a token.
2. Chaos, for ``duration`` seconds: the token endpoint fails in random windows, token lifetimes
   change every few seconds, and the operator is restarted (SIGTERM or SIGKILL) at random.
   Before each stop the operator's metrics and memory are read.
3. The end: the endpoint is healthy again, the operator's metrics are read a last time and it
   gets SIGTERM; the reader polls once more and the numbers are worked out (``report.py``).
"""

from __future__ import annotations

import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tokensync.dev.tokenserver import DevTokenServer, RequestRecord

from .. import kube
from ..kube import Api, wait_until
from ..measure import Scrape, cpu_seconds, read_memory
from ..operators import Operator, Tokensync
from ..procs import Children, start_standin
from .chaos import EndpointChaos, Interval, Plan, RestartStep
from .config import SoakConfig
from .reader import SecretReader

CA_NAME = "soak-ca"
GROUP = "soak"
IDENTITY = "soak"
#: A SIGTERMed operator that has not exited after this long is SIGKILLed (and the run says so).
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Resource:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def client_id(self) -> str:
        return f"soak-{self.namespace}-{self.name}"

    @property
    def credentials(self) -> str:
        return f"{self.name}-credentials"


@dataclass
class Life:
    """One operator process, from start to exit."""

    operator: Operator
    started_at: float
    ready_at: float
    stopped_at: float | None = None
    how: str = ""  # SIGTERM, SIGKILL, crashed, end
    exit_code: int | None = None
    stop_seconds: float | None = None  # SIGTERM: how long the graceful stop took
    scrape: Scrape | None = None  # the last scrape before the stop
    hwm_mib: float | None = None
    cpu_seconds: float | None = None


@dataclass
class Outcome:
    """What the run saw; ``report.analyse`` turns it into numbers and verdicts."""

    config: SoakConfig
    plan: Plan
    resources: list[Resource]
    soak_start: float = 0.0
    soak_end: float = 0.0  # the end of the chaos phase
    settle_end: float = 0.0  # the end of the run: every Secret valid again, or settle_max passed
    recovery_seconds: float | None = None  # from the end of the chaos until every Secret was valid
    setup_seconds: float = 0.0
    lives: list[Life] = field(default_factory=list)
    down: list[Interval] = field(default_factory=list)  # operator not serving: [signal, new /readyz]
    unhealthy: list[Interval] = field(default_factory=list)  # endpoint fault windows: [on, off]
    faulty_seconds: float = 0.0
    token_requests: list[RequestRecord] = field(default_factory=list)
    reader: SecretReader | None = None
    standin_cpu_seconds: float | None = None
    operator_log: Path | None = None
    crashes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Soak:
    def __init__(
        self,
        config: SoakConfig,
        plan: Plan,
        children: Children,
        workdir: Path,
        operator_cmd: str | None,
        standin_module: str,
    ) -> None:
        self.config = config
        self.plan = plan
        self.children = children
        self.workdir = workdir
        self.flavor = Tokensync(operator_cmd)
        self.standin_module = standin_module
        spaces = [f"soak-{i}" for i in range(config.namespaces)]
        self.resources = [Resource(spaces[i % len(spaces)], f"cc-{i:04d}") for i in range(config.resources)]
        self.outcome = Outcome(config, plan, self.resources)
        self.life: Life | None = None
        self.server: DevTokenServer
        self.api: Api
        self.kubeconfig: Path

    def say(self, message: str) -> None:
        print(f"[soak] {message}", file=sys.stderr, flush=True)

    # ----- the run -----

    def execute(self) -> Outcome:
        config, outcome = self.config, self.outcome
        standin = start_standin(self.children, "soak-standin", self.standin_module, self.workdir)
        self.kubeconfig = standin.kubeconfig
        self.say(f"API stand-in at {standin.base_url} (pid {standin.child.pid})")
        credentials = {r.client_id: f"s3cret-{r.client_id}" for r in self.resources}
        setup_rng = random.Random(self.plan.seed + 1)  # noqa: S311 - lifetimes of the first tokens
        first_lifetime = self.plan.lifetimes[0][1]
        with (
            DevTokenServer(credentials=credentials, lifetime=first_lifetime, cert_dir=self.workdir / "ca") as server,
            Api(standin.base_url) as api,
        ):
            self.server, self.api = server, api
            reader = SecretReader(api, frozenset(r.key for r in self.resources), config.poll_interval)
            outcome.reader = reader
            chaos = EndpointChaos(server, self.plan)
            started = time.monotonic()
            self._setup()
            reader.start()
            try:
                self.life = self._start_operator()
                outcome.operator_log = self.life.operator.child.log_path
                self._create(setup_rng)
                deadline = 120.0 + 0.5 * config.resources
                wait_until(
                    lambda: reader.holding_valid_tokens() == config.resources,
                    deadline,
                    lambda: f"first tokens: {reader.holding_valid_tokens()}/{config.resources} Secrets",
                    interval=0.5,
                    check=self._check(reader, None),
                )
                outcome.setup_seconds = time.monotonic() - started
                self.say(
                    f"every Secret holds a token after {outcome.setup_seconds:.0f}s; chaos for {config.duration:g}s"
                )

                outcome.soak_start = time.time()
                outcome.soak_end = outcome.soak_start + config.duration
                reader.open_window(outcome.soak_start, outcome.soak_end)
                chaos.start(outcome.soak_start)
                try:
                    self._restarts(reader, chaos)
                finally:
                    chaos.stop()
                    outcome.unhealthy = chaos.intervals()
                    outcome.faulty_seconds = chaos.faulty_seconds
                if chaos.error is not None:
                    raise RuntimeError(f"the fault injector failed: {chaos.error!r}") from chaos.error
                self._settle(reader)
                self._stop_operator("end")
            finally:
                reader.stop()
                if self.life is not None and self.life.operator.child.alive():
                    self.life.operator.child.kill()
            reader.check()
            reader.poll_now()
            reader.close_lapses(time.time())
            outcome.token_requests = server.requests
            outcome.standin_cpu_seconds = cpu_seconds(standin.child.pid)
        standin.child.terminate()
        return outcome

    def _settle(self, reader: SecretReader) -> None:
        """After the chaos: until every Secret holds a valid token again (the endpoint is healthy now)."""
        outcome, total = self.outcome, len(self.resources)
        deadline = outcome.soak_end + self.config.settle_max
        while time.time() < deadline:
            reader.check()
            assert self.life is not None
            if not self.life.operator.child.alive():
                self._crashed()
            if reader.holding_valid_tokens() == total:
                outcome.recovery_seconds = max(0.0, time.time() - outcome.soak_end)
                break
            time.sleep(0.25)
        else:
            missing = total - reader.holding_valid_tokens()
            outcome.notes.append(
                f"{missing} Secrets still held no valid token {self.config.settle_max:g}s after the chaos ended"
            )
        outcome.settle_end = time.time()

    def _check(self, reader: SecretReader, chaos: EndpointChaos | None) -> Callable[[], None]:
        def check() -> None:
            reader.check()
            if chaos is not None and chaos.error is not None:
                raise RuntimeError(f"the fault injector failed: {chaos.error!r}")

        return check

    # ----- set-up -----

    def _setup(self) -> None:
        ca_pem = self.server.ca_pem.decode()
        for ns in sorted({r.namespace for r in self.resources}):
            self.api.create(kube.core_path("namespaces"), kube.namespace(ns))
            self.api.create(kube.core_path("configmaps", ns), kube.ca_configmap(ns, CA_NAME, ca_pem))
        items = [
            (
                kube.core_path("secrets", r.namespace),
                kube.credentials_secret(r.namespace, r.credentials, r.client_id, f"s3cret-{r.client_id}", GROUP),
            )
            for r in self.resources
        ]
        self.api.create_many(items, 4)

    def _create(self, rng: random.Random) -> None:
        """One ClientCredential at a time, spread over ``create_spread`` seconds, lifetimes varying."""
        spread, count = self.config.create_spread, len(self.resources)
        started = time.monotonic()
        for i, r in enumerate(self.resources):
            delay = started + spread * i / count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.server.lifetime = rng.randint(self.config.lifetime_min, self.config.lifetime_max)
            body = kube.client_credential(r.namespace, r.name, self.server.token_url, r.credentials, CA_NAME, GROUP)
            self.api.create(kube.cc_path(r.namespace), body)

    # ----- operator lives -----

    def _start_operator(self) -> Life:
        started = time.time()
        operator = self.flavor.start(self.children, self.kubeconfig, identity=IDENTITY)
        return Life(operator, started, time.time())

    def _stop_operator(self, how: str, sig: signal.Signals = signal.SIGTERM) -> float:
        """Read the metrics and memory, then stop the operator; returns when the signal was sent."""
        life = self.life
        assert life is not None
        child = life.operator.child
        life.scrape = life.operator.scrape()
        memory = read_memory(child.pid)
        life.hwm_mib = memory.hwm_mib if memory is not None else None
        life.cpu_seconds = cpu_seconds(child.pid)
        life.how = how
        signalled = time.time()
        life.stopped_at = signalled
        if sig == signal.SIGKILL:
            life.exit_code = child.kill()
        else:
            life.exit_code = child.terminate(STOP_TIMEOUT)
            life.stop_seconds = time.time() - signalled
            if life.exit_code == -signal.SIGKILL:
                self.outcome.notes.append(f"a SIGTERMed operator did not exit within {STOP_TIMEOUT:g}s: SIGKILLed")
        self.outcome.lives.append(life)
        self.life = None
        return signalled

    def _restart(self, step: RestartStep) -> None:
        signalled = self._stop_operator(step.signal.name, step.signal)
        time.sleep(step.pause)
        self.life = self._start_operator()
        self.outcome.down.append(Interval(signalled, self.life.ready_at, f"restart ({step.signal.name})"))
        self.say(f"restart: {step.signal.name}, ready again after {self.life.ready_at - signalled:.1f}s")

    def _crashed(self) -> None:
        """The operator exited by itself: a defect. Note it, start a new one, and go on."""
        life = self.life
        assert life is not None
        found = time.time()
        life.exit_code = life.operator.child.proc.returncode
        life.how, life.stopped_at = "crashed", found
        self.outcome.lives.append(life)
        self.outcome.crashes.append(
            f"the operator exited by itself with {life.exit_code} at +{found - self.outcome.soak_start:.0f}s"
        )
        self.say(f"the operator exited by itself ({life.exit_code}); starting another")
        self.life = self._start_operator()
        self.outcome.down.append(Interval(found - 0.5, self.life.ready_at, "crash"))

    def _restarts(self, reader: SecretReader, chaos: EndpointChaos) -> None:
        steps = list(self.plan.restarts)
        assert self.life is not None
        next_at = time.time() + steps[0].after if steps else None
        check = self._check(reader, chaos)
        while True:
            now = time.time()
            if now >= self.outcome.soak_end:
                return
            check()
            assert self.life is not None
            if not self.life.operator.child.alive():
                self._crashed()
            elif next_at is not None and now >= next_at:
                self._restart(steps.pop(0))
                assert self.life is not None
                next_at = self.life.ready_at + steps[0].after if steps else None
                # A restart planned past the end is dropped; one that fits starts after the last is ready.
                if next_at is not None and next_at >= self.outcome.soak_end:
                    next_at = None
                continue
            time.sleep(min(0.25, max(0.0, self.outcome.soak_end - now)))
