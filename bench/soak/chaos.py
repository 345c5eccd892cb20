"""The chaos plan (seeded) and the thread that plays its token-endpoint part.

The plan is drawn up front from one seed: fault windows (mode, length, parameters), lifetime
switches and the restart sequence (signal, pause, interval). Replaying a seed replays the plan;
the timing of what the operator does in between is the machine's.

Times are wall-clock (``time.time()``): the Secrets' ``expiresAt`` are too.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field

from tokensync.dev.tokenserver import DevTokenServer

from .config import SoakConfig

#: The token-endpoint faults the soak injects (DevTokenServer failure modes), equally likely.
FAULT_MODES = ("unavailable", "html-error", "rate-limited", "slow")
#: Lifetime switches happen every LIFETIME_SWITCH seconds (a uniform draw in this range).
LIFETIME_SWITCH = (2.0, 5.0)


@dataclass(frozen=True)
class FaultWindow:
    start: float  # seconds after the soak started
    length: float
    mode: str
    retry_after: int = 0  # rate-limited: the Retry-After header, seconds
    delay: float = 0.0  # slow: how long each answer is held back


@dataclass(frozen=True)
class RestartStep:
    after: float  # seconds after the previous operator became ready
    signal: signal.Signals
    pause: float  # seconds between the old process's end and the new one's start


@dataclass(frozen=True)
class Interval:
    """A span of wall-clock time during which something was wrong, and what."""

    start: float
    end: float
    what: str

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and start <= self.end


@dataclass
class Plan:
    faults: list[FaultWindow]
    lifetimes: list[tuple[float, int]]  # (seconds after the start, lifetime)
    restarts: list[RestartStep]
    seed: int

    @classmethod
    def draw(cls, config: SoakConfig, seed: int) -> Plan:
        rng = random.Random(seed)  # noqa: S311 - a test plan, not cryptography
        faults: list[FaultWindow] = []
        t = rng.uniform(config.fault_gap_min, config.fault_gap_max)
        while t < config.duration:
            length = min(rng.uniform(config.fault_min, config.fault_max), config.duration - t)
            mode = rng.choice(FAULT_MODES)
            retry_after = rng.randint(1, config.retry_after_max) if mode == "rate-limited" else 0
            delay = round(rng.uniform(1.0, config.slow_delay_max), 2) if mode == "slow" else 0.0
            faults.append(FaultWindow(round(t, 2), round(length, 2), mode, retry_after, delay))
            t += length + rng.uniform(config.fault_gap_min, config.fault_gap_max)
        lifetimes: list[tuple[float, int]] = []
        t = 0.0
        while t < config.duration:
            lifetimes.append((round(t, 2), rng.randint(config.lifetime_min, config.lifetime_max)))
            t += rng.uniform(*LIFETIME_SWITCH)
        restarts: list[RestartStep] = []
        elapsed = 0.0
        while True:
            after = rng.uniform(config.restart_min, config.restart_max)
            elapsed += after
            if elapsed >= config.duration:
                break
            sig = rng.choice((signal.SIGTERM, signal.SIGKILL))
            restarts.append(RestartStep(round(after, 2), sig, round(rng.uniform(0, config.restart_pause_max), 2)))
        return cls(faults, lifetimes, restarts, seed)


@dataclass
class EndpointChaos:
    """Plays the plan's faults and lifetime switches on the token server (a thread of its own)."""

    server: DevTokenServer
    plan: Plan
    started_at: float = 0.0
    #: What actually happened, wall clock: [switched on, switched off] per fault window.
    unhealthy: list[Interval] = field(default_factory=list)
    faulty_seconds: float = 0.0
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, started_at: float) -> None:
        self.started_at = started_at
        self._thread = threading.Thread(target=self._run, name="soak-chaos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop at once and leave the endpoint healthy."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.server.fail(None)

    def intervals(self) -> list[Interval]:
        with self._lock:
            return list(self.unhealthy)

    def _sleep_until(self, offset: float) -> bool:
        """Wait until ``offset`` seconds after the start; False when asked to stop."""
        return not self._stop.wait(max(0.0, self.started_at + offset - time.time()))

    def _run(self) -> None:
        events: list[tuple[float, int, FaultWindow | int]] = [(t, 0, life) for t, life in self.plan.lifetimes]
        events += [(w.start, 1, w) for w in self.plan.faults]
        events.sort(key=lambda e: (e[0], e[1]))
        pending: list[tuple[FaultWindow, float]] = []  # windows switched on: (window, on time)
        try:
            for offset, _, what in events:
                while pending and pending[0][0].start + pending[0][0].length <= offset:
                    self._switch_off(*pending.pop(0))
                if not self._sleep_until(offset):
                    break
                if isinstance(what, FaultWindow):
                    self.server.fail(what.mode, retry_after=what.retry_after, delay=what.delay)
                    pending.append((what, time.time()))
                else:
                    self.server.lifetime = what
            while pending and not self._stop.is_set():
                self._switch_off(*pending.pop(0))
        except BaseException as exc:  # reported by the soak, which fails the run
            self.error = exc
        finally:
            for window, on in pending:  # stopped early: the window ends now
                self._switch_off(window, on, wait=False)
            self.server.fail(None)

    def _switch_off(self, window: FaultWindow, on: float, *, wait: bool = True) -> None:
        if wait:
            self._sleep_until(window.start + window.length)
        self.server.fail(None)
        off = time.time()
        with self._lock:
            self.unhealthy.append(Interval(on, off, _describe(window)))
            self.faulty_seconds += off - on


def _describe(window: FaultWindow) -> str:
    if window.mode == "rate-limited":
        return f"rate-limited (Retry-After {window.retry_after})"
    if window.mode == "slow":
        return f"slow ({window.delay:g} s)"
    return window.mode
