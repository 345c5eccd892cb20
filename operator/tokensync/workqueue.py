"""One work queue of resource keys, as controller-runtime's (client-go's workqueue) works.

- A key is queued at most once however many events name it (*dirty* set).
- A key is handed to one worker at a time: added again while it is being processed, it is
  queued once more when that worker is done, never run concurrently (*processing* set).
- ``schedule()`` re-queues a key at a time the policy chose (the renewal point, a retry, an
  expiry); a later ``schedule()`` replaces the earlier one. ``add()`` queues at once.
- ``retry()`` re-queues a key that failed unexpectedly after a per-key exponential backoff,
  so one failing key never blocks or floods the others; ``forget()`` resets that backoff.

Everything runs in one event loop: no locks.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Backoff for keys whose round failed unexpectedly (the API unreachable, a bug).
ERROR_BACKOFF_BASE, ERROR_BACKOFF_CAP = 1.0, 60.0


def error_backoff(failures: int) -> float:
    """Seconds before retrying a key after ``failures`` consecutive unexpected errors (>= 1)."""
    return float(min(ERROR_BACKOFF_BASE * 2 ** min(failures - 1, 16), ERROR_BACKOFF_CAP))


class ShutDown(Exception):
    """The queue was shut down: workers stop."""


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: collections.deque[K] = collections.deque()
        #: Keys of a bulk sweep (a new leader's look at every resource): served after ``_queue``,
        #: so a change that happens meanwhile is not stuck behind thousands of routine rounds.
        self._bulk: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}
        self._ready = asyncio.Event()
        self._shut = False

    def __len__(self) -> int:
        return len(self._queue) + len(self._bulk)

    @property
    def scheduled(self) -> int:
        return len(self._timers)

    def add(self, key: K, *, bulk: bool = False) -> None:
        """Queue ``key`` (once); ``bulk`` keys wait until no other key is queued."""
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:  # else done() queues it
            (self._bulk if bulk else self._queue).append(key)
            self._ready.set()

    def schedule(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds, replacing any earlier schedule of it."""
        self.unschedule(key)
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def unschedule(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: K) -> float:
        """Re-queue ``key`` after its error backoff; returns the delay."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = error_backoff(failures)
        self.schedule(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key's round succeeded: its error backoff starts over."""
        self._failures.pop(key, None)

    def drop(self, key: K) -> None:
        """The object is gone: no timer, no backoff (it may still be queued: its round then finds nothing)."""
        self.unschedule(key)
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key to process; the caller must call ``done(key)`` when finished."""
        while not (self._queue or self._bulk) or self._shut:
            if self._shut:  # queued keys are not handed out any more: only rounds in flight finish
                raise ShutDown
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft() if self._queue else self._bulk.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut:  # added while processing: run it again
            self._queue.append(key)
            self._ready.set()

    def shut_down(self) -> None:
        """Stop handing out keys; timers are cancelled."""
        self._shut = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ready.set()
