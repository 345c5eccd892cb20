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

    workers: int = 16
    """Reconcile rounds run at once. A round mostly waits (on the token endpoint or the API),
    so this bounds concurrency, not CPU; one resource is never in two rounds at once."""

    exchange_timeout: float = 30.0
    """Seconds one exchange may take in all (connect, send, a slow trickle of a body): an
    endpoint that accepts and never answers costs a round this long, then a retry."""

    max_exchanges_per_host: int = 8
    """Concurrent exchanges against one token host: a restart with thousands of resources
    must not stampede the endpoint (and trip its rate limit)."""

    leader_election: bool = False
    """Act only while holding the Lease (several replicas: one acts, the others stand by)."""

    election_namespace: str = "default"
    election_id: str = "tokensync"
    """The Lease's namespace (the operator's own: the pod's) and name."""

    hash_key_secret: str = "tokensync-hash-key"
    """The Secret, in ``election_namespace``, that holds the key of the credentials hash
    (``hashkey.py``); made on first start."""

    identity: str = "tokensync"
    """This replica's name in the Lease (the pod name in a cluster)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    """client-go's defaults: a standby takes over within about ``lease_duration`` of a leader's
    death; a leader that cannot renew for ``renew_deadline`` stops acting before that."""

    shutdown_grace: float = 25.0
    """On SIGTERM, rounds in flight get this long to finish (an exchange has a 30 s deadline;
    the chart gives the pod 45 s)."""

    health_port: int | None = None
    """Serve /healthz and /readyz on this port (None: off)."""

    metrics_port: int | None = None
    """Serve Prometheus metrics on this port at /metrics (None: off)."""

    kubeconfig: str | None = None
    """A kubeconfig path; None means in-cluster config, then $KUBECONFIG or ~/.kube/config."""
