"""The bench scenario: every phase, in order, for one operator flavor; returns its numbers.

Order matters: each measured window starts only after the bench itself has gone quiet on the
API (the stand-in counts every client's requests, the bench's too), and the tokens are arranged
so that nothing but the group under measurement refreshes inside a window.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tokensync.dev.tokenserver import DevTokenServer

from . import kube
from .kube import Api, ReadyTracker, wait_until
from .layout import CA_NAME, DEDUPE_CLIENT, DEDUPE_NS, ELECTION_NS, Layout, Resource
from .measure import MIB, ApiCounts, RssSampler, cpu_seconds, histogram_quantile, peak_rate, sample_rss_for
from .operators import Election, Flavor, Operator
from .procs import Children, start_standin
from .sizes import Size

#: Every key the results carry, null where a phase could not measure it.
RESULT_KEYS = (
    "api_requests_per_refresh", "api_writes_per_refresh", "api_reads_per_refresh",
    "refresh_window_seconds", "refresh_window_token_requests", "refresh_window_watches",
    "restart_token_requests", "restart_api_requests", "restart_api_writes", "restart_api_reads", "restart_api_gets",
    "restart_api_watches", "restart_resources", "restart_seconds",
    "dedupe_resources", "dedupe_token_requests_per_lifetime", "dedupe_initial_token_requests",
    "wave_resources", "wave_create_seconds", "ready_all_seconds", "ready_floor_seconds", "ready_p99_seconds",
    "rss_mib_empty", "rss_mib_idle", "rss_mib_peak", "idle_resources",
    "unrelated_secrets", "unrelated_secret_mib", "rss_mib_before_unrelated_secrets", "rss_mib_with_unrelated_secrets",
    "unrelated_secret_rss_growth_mib",
    "loop_lag_p99_ms", "peak_token_rps",
    "failover_seconds", "failover_lease_seconds", "failover_act_seconds", "failover_resources",
    "failover_exchanges_before_kill", "failover_duplicate_exchanges", "failover_token_requests_after_kill",
)  # fmt: skip

LAG_HISTOGRAM = "tokensync_event_loop_lag_seconds"
RECONCILES = "tokensync_reconcile_total"
QUEUE_DEPTH = "tokensync_workqueue_depth"
RENEWAL_SHARE = 0.67  # the operator's default renewal point, as a share of the lifetime


class Run:
    """One flavor's run: its own stand-in process, token server and operator processes."""

    def __init__(
        self, size: Size, flavor: Flavor, children: Children, workdir: Path, standin_module: str, label: str
    ) -> None:
        self.size = size
        self.flavor = flavor
        self.children = children
        self.workdir = workdir
        self.standin_module = standin_module
        self.label = label
        self.layout = Layout(size)
        self.results: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
        self.details: dict[str, Any] = {}
        self.notes: list[str] = []
        self.sampler = RssSampler()
        self.rss_steady: list[float] = []
        self.api: Api
        self.base_url = ""
        self.standin_pid = 0
        self.server: DevTokenServer
        self.kubeconfig: Path

    # ----- plumbing -----

    def say(self, message: str) -> None:
        print(f"[{self.label}] {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.say(f"NOTE: {message}")

    def phase(self, name: str, action: Callable[[], None]) -> bool:
        """Run one phase; a timeout or failure is noted (its numbers stay null) and the run goes on."""
        started = time.monotonic()
        try:
            action()
        except (TimeoutError, RuntimeError, kube.ApiError) as exc:
            self.note(f"{name} failed after {time.monotonic() - started:.0f}s: {exc}")
            return False
        self.say(f"{name}: done in {time.monotonic() - started:.1f}s")
        return True

    @property
    def short_resources(self) -> list[Resource]:
        return [*self.layout.refresh, *self.layout.dedupe]

    @property
    def steady_resources(self) -> int:
        return self.size.population + len(self.short_resources)

    @property
    def renewal_deadline(self) -> float:
        """Long enough for every short-lived token to be renewed once (or the baseline's timer to come round)."""
        return 3 * self.size.short_lifetime + 60 + 2 * self.flavor.timer_interval

    def token_requests(self, since: int = 0, client: str | None = None) -> int:
        records = self.server.requests[since:]
        return sum(1 for r in records if client is None or r.client_id == client)

    def api_total(self) -> int:
        return ApiCounts.from_rows(self.api.request_counts()).total

    def create(self, resources: Iterable[Resource]) -> dict[str, float]:
        items = [(kube.cc_path(r.namespace), r.body(self.server.token_url)) for r in resources]
        return self.api.create_many(items, self.size.create_concurrency)

    def wait_quiet(self, quiet: float, max_wait: float, *, api: bool = True) -> bool:
        """Until neither tokens nor (optionally) API requests changed for ``quiet`` s; False if never."""
        deadline = time.monotonic() + max_wait
        last: tuple[int, int] | None = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            snapshot = (len(self.server.requests), self.api_total() if api else 0)
            if snapshot != last:
                last, since = snapshot, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return True
            time.sleep(0.1)
        return False

    def wait_settled(self, operator: Operator, resources: int, timeout: float) -> str:
        """After a start: until the reconcile counter covers every resource and the queue is empty.

        An operator without those metrics (an older build) is settled after ``quiet_seconds`` of quiet.
        """
        quiet = self.size.quiet_seconds
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            operator.child.check_alive()
            scrape = operator.scrape()
            reconciled = scrape.total(RECONCILES) if scrape else None
            depth = scrape.total(QUEUE_DEPTH) if scrape else None
            if reconciled is not None and reconciled >= resources and not depth:
                return "reconcile counter"
            snapshot = (len(self.server.requests), self.api_total())
            if snapshot != last:
                last, since = snapshot, time.monotonic()
            elif time.monotonic() - since >= quiet and reconciled is None:
                return f"{quiet:.0f}s of quiet"
            time.sleep(0.5)
        raise TimeoutError(f"{operator.child.name} did not settle within {timeout:.0f}s")

    def start_operator(self, identity: str = "bench-0", election: Election | None = None) -> Operator:
        operator = self.flavor.start(self.children, self.kubeconfig, identity=identity, election=election)
        self.sampler.watch(operator.pid)
        return operator

    def stop_operator(self, operator: Operator) -> None:
        self.sampler.sample_now()  # the last VmHWM before it goes
        operator.child.terminate()

    @contextlib.contextmanager
    def running(self, operator: Operator) -> Iterator[Operator]:
        """Stop the operator gracefully when done; kill it at once when the bench is aborting."""
        try:
            yield operator
        except BaseException:
            operator.child.kill()  # Ctrl-C, SIGTERM or a bug: no 30 s grace for a blocked loop
            raise
        finally:
            if operator.child.alive():
                self.stop_operator(operator)

    # ----- the run -----

    def execute(self) -> dict[str, Any]:
        with self.sampler, self._standin():
            cert_dir = self.workdir / f"{self.flavor.name}-ca"
            credentials = self.layout.token_server_credentials()
            with (
                DevTokenServer(credentials=credentials, lifetime=self.size.long_lifetime, cert_dir=cert_dir) as server,
                Api(self.base_url) as api,
            ):
                self.server, self.api = server, api
                if not api.has_request_accounting():
                    self.note("the API stand-in has no /_devcluster/requests: request counts stay null")
                self._setup()
                self.phase("floor", self._measure_floor)
                with self.running(self.start_operator()) as operator:
                    self._run_single(operator)
                self.phase("failover", self._failover)
                self.results["peak_token_rps"] = peak_rate(r.at for r in server.requests)
            self.results["rss_mib_peak"] = _round(self.sampler.peak())
        if self.rss_steady:
            self.results["rss_mib_idle"] = _round(max(self.rss_steady))
        self.results["idle_resources"] = self.steady_resources
        return {**self.results, "details": self.details, "notes": self.notes}

    def _run_single(self, operator: Operator) -> None:
        self.phase("empty operator", lambda: self._measure_empty(operator))
        self.phase("credentials Secrets", self._credentials)
        self.phase("unrelated secrets", lambda: self._unrelated_secrets(operator))
        if self.size.bulk:
            self.phase(f"bulk ({self.size.bulk} resources)", self._bulk)
        self.phase(f"wave ({self.size.wave} resources at once)", lambda: self._wave(operator))
        if self.phase("short-lived groups", self._short_groups):
            self.phase("refresh window", lambda: self._refresh_window(operator))
        self.phase("back to long-lived tokens", self._long_tokens_again)
        self.phase("restart", lambda: self._restart(operator))

    @contextlib.contextmanager
    def _standin(self) -> Iterator[None]:
        """The API stand-in of this run, stopped when the run ends (the next flavor gets a fresh one)."""
        standin = start_standin(self.children, f"{self.flavor.name}-standin", self.standin_module, self.workdir)
        child = standin.child
        self.base_url, self.kubeconfig, self.standin_pid = standin.base_url, standin.kubeconfig, child.pid
        self.say(f"API stand-in at {self.base_url} (pid {child.pid})")
        try:
            yield
        except BaseException:
            child.kill()
            raise
        finally:
            if child.alive():
                child.terminate()

    def _setup(self) -> None:
        ca_pem = self.server.ca_pem.decode()
        for ns in self.layout.namespaces:
            self.api.create(kube.core_path("namespaces"), kube.namespace(ns))
            self.api.create(kube.core_path("configmaps", ns), kube.ca_configmap(ns, CA_NAME, ca_pem))

    def _credentials(self) -> None:
        """Every credentials Secret of the run, created after the empty operator's memory is measured."""
        items = [(kube.core_path("secrets", b["metadata"]["namespace"]), b) for b in self.layout.credentials_bodies()]
        self.api.create_many(items, self.size.create_concurrency)

    def _measure_floor(self) -> None:
        """The same creates as the wave, before any operator runs: what accepting them costs the API."""
        started = time.monotonic()
        self.create(self.layout.wave)
        self.results["ready_floor_seconds"] = _round(time.monotonic() - started, 3)
        for ns in self.layout.population_namespaces:
            self.api.delete_collection(kube.cc_path(ns), f"{kube.GROUP_LABEL}=wave")

    def _measure_empty(self, operator: Operator) -> None:
        self.results["rss_mib_empty"] = _round(sample_rss_for(self.sampler, operator.pid, self.size.settle_seconds))

    def _unrelated_secrets(self, operator: Operator) -> None:
        count, size = self.size.unrelated_secrets, self.size.unrelated_secret_size
        spaces = self.layout.population_namespaces
        before = sample_rss_for(self.sampler, operator.pid, self.size.settle_seconds)
        items = []
        for i in range(count):
            body = kube.helm_release_secret(spaces[i % len(spaces)], i, size)
            items.append((kube.core_path("secrets", body["metadata"]["namespace"]), body))
        self.api.create_many(items, self.size.create_concurrency)
        rss = sample_rss_for(self.sampler, operator.pid, self.size.settle_seconds)
        mib = count * size / MIB
        if mib < 100:
            self.note(f"unrelated Secrets: {count} x {size // 1024} KiB = {mib:.0f} MiB (the target's is 100 MiB)")
        self.results.update(
            unrelated_secrets=count,
            unrelated_secret_mib=_round(mib),
            rss_mib_before_unrelated_secrets=_round(before),
            rss_mib_with_unrelated_secrets=_round(rss),
        )
        if rss is not None and before is not None:
            self.results["unrelated_secret_rss_growth_mib"] = _round(rss - before)

    def _bulk(self) -> None:
        with ReadyTracker(self.api) as tracker:
            self.create(self.layout.bulk)
            keys = [r.key for r in self.layout.bulk]
            tracker.wait_ready(keys, self.size.deadline(len(keys)), "bulk")

    def _wave(self, operator: Operator) -> None:
        wave = self.layout.wave
        if len(wave) < 1000:
            self.note(f"wave: {len(wave)} resources created at once (the target's is 1,000)")
        before = operator.scrape()
        # Who used the CPU during the wave: on a 2-core box the stand-in may be the bottleneck.
        pids = {"operator": operator.pid, "api stand-in": self.standin_pid, "bench and token server": os.getpid()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        with ReadyTracker(self.api) as tracker:
            started = time.monotonic()
            sent = self.create(wave)
            self.results["wave_create_seconds"] = _round(time.monotonic() - started, 3)
            keys = [r.key for r in wave]
            last = tracker.wait_ready(keys, self.size.deadline(len(keys)), "wave")
            latencies = [tracker.ready_at[key] - sent[key] for key in keys]
        after = operator.scrape()
        cpu = {name: _delta(cpu_seconds(pid), cpu_before[name]) for name, pid in pids.items()}
        self.details["wave_cpu_seconds"] = {**cpu, "wall clock": _round(last - started)}
        self.results.update(
            wave_resources=len(wave),
            ready_all_seconds=_round(last - started, 3),
            ready_p99_seconds=_round(_nearest_rank(latencies, 0.99), 3),
        )
        if before is not None and after is not None and after.buckets(LAG_HISTOGRAM):
            lag = histogram_quantile(0.99, before.buckets(LAG_HISTOGRAM), after.buckets(LAG_HISTOGRAM))
            self.results["loop_lag_p99_ms"] = _round(lag * 1000 if lag is not None else None)

    def _short_groups(self) -> None:
        """The refresh and dedupe groups get short tokens; then wait for one renewal cycle to pass."""
        self.server.lifetime = self.size.short_lifetime
        mark = len(self.server.requests)
        with ReadyTracker(self.api) as tracker:
            self.create(self.short_resources)
            keys = [r.key for r in self.short_resources]
            tracker.wait_ready(keys, self.size.deadline(len(keys)), "short-lived groups")
        self.results["dedupe_resources"] = len(self.layout.dedupe)
        self.results["dedupe_initial_token_requests"] = self.token_requests(mark, DEDUPE_CLIENT)
        clients = {r.client_id for r in self.short_resources}

        def renewed_once() -> bool:
            counts = _per_client(self.server.requests[mark:])
            return all(counts.get(client, 0) >= 2 for client in clients)

        wait_until(renewed_once, self.renewal_deadline, "one renewal of every short-lived token")

    def _refresh_window(self, operator: Operator) -> None:
        """Requests per refresh: API requests over token requests in a window bounded by quiet moments."""
        short = self.size.short_lifetime
        cycle = RENEWAL_SHARE * short  # a well-behaved operator leaves a quiet moment in every cycle
        self.wait_quiet(1.0, cycle)
        self.api.reset_request_counts()
        mark, started = len(self.server.requests), time.monotonic()
        length = max(self.size.refresh_cycles * cycle, self.flavor.timer_interval)
        time.sleep(length)  # the window itself, not a wait
        if not self.wait_quiet(1.0, cycle):
            self.note("refresh window: no quiet moment to close it; counts at its edges may be off by one refresh")
        ended = time.monotonic()
        # The dedupe group shares one token among K resources: its namespace and client are left out here.
        counts = ApiCounts.from_rows(self.api.request_counts(), skip_namespace=DEDUPE_NS)
        records = self.server.requests[mark:]
        per_client = _per_client(records)
        refresh_clients = [r.client_id for r in self.layout.refresh]
        tokens = sum(per_client.get(c, 0) for c in refresh_clients)
        others = sum(n for c, n in per_client.items() if c not in refresh_clients and c != DEDUPE_CLIENT)
        if others:
            self.note(f"refresh window: {others} token requests by resources that were not due")
        tokens += others
        self.results.update(
            refresh_window_seconds=_round(ended - started),
            refresh_window_token_requests=tokens,
            refresh_window_watches=counts.watches,
        )
        self.details["refresh_window_requests"] = counts.breakdown()
        if tokens:
            self.results.update(
                api_requests_per_refresh=_round((counts.reads + counts.writes) / tokens, 2),
                api_writes_per_refresh=_round(counts.writes / tokens, 2),
                api_reads_per_refresh=_round(counts.reads / tokens, 2),
            )
        mean = sum(per_client.get(c, 0) for c in refresh_clients) / max(1, len(refresh_clients))
        if mean:
            self.results["dedupe_token_requests_per_lifetime"] = _round(per_client.get(DEDUPE_CLIENT, 0) / mean, 2)
        steady = self.sampler.max_rss(operator.pid, started, ended)
        if steady is not None:
            self.rss_steady.append(steady)

    def _long_tokens_again(self) -> None:
        """Before the restart every token must be valid for long: the short ones get one more renewal."""
        self.server.lifetime = self.size.long_lifetime
        horizon = timedelta(seconds=4 * self.size.short_lifetime)

        def all_long() -> bool:
            for r in self.short_resources:
                expiry = kube.secret_expiry(self.api.get(kube.core_path("secrets", r.namespace, r.name)))
                if expiry is None or datetime.fromisoformat(expiry) < datetime.now(UTC) + horizon:
                    return False
            return True

        wait_until(all_long, self.renewal_deadline, "long-lived tokens in every short-lived Secret", interval=1.0)

    def _restart(self, operator: Operator) -> None:
        self.stop_operator(operator)
        self.api.reset_request_counts()
        mark, started = len(self.server.requests), time.monotonic()
        with self.running(self.start_operator()) as restarted:
            how = self.wait_settled(restarted, self.steady_resources, self.size.deadline(self.steady_resources))
            elapsed = time.monotonic() - started
            counts = ApiCounts.from_rows(self.api.request_counts())
            self.results.update(
                restart_resources=self.steady_resources,
                restart_token_requests=self.token_requests(mark),
                restart_api_requests=counts.total,
                restart_api_writes=counts.writes,
                restart_api_reads=counts.reads,
                restart_api_gets=counts.by_verb.get("get", 0),
                restart_api_watches=counts.watches,
                restart_seconds=_round(elapsed),
            )
            self.details["restart_requests"] = counts.breakdown()
            self.details["restart_settled_by"] = how
            idle = sample_rss_for(self.sampler, restarted.pid, self.size.settle_seconds)
            if idle is not None:
                self.rss_steady.append(idle)

    def _failover(self) -> None:
        """Two replicas; SIGKILL the leader; until the standby holds the Lease and makes a new resource Ready."""
        lease_duration, renew_deadline, retry_period = self.size.lease
        election = Election(ELECTION_NS, f"{self.flavor.name}-bench", lease_duration, renew_deadline, retry_period)
        self.flavor.prepare_election(self.api, election)
        with contextlib.ExitStack() as stack:
            replicas = [
                stack.enter_context(self.running(self.start_operator(identity, election)))
                for identity in ("bench-a", "bench-b")
            ]
            self._fail_over(replicas, election)

    def _holder(self, election: Election) -> str | None:
        lease = self.api.get(kube.lease_path(election.namespace, election.name)) or {}
        holder: str | None = (lease.get("spec") or {}).get("holderIdentity")
        return holder

    def _fail_over(self, replicas: list[Operator], election: Election) -> None:
        by_identity = {r.identity: r for r in replicas}
        timeout = self.size.deadline(self.steady_resources)
        if self.flavor.uses_lease:
            wait_until(lambda: self._holder(election) in by_identity, timeout, "a replica holds the Lease")
            leader = by_identity[str(self._holder(election))]
        else:
            leader = replicas[0]  # kopf peering: the higher priority
        standby = next(r for r in replicas if r is not leader)
        self.wait_settled(leader, self.steady_resources, timeout)

        failover, probe = self.layout.failover, self.layout.probe
        mark = len(self.server.requests)
        with ReadyTracker(self.api) as tracker:
            self.create(failover)
            tracker.wait_ready([r.key for r in failover], self.size.deadline(len(failover)), "failover group")
            # Time for a duplicate exchange by the standby to show up, if it would make one.
            self.wait_quiet(3.0, 10.0, api=False)
            exchanges = self.token_requests(mark)
            self.results.update(
                failover_resources=len(failover),
                failover_exchanges_before_kill=exchanges,
                failover_duplicate_exchanges=exchanges - len(failover),
            )
            self.sampler.sample_now()
            killed_at = time.monotonic()
            leader.child.kill()
            mark = len(self.server.requests)
            self.create([probe])
            lease_at = None
            if self.flavor.uses_lease:
                wait_until(lambda: self._holder(election) == standby.identity, timeout, "the standby holds the Lease")
                lease_at = time.monotonic()
            acted_at = tracker.wait_ready([probe.key], timeout, "the new leader makes a new resource Ready")
        self.wait_quiet(2.0, 10.0, api=False)
        self.results.update(
            failover_seconds=_round(max(acted_at, lease_at or acted_at) - killed_at, 2),
            failover_lease_seconds=_round(lease_at - killed_at, 2) if lease_at is not None else None,
            failover_act_seconds=_round(acted_at - killed_at, 2),
            failover_token_requests_after_kill=self.token_requests(mark),
        )


def _per_client(records: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record.client_id is not None:
            counts[record.client_id] = counts.get(record.client_id, 0) + 1
    return counts


def _nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _delta(after: float | None, before: float | None) -> float | None:
    return _round(after - before) if after is not None and before is not None else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits) + 0.0  # + 0.0: no "-0.0"
