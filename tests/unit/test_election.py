"""Leader election: the pure decision and Lease spec, and two electors against the fake API server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.election import ElectionConfig, LeaderElector, may_acquire, micro_time, next_spec
from tokensync.kubeapi import LEASES, KubeClient, KubeError, load_configuration

from .polling import eventually

NOW = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


# micro_time ------------------------------------------------------------------------------------


def test_micro_time_is_rfc3339_utc_with_microseconds() -> None:
    assert micro_time(NOW) == "2025-03-04T05:06:07.890123Z"
    assert micro_time(datetime(2025, 1, 1, tzinfo=UTC)) == "2025-01-01T00:00:00.000000Z"
    assert MICRO_TIME.fullmatch(micro_time(datetime.now(UTC)))


def test_micro_time_converts_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert micro_time(datetime(2025, 3, 4, 7, 6, 7, 5, tzinfo=plus_two)) == "2025-03-04T05:06:07.000005Z"


# may_acquire -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "observed_for", "expected"),
    [
        pytest.param({}, 0.0, True, id="no spec: free"),
        pytest.param({"holderIdentity": ""}, 0.0, True, id="released: free"),
        pytest.param({"holderIdentity": None}, 0.0, True, id="null holder: free"),
        pytest.param({"holderIdentity": "me"}, 0.0, True, id="own lease"),
        pytest.param({"holderIdentity": "me"}, 100.0, True, id="own lease, long unchanged"),
        pytest.param({"holderIdentity": "other"}, 0.0, False, id="other holder, just seen"),
        pytest.param({"holderIdentity": "other"}, 14.99, False, id="other holder, before the duration"),
        pytest.param({"holderIdentity": "other"}, 15.0, True, id="other holder, at the duration"),
        pytest.param({"holderIdentity": "other"}, 60.0, True, id="other holder, long after"),
    ],
)
def test_may_acquire(spec: dict[str, Any], observed_for: float, expected: bool) -> None:
    assert may_acquire(spec, "me", observed_for, 15.0) is expected


def test_may_acquire_ignores_the_lease_duration_written_by_the_holder() -> None:
    # The local observation counts, not the other node's record (its clock is not trusted).
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 1, "renewTime": micro_time(NOW - timedelta(hours=1))}
    assert not may_acquire(spec, "me", 5.0, 15.0)


# next_spec -------------------------------------------------------------------------------------


def test_next_spec_of_a_new_lease() -> None:
    spec = next_spec({}, "me", 15.0, NOW)
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-03-04T05:06:07.890123Z",
        "renewTime": "2025-03-04T05:06:07.890123Z",
        "leaseTransitions": 0,
    }


def test_next_spec_renewing_keeps_acquire_time_and_transitions() -> None:
    acquired = next_spec({}, "me", 15.0, NOW)
    later = NOW + timedelta(seconds=2)
    renewed = next_spec(acquired, "me", 15.0, later)
    assert renewed["holderIdentity"] == "me"
    assert renewed["acquireTime"] == acquired["acquireTime"]
    assert renewed["renewTime"] == micro_time(later)
    assert renewed["leaseTransitions"] == 0


def test_next_spec_renewing_without_acquire_time_sets_it() -> None:
    renewed = next_spec({"holderIdentity": "me", "leaseTransitions": 2}, "me", 15.0, NOW)
    assert renewed["acquireTime"] == micro_time(NOW)
    assert renewed["leaseTransitions"] == 2


def test_next_spec_taking_over_counts_a_transition() -> None:
    theirs = {
        "holderIdentity": "other",
        "leaseDurationSeconds": 30,
        "acquireTime": "2020-01-01T00:00:00.000000Z",
        "renewTime": "2020-01-01T00:00:10.000000Z",
        "leaseTransitions": 4,
    }
    taken = next_spec(theirs, "me", 15.0, NOW)
    assert taken == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(NOW),
        "renewTime": micro_time(NOW),
        "leaseTransitions": 5,
    }
    assert theirs["holderIdentity"] == "other"  # the input is not modified


def test_next_spec_acquiring_a_released_lease_counts_a_transition() -> None:
    released = {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 3, "acquireTime": "x"}
    taken = next_spec(released, "me", 15.0, NOW)
    assert taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == micro_time(NOW)


def test_next_spec_keeps_unknown_fields() -> None:
    spec = next_spec({"holderIdentity": "me", "strategy": "OldestEmulationVersion"}, "me", 15.0, NOW)
    assert spec["strategy"] == "OldestEmulationVersion"


@pytest.mark.parametrize(("duration", "seconds"), [(15.0, 15), (2.6, 3), (2.0, 2), (0.4, 1), (0.01, 1)])
def test_next_spec_lease_duration_is_whole_seconds_at_least_one(duration: float, seconds: int) -> None:
    assert next_spec({}, "me", duration, NOW)["leaseDurationSeconds"] == seconds


def test_next_spec_times_are_micro_times() -> None:
    spec = next_spec({}, "me", 15.0, datetime.now(UTC))
    assert MICRO_TIME.fullmatch(spec["acquireTime"])
    assert MICRO_TIME.fullmatch(spec["renewTime"])


# ElectionConfig --------------------------------------------------------------------------------


def test_election_config_defaults_are_valid() -> None:
    config = ElectionConfig(namespace="ns", name="lease", identity="me")
    assert config.retry_period < config.renew_deadline < config.lease_duration


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [
        pytest.param(15, 10, 0, id="no retry period"),
        pytest.param(15, 10, -1, id="negative retry period"),
        pytest.param(15, 10, 10, id="retry = renew"),
        pytest.param(15, 10, 12, id="retry > renew"),
        pytest.param(15, 15, 2, id="renew = lease"),
        pytest.param(10, 15, 2, id="renew > lease"),
    ],
)
def test_election_config_rejects_bad_timings(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="leader election"):
        ElectionConfig(
            namespace="ns", name="lease", identity="me", lease_duration=lease, renew_deadline=renew, retry_period=retry
        )


# LeaderElector against the fake API server -----------------------------------------------------
#
# Real time and real HTTP: timings are short, deadlines generous (a loaded 2-core machine).

LEASE, RENEW, RETRY = 3.0, 1.5, 0.3
NS = "election"
_names = itertools.count()


@pytest.fixture
def lease_name() -> str:
    return f"lease-{next(_names)}"


@dataclass
class Candidate:
    identity: str
    elector: LeaderElector
    client: KubeClient
    log: list[tuple[str, float]] = field(default_factory=list)  # ("started" | "stopped", monotonic time)
    task: asyncio.Task[None] | None = None
    in_flight: int = 0  # API requests under way

    def watch_requests(self) -> None:
        request = self.client.request

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.in_flight += 1
            try:
                return await request(*args, **kwargs)
            finally:
                self.in_flight -= 1

        self.client.request = counted  # type: ignore[method-assign]

    def started(self) -> int:
        return sum(1 for what, _ in self.log if what == "started")

    def stopped(self) -> int:
        return sum(1 for what, _ in self.log if what == "stopped")

    def when(self, what: str, nth: int = 1) -> float:
        return [t for w, t in self.log if w == what][nth - 1]


def noting(log: list[tuple[str, float]], what: str) -> Callable[[], None]:
    return lambda: log.append((what, time.monotonic()))


@contextlib.asynccontextmanager
async def candidates(
    kubeconfig: Path,
    lease_name: str,
    count: int,
    *,
    lease: float = LEASE,
    renew: float = RENEW,
    retry: float = RETRY,
    start: bool = True,
) -> AsyncIterator[list[Candidate]]:
    made: list[Candidate] = []
    try:
        for index in range(count):
            client = KubeClient(load_configuration(str(kubeconfig)))
            identity = f"candidate-{index}"
            config = ElectionConfig(
                namespace=NS,
                name=lease_name,
                identity=identity,
                lease_duration=lease,
                renew_deadline=renew,
                retry_period=retry,
            )
            log: list[tuple[str, float]] = []
            elector = LeaderElector(
                client,
                config,
                on_started_leading=noting(log, "started"),
                on_stopped_leading=noting(log, "stopped"),
            )
            made.append(Candidate(identity, elector, client, log))
            made[-1].watch_requests()
        if start:
            for candidate in made:
                candidate.task = asyncio.create_task(candidate.elector.run())
        yield made
    finally:
        for candidate in made:
            if candidate.task is not None:
                await stop(candidate.task)
            await candidate.client.aclose()


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)


def holder(cluster: FakeCluster, lease_name: str) -> str | None:
    lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; cancel again if a cancellation was swallowed.

    On Python 3.11, asyncio.wait_for in LeaderElector._keep_renewing can swallow a cancellation
    (see test_a_cancelled_leader_stops_even_when_a_renewal_just_completed); repeating it keeps the
    other tests from hanging on that bug.
    """
    for _ in range(50):
        task.cancel()
        await asyncio.wait({task}, timeout=2)
        if task.done():
            break
    assert task.done(), "the task ignores cancellation"
    if not task.cancelled():
        task.result()  # an error, if any


