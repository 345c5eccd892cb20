"""How big and how rough a soak run is: two profiles (``long`` for ``make soak``, ``ci`` for the test).

Every field can be overridden on the command line; ``python -m bench.soak --help`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tokensync.models import DEFAULT_RENEWAL_PERCENT
from tokensync.renewal import RENEWAL_JITTER_SHARE

#: The renewal point of the default policy, as a share of the lifetime (67 %).
RENEWAL_SHARE = DEFAULT_RENEWAL_PERCENT / 100
#: The earliest renewal point the default policy can pick: 67 % less at most 5 % of it as jitter.
EARLIEST_RENEWAL_SHARE = RENEWAL_SHARE * (1 - RENEWAL_JITTER_SHARE)


@dataclass(frozen=True)
class SoakConfig:
    duration: float
    """Seconds of chaos (faults and restarts), after every resource holds its first token."""
    resources: int
    """ClientCredentials, each with credentials of its own (no two share a token)."""
    namespaces: int
    """The resources are spread over this many namespaces (the operator watches them all)."""
    lifetime_min: int
    lifetime_max: int
    """Token lifetimes (seconds) are drawn from [min, max]: the dev token server's lifetime is
    switched to a new draw every 2-5 s, so tokens of many lifetimes are alive at once."""
    fault_gap_min: float
    fault_gap_max: float
    """Healthy seconds between two fault windows."""
    fault_min: float
    fault_max: float
    """Seconds a fault window lasts; keep it well inside the retry window (lifetime_min x 33 %)."""
    retry_after_max: int
    """429 windows send ``Retry-After`` of 1 to this many seconds."""
    slow_delay_max: float
    """``slow`` windows delay each answer by 1 to this many seconds (then answer normally)."""
    restart_min: float
    restart_max: float
    """Seconds between two operator restarts (SIGTERM or SIGKILL, chosen at random)."""
    restart_pause_max: float
    """Seconds between the old process's end and the new one's start (0 to this)."""
    settle_max: float
    """After the chaos, wait up to this long for every Secret to hold a valid token again."""
    poll_interval: float
    """The reader lists every target Secret this often."""
    max_exchanges_per_renewal: float
    """Limit: tokens issued per renewal cycle due (1 is ideal; report.py says how it is counted)."""
    max_lag_p99: float
    """Limit: the operator's event-loop lag p99 (seconds), over every process of the run."""
    seed: int | None = None
    """Random seed of the fault and restart plan (printed; pass it again to replay the plan)."""

    @property
    def create_spread(self) -> float:
        """Resources are created over this many seconds, so that their renewals do not come in one burst."""
        return float(self.lifetime_max)

    def with_overrides(self, overrides: dict[str, Any]) -> SoakConfig:
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known and v is not None})

    def check(self) -> None:
        if self.resources < 1 or self.namespaces < 1 or self.duration <= 0:
            raise ValueError("resources, namespaces and duration must be positive")
        if not 1 <= self.lifetime_min <= self.lifetime_max:
            raise ValueError("need 1 <= lifetime-min <= lifetime-max")
        for low, high, name in (
            (self.fault_gap_min, self.fault_gap_max, "fault-gap"),
            (self.fault_min, self.fault_max, "fault"),
            (self.restart_min, self.restart_max, "restart"),
        ):
            if not 0 < low <= high:
                raise ValueError(f"need 0 < {name}-min <= {name}-max")
        if self.retry_after_max < 1 or self.slow_delay_max < 1:
            raise ValueError("retry-after-max and slow-delay-max must be at least 1")


PROFILES: dict[str, SoakConfig] = {
    # `make soak`: five minutes, 200 resources, lifetimes 10-20 s (renewal every 7-13 s).
    "long": SoakConfig(
        duration=300.0,
        resources=200,
        namespaces=4,
        lifetime_min=10,
        lifetime_max=20,
        fault_gap_min=6.0,
        fault_gap_max=16.0,
        fault_min=0.5,
        fault_max=2.5,
        retry_after_max=2,
        slow_delay_max=2.5,
        restart_min=20.0,
        restart_max=45.0,
        restart_pause_max=1.0,
        settle_max=120.0,
        poll_interval=1.0,
        max_exchanges_per_renewal=1.5,
        max_lag_p99=1.0,
    ),
    # tests/soak: one minute, 50 resources, lifetimes 8-14 s.
    "ci": SoakConfig(
        duration=60.0,
        resources=50,
        namespaces=2,
        lifetime_min=8,
        lifetime_max=14,
        fault_gap_min=5.0,
        fault_gap_max=12.0,
        fault_min=0.5,
        fault_max=2.0,
        retry_after_max=2,
        slow_delay_max=2.0,
        restart_min=12.0,
        restart_max=25.0,
        restart_pause_max=1.0,
        settle_max=45.0,
        poll_interval=1.0,
        max_exchanges_per_renewal=1.5,
        max_lag_p99=1.0,
    ),
}
