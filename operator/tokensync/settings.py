"""Operator-level settings: what the cluster admin decides, not each resource."""

from __future__ import annotations

from dataclasses import dataclass

#: Palisade's production and sandbox hosts: the only token hosts allowed unless the admin says otherwise.
DEFAULT_ALLOWED_TOKEN_HOSTS: tuple[str, ...] = ("api.palisade.co", "api.sandbox.palisade.co")


@dataclass(frozen=True)
class Settings:
    allowed_token_hosts: tuple[str, ...] = DEFAULT_ALLOWED_TOKEN_HOSTS
    """Host names a token URL may point at, matched exactly (any port). Credentials are only
    ever sent to these hosts, so a ClientCredential cannot exfiltrate a secret elsewhere."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""

    max_exchanges_per_host: int = 8
    """Concurrent exchanges against one token host: a restart with thousands of resources
    must not stampede the endpoint (and trip its rate limit)."""

    standalone: bool = True
    """Run without kopf peering (one replica). With peering, only the highest-priority
    operator of the same peering name acts; the others wait."""

    peering_name: str = "tokensync"
    """The kopf peering object shared by the replicas of one deployment."""

    priority: int = 0
    """Peering priority of this replica (the highest active one wins). Replicas of one
    Deployment cannot be told apart in their arguments, so the CLI picks a random one."""

    liveness_port: int | None = None
    """Serve kopf's liveness probe on this port at /healthz (None: off)."""

    metrics_port: int | None = None
    """Serve Prometheus metrics on this port at /metrics (None: off)."""

    kubeconfig: str | None = None
    """A kubeconfig path; None means in-cluster config, then $KUBECONFIG or ~/.kube/config."""
