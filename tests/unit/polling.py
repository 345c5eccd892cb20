"""Waiting on conditions in the shell modules' unit tests (generous deadlines, short polls)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition``: the state changes in callbacks and in the fake cluster's thread."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not true within {timeout}s") from None
