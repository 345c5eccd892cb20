"""Fixtures for the unit tests of the shell modules that talk to the API stand-in over HTTP."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tokensync.dev.cluster import FakeCluster
from tokensync.kubeapi import KubeClient, load_configuration

_namespaces = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    """One stand-in per test module; each test works in a namespace of its own (``ns``)."""
    with FakeCluster() as cluster:
        yield cluster


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    return f"{module.replace('_', '-')}-{next(_namespaces)}"


@pytest.fixture
async def client(cluster: FakeCluster, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_configuration(str(cluster.write_kubeconfig(tmp_path / "kubeconfig"))))
    yield client
    await client.aclose()
