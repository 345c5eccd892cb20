"""Fixtures for the Helm chart and container image checks (helpers are in support.py)."""

from __future__ import annotations

import pytest

from .support import VALUE_SETS, Rendered, render_set


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than 30 s (still part of `make test`)")


@pytest.fixture(params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def rendered(value_set: str) -> Rendered:
    return render_set(value_set)
