"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it.

- A candidate takes the Lease when it is free (no holder) or when its record has not changed
  for ``lease_duration`` *as observed locally* (no trust in other nodes' clocks), by an update
  that carries the resourceVersion it read: of two candidates, one wins, the other gets 409.
- The leader renews every ``retry_period``. If it cannot renew for ``renew_deadline``
  (< ``lease_duration``), it stops acting *before* anyone else may take the Lease over.
- On a clean shutdown the leader releases the Lease (empty holder), so a standby takes over
  at its next retry instead of waiting out the duration.

The decision (``may_acquire``) is pure; ``LeaderElector`` does the I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .kubeapi import LEASES, JsonDict, KubeClient, KubeError

logger = logging.getLogger("tokensync.election")


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")


def micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def may_acquire(spec: JsonDict, identity: str, observed_for: float, lease_duration: float) -> bool:
    """Whether ``identity`` may write itself into a Lease whose spec is ``spec``.

    ``observed_for`` is how long this candidate has seen that exact record unchanged.
    """
    holder = spec.get("holderIdentity") or ""
    return not holder or holder == identity or observed_for >= lease_duration


def next_spec(spec: JsonDict, identity: str, lease_duration: float, now: datetime) -> JsonDict:
    """The Lease spec after ``identity`` acquires or renews it."""
    renewing = spec.get("holderIdentity") == identity
    return {
        **spec,
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(lease_duration)),
        "acquireTime": spec.get("acquireTime") if renewing and spec.get("acquireTime") else micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if renewing or not spec else 1),
    }


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        config: ElectionConfig,
        *,
        on_started_leading: Callable[[], Any],
        on_stopped_leading: Callable[[], Any],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._lease: JsonDict | None = None  # the Lease as last read or written
        self._observed_spec: JsonDict | None = None
        self._observed_at = 0.0
        self.is_leader = False
        self.where = f"{config.namespace}/{config.name}"

    async def run(self) -> None:
        """Campaign, lead, and campaign again after a lost lease; until cancelled."""
        while True:
            await self._acquire()
            self.is_leader = True
            logger.info("Became the leader (Lease %s, identity %s).", self.where, self.config.identity)
            self._on_started()
            try:
                await self._keep_renewing()
            finally:
                if self.is_leader:
                    self.is_leader = False
                    self._on_stopped()
            logger.warning("Lost the leadership (Lease %s): stopped acting; campaigning again.", self.where)

    async def _acquire(self) -> None:
        period = self.config.retry_period
        while not await self._try_acquire_or_renew():  # noqa: ASYNC110 - polling the API is the protocol
            await asyncio.sleep(period * (1 + 0.2 * random.random()))  # noqa: S311 - jitter, as client-go

    async def _keep_renewing(self) -> None:
        """Returns the moment the lease has gone unrenewed for ``renew_deadline`` (as client-go's
        renew loop: the deadline cuts a wait or an attempt short, it is not checked only between them)."""
        last_renewed = self._clock()
        while True:
            deadline = last_renewed + self.config.renew_deadline
            await asyncio.sleep(max(min(self.config.retry_period, deadline - self._clock()), 0.0))
            if self._clock() >= deadline:
                return
            started = self._clock()
            try:
                # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
                # arrives as the renewal completes, and a cancelled leader would keep renewing.
                async with asyncio.timeout(deadline - started):
                    renewed = await self._try_acquire_or_renew()
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewed = started  # counted from before the request: the conservative end

    async def _try_acquire_or_renew(self) -> bool:
        now_wall, now = datetime.now(UTC), self._clock()
        lease = self._lease if self.is_leader else None  # a leader renews from its own copy: one request
        try:
            if lease is None:
                lease = await self._client.get(LEASES, self.config.namespace, self.config.name)
                if lease is None:
                    return await self._create(now_wall, now)
            spec = dict(lease.get("spec") or {})
            if spec != self._observed_spec:
                self._observed_spec, self._observed_at = spec, now
            if not may_acquire(spec, self.config.identity, now - self._observed_at, self.config.lease_duration):
                return False
            updated = {**lease, "spec": next_spec(spec, self.config.identity, self.config.lease_duration, now_wall)}
            self._remember(await self._client.replace(LEASES, self.config.namespace, self.config.name, updated), now)
            return True
        except KubeError as exc:
            self._lease = None  # read it again next time
            if not exc.conflict:
                logger.warning("Lease %s: %s", self.where, exc)
            return False

    async def _create(self, now_wall: datetime, now: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": next_spec({}, self.config.identity, self.config.lease_duration, now_wall),
        }
        try:
            self._remember(await self._client.create(LEASES, self.config.namespace, body), now)
        except KubeError as exc:
            if exc.status != 409:  # AlreadyExists: another candidate was faster
                logger.warning("Lease %s: %s", self.where, exc)
            return False
        return True

    def _remember(self, lease: JsonDict, now: float) -> None:
        self._lease = lease
        self._observed_spec, self._observed_at = dict(lease.get("spec") or {}), now

    async def release(self) -> None:
        """Give the Lease up (clean shutdown), so a standby need not wait out its duration."""
        # Called after run() was cancelled: the Lease as last written says whether we hold it.
        if self._lease is None or (self._lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
            return
        spec = {
            **(self._lease.get("spec") or {}),
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": micro_time(datetime.now(UTC)),
        }
        try:
            await self._client.replace(LEASES, self.config.namespace, self.config.name, {**self._lease, "spec": spec})
            logger.info("Released the Lease %s.", self.where)
        except KubeError as exc:
            logger.warning("Could not release the Lease %s: %s", self.where, exc)
