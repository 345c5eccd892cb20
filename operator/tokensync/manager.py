"""The operator process: caches, workers, leader election, probes and metrics, and a clean stop.

Start-up: the informers list and watch at once (a standby keeps them warm too); when they are
synced the process is ready; workers start when this replica leads (or at once without
election). Stop (SIGTERM): no new rounds, rounds in flight get ``shutdown_grace`` to finish,
the Lease is released so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from .controller import Controller
from .core import utcnow
from .election import ElectionConfig, LeaderElector
from .events import EventRecorder
from .exchange import ClientPool
from .hashkey import load_or_create_key
from .health import HealthServer
from .issuer import Issuer
from .kubeapi import KubeClient, load_configuration
from .metrics import Metrics
from .settings import Settings

logger = logging.getLogger("tokensync")

StopFlag = asyncio.Event | threading.Event
LAG_PROBE_INTERVAL = 0.25


class Manager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = KubeClient(load_configuration(settings.kubeconfig))
        self.metrics = Metrics()
        self.issuer = Issuer(
            ClientPool(),
            settings.allowed_token_hosts,
            max_per_host=settings.max_exchanges_per_host,
            deadline=settings.exchange_timeout,
            metrics=self.metrics,
        )
        self.controller = Controller(
            self.client,
            self.issuer,
            settings.namespaces,
            clock=utcnow,
            post_event=EventRecorder(self.client, settings.identity).post,
            metrics=self.metrics,
        )
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            config = ElectionConfig(
                settings.election_namespace,
                settings.election_id,
                settings.identity,
                settings.lease_duration,
                settings.renew_deadline,
                settings.retry_period,
            )
            self.elector = LeaderElector(
                self.client, config, on_started_leading=self._start_workers, on_stopped_leading=self._stop_workers
            )
        self._workers: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.controller.informers)

    def _start_workers(self) -> None:
        self.metrics.leader.set(1)
        self.controller.enqueue_all()
        self._workers = asyncio.create_task(self.controller.run_workers(self.settings.workers), name="workers")

    def _stop_workers(self) -> None:
        self.metrics.leader.set(0)
        if self._workers is not None:
            self._workers.cancel()  # a lost Lease: stop acting now, not after the rounds finish
            self._workers = None

    async def run(self, stop_flag: StopFlag | None = None, ready_flag: StopFlag | None = None) -> None:
        """Run until ``stop_flag`` is set (or SIGTERM/SIGINT without one)."""
        health = (
            HealthServer(self.settings.health_port, ready=lambda: self.synced) if self.settings.health_port else None
        )
        try:
            if health is not None:
                await health.start()
            if self.settings.metrics_port is not None:
                self.metrics.serve(self.settings.metrics_port)
            self._background = [
                asyncio.create_task(informer.run(), name=f"informer {informer.where}")
                for informer in self.controller.informers
            ]
            self._background.append(asyncio.create_task(self._probe_loop(), name="loop-lag"))
            stopping = asyncio.ensure_future(_wait_for(stop_flag))
            synced = asyncio.ensure_future(asyncio.gather(*(i.synced.wait() for i in self.controller.informers)))
            waiters: set[asyncio.Future[Any]] = {stopping, synced}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            synced.cancel()
            if not stopping.done():
                logger.info(
                    "Caches synced: %d ClientCredentials.", sum(len(i.store) for i in self.controller.resources)
                )
                self.controller.reconciler.hash_key = await load_or_create_key(
                    self.client, self.settings.election_namespace, self.settings.hash_key_secret
                )
                if ready_flag is not None:
                    ready_flag.set()
                if self.elector is not None:
                    self._background.append(asyncio.create_task(self.elector.run(), name="election"))
                else:
                    self._start_workers()
                await stopping
            await self._shut_down()
        finally:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if health is not None:
                await health.aclose()
            self.metrics.close()
            await self.controller.secrets.aclose()
            await self.controller.configmaps.aclose()
            await self.issuer.aclose()
            await self.client.aclose()

    async def _shut_down(self) -> None:
        """Let rounds in flight finish (bounded), then give the Lease up."""
        self.controller.queue.shut_down()
        if self._workers is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._workers), timeout=self.settings.shutdown_grace)
            except TimeoutError:
                logger.warning("Rounds still running after %.0fs; stopping them.", self.settings.shutdown_grace)
            self._stop_workers()
        if self.elector is not None:
            election = [task for task in self._background if task.get_name() == "election"]
            for task in election:
                task.cancel()
            await asyncio.gather(*election, return_exceptions=True)
            await self.elector.release()

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL)
            self.metrics.loop_lag.observe(max(loop.time() - started - LAG_PROBE_INTERVAL, 0.0))
            self.metrics.queue_depth.set(len(self.controller.queue))


async def _wait_for(flag: StopFlag | None) -> None:
    if isinstance(flag, asyncio.Event):
        await flag.wait()
        return
    if isinstance(flag, threading.Event):
        while not flag.is_set():  # noqa: ASYNC110 - a flag set from another thread: poll it
            await asyncio.sleep(0.1)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_operator(
    settings: Settings, *, ready_flag: StopFlag | None = None, stop_flag: StopFlag | None = None
) -> None:
    """Run the operator until ``stop_flag`` is set (or SIGTERM/SIGINT without one)."""
    manager = Manager(settings)
    await manager.run(stop_flag, ready_flag)