async def crash(candidate: Candidate) -> None:
    """Stop a candidate as a killed process stops: no release."""
    assert candidate.task is not None
    await stop(candidate.task)
    candidate.task = None


async def test_one_of_two_candidates_leads(cluster: FakeCluster, kubeconfig: Path, lease_name: str) -> None:
    async with candidates(kubeconfig, lease_name, 2) as (a, b):
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        # Watch for longer than a lease duration: the standby never takes over from a live leader.
        deadline = time.monotonic() + LEASE * 1.5
        while time.monotonic() < deadline:
            assert not (a.elector.is_leader and b.elector.is_leader)
            await asyncio.sleep(0.05)
        assert leader.log == [("started", leader.when("started"))]
        assert standby.log == []
        assert holder(cluster, lease_name) == leader.identity
        lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert lease is not None
        assert lease["spec"]["leaseDurationSeconds"] == round(LEASE)
        assert lease["spec"]["leaseTransitions"] == 0
        assert MICRO_TIME.fullmatch(lease["spec"]["renewTime"])


async def test_a_leader_renews_the_lease(cluster: FakeCluster, kubeconfig: Path, lease_name: str) -> None:
    async with candidates(kubeconfig, lease_name, 1) as (leader,):
        await eventually(lambda: leader.elector.is_leader)
        lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert lease is not None
        first = lease["spec"]

        def renewed() -> bool:
            now = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
            return now is not None and now["spec"]["renewTime"] > first["renewTime"]

        await eventually(renewed)
        lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert lease is not None
        assert lease["spec"]["acquireTime"] == first["acquireTime"]
        assert lease["spec"]["holderIdentity"] == leader.identity


