"""The ``tokensync`` command line: run, crd, exchange. (The dev kit has its own: ``tokensync-dev``.)"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from pathlib import Path

import click

from . import __version__
from .settings import DEFAULT_ALLOWED_TOKEN_HOSTS, Settings

LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str, log_format: str) -> None:
    import kopf

    kopf.configure(
        debug=level == "debug",
        verbose=level in ("debug", "info"),
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(level.upper())
    # The kubernetes client and urllib3 log request bodies at debug level: Secret data would leak.
    for noisy in ("kubernetes", "urllib3", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_operator(
    settings: Settings,
    *,
    ready_flag: asyncio.Event | threading.Event | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever)."""
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    await kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        # Peering: standalone for one replica; otherwise only the highest priority replica acts.
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=settings.priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=settings),
        ready_flag=ready_flag,
        stop_flag=stop_flag,
    )


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
@click.option("--liveness-port", type=int, default=None, help="Serve kopf's liveness probe on this port (/healthz).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port (/metrics).")
@click.option("--peering", "peering_name", default=None, help="Run with kopf peering under this name (HA).")
@click.option("--priority", type=int, default=None, help="Peering priority of this replica (default: random).")
@click.option("--max-exchanges-per-host", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, envvar="KUBECONFIG")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    allowed_hosts: tuple[str, ...],
    log_level: str,
    log_format: str,
    liveness_port: int | None,
    metrics_port: int | None,
    peering_name: str | None,
    priority: int | None,
    max_exchanges_per_host: int,
    kubeconfig: str | None,
) -> None:
    """Run the operator with the current kubeconfig or in-cluster config."""
    if all_namespaces and namespaces:
        raise click.UsageError("--all-namespaces and --namespace are exclusive")
    configure_logging(log_level, log_format)
    settings = Settings(
        allowed_token_hosts=allowed_hosts or DEFAULT_ALLOWED_TOKEN_HOSTS,
        namespaces=namespaces,
        max_exchanges_per_host=max_exchanges_per_host,
        standalone=peering_name is None,
        peering_name=peering_name or "tokensync",
        # Replicas of one Deployment share their arguments: a random priority tells them apart.
        priority=priority if priority is not None else random.randint(1, 2**31 - 1),  # noqa: S311
        liveness_port=liveness_port,
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
