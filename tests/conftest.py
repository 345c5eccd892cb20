"""Shared set-up for all tests."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session", autouse=True)
def _no_implicit_event_loop() -> None:
    """Stop a stray event loop from being created (and leaked) by a synchronous test.

    looptime's ``pytest_pyfunc_call`` asks the policy for the current loop around every test.
    On Python 3.11, for a sync test that runs before any async one, that call *creates* a main-thread
    loop nobody closes; it is garbage-collected later as "unclosed event loop", and with warnings
    as errors some unrelated test fails. Marking the loop as explicitly unset (what asyncio.Runner
    leaves behind after every async test anyway) makes the call raise, which looptime handles.
    """
    asyncio.set_event_loop(None)