async def test_a_standby_takes_over_from_a_crashed_leader(
    cluster: FakeCluster, kubeconfig: Path, lease_name: str
) -> None:
    async with candidates(kubeconfig, lease_name, 2) as (a, b):
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        await asyncio.sleep(RETRY * 2)  # a few renewals, seen by the standby
        crashed_at = time.monotonic()
        await crash(leader)
        await eventually(lambda: standby.elector.is_leader, timeout=LEASE * 5)
        took = standby.when("started") - crashed_at
        # Not before the lease ran out (minus the last renewal period), not much after it.
        assert took >= LEASE - RETRY - 1.0
        assert took <= LEASE + RETRY * 1.2 + 2.0  # slack for a loaded machine
        assert holder(cluster, lease_name) == standby.identity
        lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert lease is not None
        assert lease["spec"]["leaseTransitions"] == 1


async def test_a_released_lease_is_taken_over_at_the_next_retry(
    cluster: FakeCluster, kubeconfig: Path, lease_name: str
) -> None:
    lease_duration = 8.0  # long: the takeover must clearly not wait for it
    async with candidates(kubeconfig, lease_name, 2, lease=lease_duration, renew=5.0) as (a, b):
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        # Crash between two renewals: a renewal cut off mid-request may still be written, and
        # the release (with the resourceVersion last seen) would then rightly get a conflict.
        await eventually(lambda: leader.in_flight == 0)
        await crash(leader)
        assert leader.log[-1][0] == "stopped"
        released_at = time.monotonic()
        await leader.elector.release()
        await eventually(lambda: standby.elector.is_leader, timeout=lease_duration * 3)
        took = standby.when("started") - released_at
        assert took < lease_duration / 2
        assert holder(cluster, lease_name) == standby.identity


async def test_release_by_a_non_leader_changes_nothing(cluster: FakeCluster, kubeconfig: Path, lease_name: str) -> None:
    async with candidates(kubeconfig, lease_name, 2) as (a, b):
        await eventually(lambda: a.elector.is_leader or b.elector.is_leader)
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        await crash(standby)
        before = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        await standby.elector.release()
        after = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert before is not None
        assert after is not None
        assert after["spec"]["holderIdentity"] == leader.identity


