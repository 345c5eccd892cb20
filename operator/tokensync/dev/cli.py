"""``tokensync-dev``: the dev kit's command line (demo, token server, API stand-in). Never in a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokensync-dev")
def main() -> None:
    """Development tools around tokensync: a demo, a token server, a Kubernetes API stand-in."""


@main.command("token-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8443, show_default=True)
@click.option("--lifetime", type=click.IntRange(1), default=3600, show_default=True, help="Token lifetime (s).")
@click.option("--scope", default="balances:read", show_default=True)
@click.option(
    "--credential",
    "credentials",
    multiple=True,
    help="Accepted client as ID:SECRET (repeatable). Default: demo-client:demo-secret.",
)
@click.option("--failure", default=None, help="Start in a failure mode (see tokensync.dev.tokenserver.FAILURE_MODES).")
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP (tokensync itself only talks https).")
@click.option("--cert-dir", type=click.Path(file_okay=False), default=None, help="Where to write ca.pem.")
def dev_token_server(
    host: str,
    port: int,
    lifetime: int,
    scope: str,
    credentials: tuple[str, ...],
    failure: str | None,
    no_tls: bool,
    cert_dir: str | None,
) -> None:
    """Run a Palisade-compatible token server for development and tests."""
    from . import tokenserver as devserver

    accepted = dict(devserver.parse_credential(c) for c in credentials) or {"demo-client": "demo-secret"}
    devserver.serve_forever(
        host=host,
        port=port,
        credentials=accepted,
        lifetime=lifetime,
        scope=scope,
        tls=not no_tls,
        cert_dir=Path(cert_dir) if cert_dir else None,
        failure=failure,
    )


@main.command()
@click.option("--keep-running", is_flag=True, help="Keep the demo cluster and operator running until Ctrl-C.")
@click.option("--lifetime", type=click.IntRange(4), default=8, show_default=True, help="Demo token lifetime (s).")
def demo(keep_running: bool, lifetime: int) -> None:
    """Run the operator end to end with no cluster: an API stand-in, a token server, examples/."""
    from .demo import run_demo

    sys.exit(run_demo(keep_running=keep_running, lifetime=lifetime))


@main.command("cluster")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="0 picks a free port.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, help="Write a kubeconfig for it here.")
def cluster(host: str, port: int, kubeconfig: str | None) -> None:
    """Serve the Kubernetes API stand-in until interrupted."""
    from .cluster import main as serve

    serve(["--host", host, "--port", str(port), *(["--kubeconfig", kubeconfig] if kubeconfig else [])])


if __name__ == "__main__":
    main()
