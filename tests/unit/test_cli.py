"""The command line: crd, exchange, run's flag checks, version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokensync import __version__
from tokensync.cli import main
from tokensync.crd import render_crd_yaml
from tokensync.dev.tokenserver import DevTokenServer

SECRET = "cli-secret-5d1f"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DevTokenServer]:
    with DevTokenServer(credentials={"cli-client": SECRET}, lifetime=120, scope="a:b", cert_dir=tmp_path) as srv:
        yield srv


def test_crd_prints_the_generated_crd() -> None:
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0
    assert result.output == render_crd_yaml()


def test_version_names_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def exchange_args(server: DevTokenServer, *extra: str) -> list[str]:
    return [
        "exchange",
        "--token-url",
        server.token_url,
        "--client-id",
        "cli-client",
        "--ca-file",
        str(server.ca_path),
        *extra,
    ]


def test_exchange_prints_type_scope_and_lifetime_but_not_the_token(server: DevTokenServer) -> None:
    result = CliRunner().invoke(main, exchange_args(server), env={"TOKENSYNC_CLIENT_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert "tokenType: Bearer" in result.output
    assert "scope: a:b" in result.output
    assert "expiresIn: 120s" in result.output
    assert server.tokens[-1] not in result.output
    assert SECRET not in result.output


def test_exchange_prints_the_token_only_when_asked(server: DevTokenServer) -> None:
    result = CliRunner().invoke(main, exchange_args(server, "--show-token"), env={"TOKENSYNC_CLIENT_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert f"accessToken: {server.tokens[-1]}" in result.output


def test_exchange_prompts_for_the_secret_without_echoing_it(server: DevTokenServer) -> None:
    result = CliRunner().invoke(main, exchange_args(server), input=f"{SECRET}\n")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output


def test_a_failed_exchange_exits_non_zero_with_the_reason(server: DevTokenServer) -> None:
    result = CliRunner().invoke(main, exchange_args(server), env={"TOKENSYNC_CLIENT_SECRET": "wrong"})
    assert result.exit_code == 1
    assert "InvalidCredentials (HTTP 401)" in result.output


def test_exchange_refuses_hosts_outside_an_explicit_allowlist(server: DevTokenServer) -> None:
    args = exchange_args(server, "--allowed-token-host", "api.palisade.co")
    result = CliRunner().invoke(main, args, env={"TOKENSYNC_CLIENT_SECRET": SECRET})
    assert result.exit_code == 1
    assert "HostNotAllowed" in result.output
    assert server.requests == []


def test_run_rejects_all_namespaces_together_with_a_namespace() -> None:
    result = CliRunner().invoke(main, ["run", "--all-namespaces", "--namespace", "payments"])
    assert result.exit_code == 2
    assert "exclusive" in result.output