async def test_a_leader_that_cannot_renew_stops_before_the_lease_runs_out(tmp_path: Path) -> None:
    with FakeCluster() as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        async with candidates(kubeconfig, "lease", 1) as (leader,):
            await eventually(lambda: leader.elector.is_leader)
            await asyncio.sleep(RETRY * 2)
            failed_at = time.monotonic()
            await asyncio.to_thread(cluster.stop)  # the API becomes unreachable: renewals fail
            await eventually(lambda: leader.stopped() == 1, timeout=RENEW * 10)
            stopped_at = leader.when("stopped")
            assert not leader.elector.is_leader
            assert stopped_at - failed_at <= RENEW + 1.0  # slack for a loaded machine
            # The safety property: it stopped acting before anyone else could take the Lease.
            lease = cluster.get("coordination.k8s.io/v1", "leases", NS, "lease")
            assert lease is not None
            last_renewal = datetime.fromisoformat(lease["spec"]["renewTime"])
            stopped_wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - stopped_at)
            assert (stopped_wall - last_renewal).total_seconds() < LEASE


async def test_a_leader_whose_lease_was_taken_stops_leading(
    cluster: FakeCluster, kubeconfig: Path, lease_name: str
) -> None:
    async with candidates(kubeconfig, lease_name, 1) as (leader,):
        await eventually(lambda: leader.elector.is_leader)
        # Another holder writes itself into the Lease (retrying on conflicts with the renewals).
        async with contextlib.aclosing(_Closer(KubeClient(load_configuration(str(kubeconfig))))) as intruder:
            async with asyncio.timeout(20):
                while True:
                    lease = await intruder.client.get(LEASES, NS, lease_name)
                    assert lease is not None
                    lease["spec"] = {**lease["spec"], "holderIdentity": "intruder"}
                    try:
                        await intruder.client.replace(LEASES, NS, lease_name, lease)
                        break
                    except KubeError as exc:
                        if not exc.conflict:  # a conflict with a renewal: read again
                            raise
        taken_at = time.monotonic()
        await eventually(lambda: leader.stopped() == 1, timeout=RENEW * 10)
        assert leader.when("stopped") - taken_at <= RENEW + 1.0  # slack for a loaded machine
        assert not leader.elector.is_leader
        # The intruder never renews: after a lease duration the candidate leads again.
        await eventually(lambda: leader.started() == 2, timeout=LEASE * 5)
        assert leader.when("started", 2) - taken_at >= LEASE - 0.5
        assert holder(cluster, lease_name) == leader.identity
        lease = cluster.get("coordination.k8s.io/v1", "leases", NS, lease_name)
        assert lease is not None
        assert lease["spec"]["leaseTransitions"] == 1


@dataclass
class _Closer:
    client: KubeClient

    async def aclose(self) -> None:
        await self.client.aclose()


# The renew deadline, in loop time, against an in-memory Lease API ------------------------------


