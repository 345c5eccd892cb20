"""The ``tokensync`` command line: run, crd, exchange. (The dev kit has its own: ``tokensync-dev``.)"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from pathlib import Path

import click

from . import __version__
from .settings import DEFAULT_ALLOWED_TOKEN_HOSTS, Settings

LOG_LEVELS = ("debug", "info", "warning", "error")


def default_identity() -> str:
    """The pod name in a cluster (downward API); elsewhere the host name and a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{secrets.token_hex(4)}"


def default_election_namespace() -> str:
    """The operator's own namespace: $POD_NAMESPACE, the service account's, or "default"."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "TOKENSYNC"})
@click.version_option(__version__, prog_name="tokensync")
def main() -> None:
    """tokensync keeps short-lived OAuth access tokens fresh in Kubernetes Secrets."""


@main.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch the whole cluster (the default).")
@click.option(
    "--allowed-token-host",
    "allowed_hosts",
    multiple=True,
    help=f"A host name token URLs may use (repeatable). Default: {', '.join(DEFAULT_ALLOWED_TOKEN_HOSTS)}.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option("--log-format", type=click.Choice(("text", "json")), default="text", show_default=True)
@click.option("--health-port", type=int, default=None, help="Serve /healthz and /readyz on this port.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--workers", type=click.IntRange(1, 1000), default=16, show_default=True, help="Concurrent rounds.")
@click.option("--max-exchanges-per-host", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option(
    "--exchange-timeout",
    type=click.FloatRange(min=1, max=600),
    default=30.0,
    show_default=True,
    help="Seconds one token exchange may take in all.",
)
@click.option("--leader-elect", is_flag=True, help="Act only while holding the Lease (run several replicas).")
@click.option("--leader-election-namespace", default=None, help="The Lease's namespace. Default: the pod's.")
@click.option("--leader-election-id", default="tokensync", show_default=True, help="The Lease's name.")
@click.option("--lease-duration", type=click.FloatRange(min=1), default=15.0, show_default=True, help="Seconds.")
@click.option("--renew-deadline", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="Seconds.")
@click.option("--retry-period", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds.")
@click.option(
    "--hash-key-secret",
    default="tokensync-hash-key",
    show_default=True,
    help="The Secret in the operator's namespace that keeps the credentials-hash key (made on first start).",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, envvar="KUBECONFIG")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    allowed_hosts: tuple[str, ...],
    log_level: str,
    log_format: str,
    health_port: int | None,
    metrics_port: int | None,
    workers: int,
    max_exchanges_per_host: int,
    exchange_timeout: float,
    leader_elect: bool,
    leader_election_namespace: str | None,
    leader_election_id: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    hash_key_secret: str,
    kubeconfig: str | None,
) -> None:
    """Run the operator with the current kubeconfig or in-cluster config."""
    if all_namespaces and namespaces:
        raise click.UsageError("--all-namespaces and --namespace are exclusive")
    if leader_elect and not 0 < retry_period < renew_deadline < lease_duration:
        raise click.UsageError("leader election needs --retry-period < --renew-deadline < --lease-duration")
    from .logs import configure_logging
    from .manager import run_operator

    configure_logging(log_level, log_format)
    settings = Settings(
        allowed_token_hosts=allowed_hosts or DEFAULT_ALLOWED_TOKEN_HOSTS,
        namespaces=namespaces,
        workers=workers,
        max_exchanges_per_host=max_exchanges_per_host,
        exchange_timeout=exchange_timeout,
        leader_election=leader_elect,
        election_namespace=leader_election_namespace or default_election_namespace(),
        election_id=leader_election_id,
        identity=default_identity(),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        hash_key_secret=hash_key_secret,
        health_port=health_port,
        metrics_port=metrics_port,
        kubeconfig=kubeconfig,
    )
    asyncio.run(run_operator(settings))


@main.command()
def crd() -> None:
    """Print the ClientCredential CustomResourceDefinition (YAML)."""
    from .crd import render_crd_yaml

    click.echo(render_crd_yaml(), nl=False)


@main.command()
@click.option("--token-url", required=True, help="The token endpoint (https).")
@click.option("--provider", type=click.Choice(("palisade", "oauth2")), default="palisade", show_default=True)
@click.option("--client-id", envvar="TOKENSYNC_CLIENT_ID", required=True, help="Or $TOKENSYNC_CLIENT_ID.")
@click.option(
    "--client-secret",
    envvar="TOKENSYNC_CLIENT_SECRET",
    prompt=True,
    hide_input=True,
    help="Or $TOKENSYNC_CLIENT_SECRET; prompted for if absent (keeps it out of shell history).",
)
@click.option("--scope", "scopes", multiple=True, help="oauth2: a scope to request (repeatable).")
@click.option("--audience", default=None, help="oauth2: the audience to request.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None, help="Extra CA bundle (PEM).")
@click.option("--allowed-token-host", "allowed_hosts", multiple=True, help="Default: the token URL's own host.")
@click.option("--show-token", is_flag=True, help="Also print the access token itself.")
def exchange(
    token_url: str,
    provider: str,
    client_id: str,
    client_secret: str,
    scopes: tuple[str, ...],
    audience: str | None,
    ca_file: str | None,
    allowed_hosts: tuple[str, ...],
    show_token: bool,
) -> None:
    """Do one token exchange (for debugging) and print the token's expiry, scope and type."""
    from urllib.parse import urlsplit

    from . import exchange as ex
    from .models import ClientCredentialSpec

    spec = ClientCredentialSpec.model_validate(
        {
            "provider": provider,
            "tokenURL": token_url,
            "credentialsRef": {"name": "cli"},
            "scopes": list(scopes),
            "audience": audience,
        }
    )
    ca_pem = Path(ca_file).read_text() if ca_file else None
    hosts = allowed_hosts or (urlsplit(token_url).hostname or "",)

    async def once() -> ex.IssuedToken:
        pool = ex.ClientPool()
        try:
            credentials = ex.ClientCredentials(client_id, client_secret)
            return await ex.exchange(pool.get(ca_pem), spec, token_url, credentials, allowed_hosts=hosts)
        finally:
            await pool.aclose()

    try:
        token = asyncio.run(once())
    except ex.ExchangeError as exc:
        status = f" (HTTP {exc.http_status})" if exc.http_status else ""
        raise click.ClickException(f"{exc.reason}{status}: {exc.message}") from None
    click.echo(f"tokenType: {token.token_type}")
    click.echo(f"scope: {token.scope}")
    click.echo(f"expiresIn: {token.expires_in}s")
    if show_token:
        click.echo(f"accessToken: {token.access_token}")


if __name__ == "__main__":
    main()
