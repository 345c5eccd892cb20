"""Measurements: process memory from /proc, Prometheus metrics, API request counts, request rates."""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

MIB = 1024 * 1024

# ----- memory -----


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # VmRSS: resident now
    hwm_mib: float  # VmHWM: the peak resident size over the process's life


def read_memory(pid: int) -> Memory | None:
    """VmRSS and VmHWM of a live process, or None once it is gone."""
    try:
        text = open(f"/proc/{pid}/status").read()  # noqa: SIM115 - a tiny procfs read
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    if len(values) < 2:  # a zombie has no memory lines
        return None
    return Memory(values["VmRSS"], values["VmHWM"])


class RssSampler:
    """Samples the memory of the watched processes every ``interval`` seconds (a thread of its own).

    VmHWM already holds each process's exact peak; periodic VmRSS samples give the peak of a phase.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._pids: set[int] = set()
        self._samples: list[tuple[float, int, float]] = []  # (monotonic time, pid, VmRSS MiB)
        self._hwm: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)
        self.sample_now()

    def sample_now(self) -> None:
        """Take a sample at once (e.g. right before stopping a process, to catch its last VmHWM)."""
        with self._lock:
            pids = list(self._pids)
        now = time.monotonic()
        for pid in pids:
            memory = read_memory(pid)
            with self._lock:
                if memory is None:
                    self._pids.discard(pid)
                    continue
                self._samples.append((now, pid, memory.rss_mib))
                self._hwm[pid] = max(self._hwm.get(pid, 0.0), memory.hwm_mib)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_now()

    def max_rss(self, pid: int, since: float, until: float | None = None) -> float | None:
        """The largest VmRSS sampled for ``pid`` in [since, until]."""
        end = math.inf if until is None else until
        with self._lock:
            values = [rss for t, p, rss in self._samples if p == pid and since <= t <= end]
        return max(values) if values else None

    def peak(self) -> float | None:
        """The largest VmHWM of every process watched so far."""
        with self._lock:
            return max(self._hwm.values()) if self._hwm else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (all its threads), or None once it is gone."""
    try:
        text = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - a tiny procfs read
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "(comm)": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def sample_rss_for(sampler: RssSampler, pid: int, seconds: float) -> float | None:
    """Sample over a window (a measurement, not a wait): the largest VmRSS seen in it."""
    started = time.monotonic()
    sampler.sample_now()
    time.sleep(seconds)
    sampler.sample_now()
    return sampler.max_rss(pid, started)


# ----- Prometheus -----


@dataclass
class Scrape:
    """One scrape of /metrics: samples by name, each a (labels, value) pair."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def total(self, name: str) -> float | None:
        """The sum over every label set (e.g. a counter's results), None when the metric is absent."""
        values = self.samples.get(name)
        return sum(v for _, v in values) if values is not None else None

    def buckets(self, histogram: str) -> dict[float, float]:
        """Cumulative bucket counts by upper bound, summed over label sets."""
        result: dict[float, float] = {}
        for labels, value in self.samples.get(f"{histogram}_bucket", []):
            bound = float(labels["le"])
            result[bound] = result.get(bound, 0.0) + value
        return result


def scrape(port: int, timeout: float = 10.0) -> Scrape | None:
    """The operator's metrics, or None if it serves none (the baseline may not)."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    result = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            result.samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return result


def histogram_quantile(q: float, before: Mapping[float, float], after: Mapping[float, float]) -> float | None:
    """The q-quantile of the observations made between two scrapes, as Prometheus' histogram_quantile does.

    Linear interpolation inside the bucket; a quantile in the +Inf bucket is the largest finite bound.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not bounds or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    index = bisect.bisect_left(counts, rank)
    if bounds[index] == math.inf:
        finite = [b for b in bounds if b != math.inf]
        return finite[-1] if finite else None
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return lower + (bounds[index] - lower) * (rank - below) / in_bucket


# ----- request rates -----


def peak_rate(times: Iterable[float], window: float = 1.0) -> int:
    """The most events in any window of ``window`` seconds (a sliding window over the timestamps)."""
    stamps = sorted(times)
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ----- API request accounting -----

READ_VERBS = frozenset({"get", "list"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class ApiCounts:
    """Requests by verb from the stand-in's ``/_devcluster/requests``; a long-lived watch counts once."""

    by_verb: dict[str, int]
    rows: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], *, skip_namespace: str | None = None) -> ApiCounts:
        kept = tuple(dict(r) for r in rows if skip_namespace is None or r.get("namespace") != skip_namespace)
        verbs: Counter[str] = Counter()
        for row in kept:
            verbs[str(row["verb"]).lower()] += int(row["count"])
        return cls(dict(verbs), kept)

    @property
    def reads(self) -> int:
        return sum(n for verb, n in self.by_verb.items() if verb in READ_VERBS)

    @property
    def writes(self) -> int:
        return sum(n for verb, n in self.by_verb.items() if verb in WRITE_VERBS)

    @property
    def watches(self) -> int:
        return self.by_verb.get("watch", 0)

    @property
    def total(self) -> int:
        return sum(self.by_verb.values())

    def breakdown(self) -> list[str]:
        """'verb resource [namespace]: count' lines, for the JSON details."""
        lines = []
        for row in sorted(self.rows, key=lambda r: (str(r.get("resource")), str(r.get("verb")))):
            resource = "/".join(p for p in (row.get("group"), row.get("resource")) if p)
            where = f" in {row['namespace']}" if row.get("namespace") else ""
            lines.append(f"{row['verb']} {resource}{where}: {row['count']}")
        return lines