class MemoryLeases:
    """Just enough of KubeClient for one Lease; ``mode`` makes the calls fail or hang."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.mode = "ok"  # "ok" | "refused" | "hanging"
        self.writes: list[float] = []  # loop times at which a write started
        self.on_write: Callable[[], None] | None = None  # called as a write's answer is on its way

    async def _call(self) -> None:
        if self.mode == "refused":
            raise KubeError(0, "ConnectError", "connection refused")
        if self.mode == "hanging":
            await asyncio.sleep(3600)

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return dict(self.lease)

    async def get(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        await self._call()
        return None if self.lease is None else dict(self.lease)

    async def create(self, resource: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        started = asyncio.get_running_loop().time()
        await self._call()
        if self.lease is not None:
            raise KubeError(409, "AlreadyExists", "exists")
        self.writes.append(started)
        return self._stored(body)

    async def replace(self, resource: Any, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        started = asyncio.get_running_loop().time()
        await self._call()
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        self.writes.append(started)
        if self.on_write is not None:
            self.on_write()
        return self._stored(body)


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("mode", "lease", "renew", "retry"),
    [
        pytest.param("refused", 15.0, 10.0, 2.0, id="refused-client-go defaults"),
        pytest.param("hanging", 15.0, 10.0, 2.0, id="hanging-client-go defaults"),
        pytest.param("refused", 3.0, 1.5, 0.3, id="refused-short"),
        pytest.param("hanging", 3.0, 1.5, 0.3, id="hanging-short"),
        pytest.param("refused", 15.0, 10.0, 3.0, id="refused-deadline not a multiple of the period"),
        pytest.param("hanging", 15.0, 14.0, 10.0, id="hanging-long retry period"),
        # The deadline cuts the wait between attempts short: never renew_deadline + retry_period.
        pytest.param("refused", 15.0, 10.0, 9.0, id="refused-long retry period"),
        pytest.param("refused", 15.0, 14.0, 10.0, id="refused-renew deadline near the lease duration"),
    ],
)
async def test_a_leader_that_cannot_renew_stops_before_its_lease_expires(
    mode: str, lease: float, renew: float, retry: float
) -> None:
    api = MemoryLeases()
    loop = asyncio.get_running_loop()
    stopped: list[float] = []
    config = ElectionConfig(
        namespace="ns", name="lease", identity="me", lease_duration=lease, renew_deadline=renew, retry_period=retry
    )
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        config,
        on_started_leading=lambda: None,
        on_stopped_leading=lambda: stopped.append(loop.time()),
    )
    task = asyncio.create_task(elector.run())
    try:
        await eventually(lambda: elector.is_leader, timeout=1000)
        await asyncio.sleep(retry * 1.5)  # at least one renewal
        api.mode = mode
        failed_at = loop.time()
        await eventually(lambda: bool(stopped), timeout=1000)
    finally:
        await stop(task)
    last_renewal = max(w for w in api.writes if w < failed_at)
    # Anyone else may take over lease_duration after the last renewal: the leader stopped before.
    assert stopped[0] - last_renewal < lease
    assert stopped[0] - last_renewal == pytest.approx(renew, abs=0.01)  # it kept trying for the whole deadline


@pytest.mark.looptime
async def test_in_loop_time_a_standby_takes_over_one_lease_duration_after_the_last_renewal() -> None:
    api = MemoryLeases()
    loop = asyncio.get_running_loop()
    leading: dict[str, list[float]] = {"a": [], "b": []}
    electors = {
        identity: LeaderElector(
            api,  # type: ignore[arg-type]
            ElectionConfig(namespace="ns", name="lease", identity=identity),  # 15 s / 10 s / 2 s
            on_started_leading=functools.partial(lambda times: times.append(loop.time()), leading[identity]),
            on_stopped_leading=lambda: None,
        )
        for identity in ("a", "b")
    }
    tasks = {identity: asyncio.create_task(elector.run()) for identity, elector in electors.items()}
    try:
        await eventually(lambda: any(leading.values()), timeout=1000)
        leader = "a" if leading["a"] else "b"
        standby = "b" if leader == "a" else "a"
        await asyncio.sleep(100)
        assert leading[standby] == []  # never while the leader renews
        assert len(leading[leader]) == 1
        crashed_at = loop.time()
        await stop(tasks[leader])  # a crash: no release
        await eventually(lambda: bool(leading[standby]), timeout=1000)
    finally:
        for task in tasks.values():
            await stop(task)
    last_renewal = max(w for w in api.writes if w < crashed_at)
    took_over = leading[standby][0]
    assert 15.0 <= took_over - last_renewal <= 15.0 + 2.0 * 1.2 * 2
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == standby
    assert api.lease["spec"]["leaseTransitions"] == 1


@pytest.mark.looptime
async def test_a_cancelled_leader_stops_even_when_a_renewal_just_completed() -> None:
    api = MemoryLeases()
    loop = asyncio.get_running_loop()
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        ElectionConfig(namespace="ns", name="lease", identity="me"),
        on_started_leading=lambda: None,
        on_stopped_leading=lambda: None,
    )
    task = asyncio.create_task(elector.run())
    try:
        await eventually(lambda: elector.is_leader, timeout=100)

        def cancel_once() -> None:
            # The shutdown's cancel() lands in the loop iteration in which a renewal's answer arrives.
            api.on_write = None
            loop.call_soon(task.cancel)

        api.on_write = cancel_once
        writes = len(api.writes)
        done, _ = await asyncio.wait({task}, timeout=60)
        assert task in done, f"still running after cancel(): {len(api.writes) - writes - 1} more Lease renewals"
        assert task.cancelled()
    finally:
        await stop(task)
