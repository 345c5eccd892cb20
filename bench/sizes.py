"""How big each bench run is: one profile per ``--size`` (plus ``--quick`` for the CI smoke test)."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class Size:
    name: str
    namespaces: int
    """Namespaces the population is spread over (all watched: the operator runs with --all-namespaces)."""
    population: int
    """ClientCredentials with long-lived tokens: what the idle RSS and the restart are measured with."""
    wave: int
    """Of the population, how many are created at once (timed); the rest are created before, untimed."""
    refresh_group: int
    """Resources with short-lived tokens and distinct credentials: the per-refresh window counts them."""
    dedupe_group: int
    """K resources sharing one credentials Secret: they must share one exchange per token lifetime."""
    failover_group: int
    """Resources created while two replicas run: exchanges must equal this number (no duplicates)."""
    unrelated_secrets: int
    """Helm release Secrets of ``unrelated_secret_size`` bytes each, in the watched namespaces."""
    unrelated_secret_size: int = 256 * KIB
    short_lifetime: int = 20
    """Seconds; the refresh and dedupe groups get tokens this short (renewal at 67 %: every ~13 s)."""
    long_lifetime: int = 3600
    """Seconds; everything else, so that no other refresh falls into the measured windows."""
    refresh_cycles: int = 2
    """Length of the per-refresh window in renewal cycles of the short tokens."""
    settle_seconds: float = 5.0
    """RSS sampling window after each memory-relevant step."""
    quiet_seconds: float = 15.0
    """Restart: when the operator exposes no reconcile counter, done after this long without traffic."""
    lease: tuple[int, int, int] = (15, 10, 2)
    """Leader election: lease duration, renew deadline, retry period (seconds)."""
    create_concurrency: int = 4
    """Creates in flight at once (like a parallel ``kubectl apply``)."""

    @property
    def bulk(self) -> int:
        return self.population - self.wave

    def deadline(self, resources: int) -> float:
        """A generous wait for ``resources`` to become Ready: a floor plus 0.5 s each (a slow operator still ends)."""
        return 120.0 + 0.5 * resources


SIZES: dict[str, Size] = {
    # CI: a tiny run that asserts the counts only (times and memory are printed, never asserted).
    "quick": Size(
        name="quick",
        namespaces=2,
        population=20,
        wave=20,
        refresh_group=4,
        dedupe_group=4,
        failover_group=3,
        unrelated_secrets=4,
        short_lifetime=8,
        refresh_cycles=1,
        settle_seconds=2.0,
        quiet_seconds=5.0,
        lease=(6, 4, 1),
    ),
    "small": Size(
        name="small",
        namespaces=4,
        population=1000,
        wave=1000,
        refresh_group=20,
        dedupe_group=10,
        failover_group=10,
        unrelated_secrets=400,
    ),
    "large": Size(
        name="large",
        namespaces=10,
        population=10_000,
        wave=1000,
        refresh_group=50,
        dedupe_group=20,
        failover_group=20,
        unrelated_secrets=400,
        settle_seconds=10.0,
    ),
}
