"""HA: with kopf peering, only the highest-priority replica acts; a standby takes over when it goes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tokensync.dev.tokenserver import DevTokenServer

from .conftest import Api, LogCapture, OperatorRunner, cc_spec, eventually


async def test_only_the_active_replica_exchanges_and_a_standby_takes_over(
    seeded: Api, token_server: DevTokenServer, kubeconfig: Path, logs: LogCapture
) -> None:
    seeded.custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "tokensync"}},
    )
    active, standby = OperatorRunner(kubeconfig), OperatorRunner(kubeconfig)
    await active.start(standalone=False, peering_name="tokensync", priority=100)
    await standby.start(standalone=False, peering_name="tokensync", priority=50)
    try:
        seeded.create_cc("ha", cc_spec(token_server))
        await eventually(lambda: seeded.condition("ha", "Ready").get("status") == "True", timeout=20)
        await asyncio.sleep(1)
        assert token_server.issued == 1

        seeded.request_refresh("ha", "1")
        await eventually(lambda: token_server.issued == 2, message="the active replica refreshes")
        await asyncio.sleep(1.5)
        assert token_server.issued == 2, "the standby acted too"

        await active.stop()  # a graceful exit withdraws its peering record at once
        seeded.request_refresh("ha", "2")
        await eventually(lambda: token_server.issued == 3, timeout=30, message="the standby took over")
        await asyncio.sleep(1)
        assert token_server.issued == 3
    finally:
        await active.stop()
        await standby.stop()
    assert logs.errors() == []
