"""The ``tokensync`` command line: run, status, refresh, crd, exchange. (The dev kit has its own: ``tokensync-dev``.)"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from . import __version__
from .settings import DEFAULT_ALLOWED_TOKEN_HOSTS, Settings

if TYPE_CHECKING:
    from .kubeapi import KubeClient

LOG_LEVELS = ("debug", "info", "warning", "error")
_T = TypeVar("_T")


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


# status and refresh: kubectl-like commands over the kubeconfig --------------------------------


class CommandFailed(click.ClickException):
    """Exit 1 with the message as it is (kubectl's "Error from server (NotFound): ..." style)."""

    def show(self, file: object = None) -> None:
        click.echo(self.format_message(), err=True)


def _kube_options(command: Callable[..., None]) -> Callable[..., None]:
    """--namespace/-n, --all-namespaces/-A, --kubeconfig and --context, as kubectl has them."""
    for option in reversed(
        (
            click.option(
                "--namespace", "-n", default=None, help='The namespace. Default: the context\'s, else "default".'
            ),
            click.option("--all-namespaces", "-A", is_flag=True, help="Across all namespaces."),
            click.option(
                "--kubeconfig",
                default=None,
                envvar="KUBECONFIG",
                help="Kubeconfig file(s). Default: $KUBECONFIG, else ~/.kube/config.",
            ),
            click.option("--context", default=None, help="The kubeconfig context. Default: its current-context."),
        )
    ):
        command = option(command)
    return command


def _with_client(kubeconfig: str | None, context: str | None, action: Callable[[KubeClient, str], Awaitable[_T]]) -> _T:
    """Run ``action(client, default namespace)`` against the kubeconfig's cluster; API errors exit 1."""
    from .kubeapi import KubeClient, KubeError
    from .kubeconfig import KubeconfigError, load_kubeconfig
    from .statuscli import NotFoundError

    try:
        configuration, namespace = load_kubeconfig(kubeconfig, context)
    except KubeconfigError as exc:
        raise CommandFailed(f"error: {exc}") from None

    async def once() -> _T:
        client = KubeClient(configuration, max_connections=4)
        try:
            return await action(client, namespace)
        finally:
            await client.aclose()

    try:
        return asyncio.run(once())
    except NotFoundError as exc:
        raise CommandFailed(str(exc)) from None
    except KubeError as exc:
        if exc.status == 0:
            raise CommandFailed(f"error: cannot reach the API server at {configuration.host}: {exc}") from None
        raise CommandFailed(f"Error from server ({exc.reason}): {exc.message or exc}") from None


@main.command()
@click.argument("name", required=False)
@_kube_options
@click.option(
    "--output",
    "-o",
    type=click.Choice(("table", "wide", "json", "yaml")),
    default="table",
    show_default=True,
    help="wide adds the Secret, exact times and failed attempts; json and yaml print a list for scripts.",
)
def status(
    name: str | None,
    namespace: str | None,
    all_namespaces: bool,
    kubeconfig: str | None,
    context: str | None,
    output: str,
) -> None:
    """Show whether ClientCredentials hold fresh tokens: Ready, reason, expiry, next renewal, last failure.

    Like `kubectl get`: the namespace comes from -n, else the kubeconfig context. A NAME that
    does not exist exits 1. Only status is shown, never a secret or a token.
    """
    from . import statuscli
    from .core import utcnow

    if name is not None and all_namespaces:
        raise click.UsageError("a resource cannot be retrieved by name across all namespaces")
    if namespace is not None and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces are exclusive")

    async def action(client: KubeClient, default_namespace: str) -> tuple[str | None, list[dict[str, object]]]:
        scope = None if all_namespaces else namespace or default_namespace
        return scope, await statuscli.fetch(client, scope, name)

    scope, objects = _with_client(kubeconfig, context, action)
    if not objects and output in ("table", "wide"):
        click.echo(statuscli.no_resources(scope), err=True)
        return
    click.echo(statuscli.render(objects, utcnow(), output, all_namespaces=all_namespaces), nl=False)


@main.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every ClientCredential in the namespace (with -A: everywhere).")
@click.option("--selector", "-l", default=None, help="Those whose labels match this selector (e.g. team=payments).")
@_kube_options
@click.option("--wait", is_flag=True, help="Wait until each Secret holds a token issued after the request.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds --wait waits in all.",
)
def refresh(
    name: str | None,
    all_: bool,
    selector: str | None,
    namespace: str | None,
    all_namespaces: bool,
    kubeconfig: str | None,
    context: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Ask for a new token now: set tokensync.io/refresh-requested-at on NAME, --all or -l SELECTOR.

    Each call makes a new request (the current time, RFC 3339). With --wait, exit 0 once every
    Secret holds a token issued after the request; a failed exchange (its reason is printed) or
    the timeout exits 1.
    """
    from . import statuscli
    from .core import utcnow
    from .reconciler import REFRESH_ANNOTATION

    if sum((name is not None, all_, selector is not None)) != 1:
        raise click.UsageError("name one ClientCredential, or use --all or --selector/-l")
    if namespace is not None and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces are exclusive")
    if name is not None and all_namespaces:
        raise click.UsageError("a resource cannot be retrieved by name across all namespaces")

    def label(request: statuscli.Request) -> str:
        where = f" in namespace {request.namespace}" if all_namespaces else ""
        return f"{statuscli.KIND_NAME}/{request.name}{where}"

    def report(request: statuscli.Request, verdict: statuscli.Verdict) -> None:
        if verdict.state is statuscli.State.DONE:
            click.echo(f"{label(request)} refreshed: {verdict.message}")
        else:
            click.echo(f"error: {label(request)}: {verdict.message}", err=True)

    async def action(client: KubeClient, default_namespace: str) -> bool:
        scope = None if all_namespaces else namespace or default_namespace
        if name is not None:
            assert scope is not None
            targets = [(scope, name)]
        else:
            found = await statuscli.fetch(client, scope, label_selector=selector)
            targets = sorted(statuscli.overview(o).key for o in found)
            if not targets:
                raise CommandFailed(f"error: {statuscli.no_resources(scope)} Nothing to refresh.")
        value = statuscli.request_value(utcnow())
        requests = await statuscli.request_refresh(client, targets, value, skip_missing=name is None)
        for request in requests:
            click.echo(f"{label(request)} refresh requested ({REFRESH_ANNOTATION}={value})")
        if not wait:
            return True
        results = await statuscli.wait_for_refresh(client, scope, requests, timeout, report)
        return all(v.state is statuscli.State.DONE for v in results.values())

    if not _with_client(kubeconfig, context, action):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
