"""Pure arithmetic of the benchmark: percentiles, summaries over repetitions, the open-loop
schedule, the bound the raw limits set, whether a rate was kept up with, the targets.

Nothing here does I/O; tests/unit/test_bench_stats.py covers it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by the nearest-rank method: the smallest value with at
    least p% of the values at or below it. None for no values; p=100 is the maximum."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def latency_summary(seconds: Sequence[float], *, failed: int = 0) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds over every attempt.

    ``failed`` attempts (an error, or never completed) count as slower than anything
    measured: a percentile that falls on one is None, meaning unknown and over any limit.
    """
    values = sorted(seconds) + [math.inf] * failed
    out: dict[str, Any] = {"count": len(seconds), "failed": failed}
    for name, p in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99), ("max_ms", 100)):
        v = percentile(values, p)
        out[name] = None if v is None or math.isinf(v) else round(v * 1000, 2)
    out["mean_ms"] = round(statistics.fmean(seconds) * 1000, 2) if seconds else None
    return out


def spread(values: Iterable[float | None]) -> dict[str, float | None]:
    """min / median / max of the repetitions' values; None where a repetition had none."""
    known = [v for v in values if v is not None]
    if not known:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {
        "min": min(known),
        "median": statistics.median(known),
        "max": max(known),
        "n": len(known),
    }


def schedule(rate_per_s: float, duration_s: float) -> list[float]:
    """Intended send offsets (seconds from the start) of an open-loop load: evenly spaced."""
    if rate_per_s <= 0 or duration_s <= 0:
        return []
    count = int(round(rate_per_s * duration_s))
    return [i / rate_per_s for i in range(count)]


def per_second(times: Iterable[float], start: float) -> list[int]:
    """Counts per whole second since ``start`` (for throughput-over-time plots)."""
    buckets: list[int] = []
    for t in times:
        i = int(max(0.0, t - start))
        if i >= len(buckets):
            buckets.extend([0] * (i + 1 - len(buckets)))
        buckets[i] += 1
    return buckets


def steady_rate(completion_times: Sequence[float], trim: float = 0.1) -> float | None:
    """Completions per second between the ``trim`` and ``1 - trim`` quantiles of completion
    times: the ramp-up and the tail are left out. None for too few completions."""
    if len(completion_times) < 5:
        return None
    ordered = sorted(completion_times)
    lo = int(len(ordered) * trim)
    hi = max(lo + 1, int(len(ordered) * (1 - trim)) - 1)
    span = ordered[hi] - ordered[lo]
    if span <= 0:
        return None
    return (hi - lo) / span


# --- the bound ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """One kind of work an enrollment costs, and the raw rate this machine does it at."""

    name: str
    per_enrollment: float
    raw_rate_per_s: float | None
    source: str = ""

    @property
    def seconds(self) -> float | None:
        """Machine-seconds one enrollment spends on this kind of work at the raw rate."""
        if self.per_enrollment == 0:
            return 0.0
        if not self.raw_rate_per_s:
            return None
        return self.per_enrollment / self.raw_rate_per_s


@dataclass
class Bound:
    costs: list[Cost]
    additive_per_s: float | None = None  # 1 / sum of the seconds: the bound used
    tightest_alone_per_s: float | None = None  # min over kinds: if nothing else competed
    tightest: str | None = None
    missing: list[str] = field(default_factory=list)


def bound(costs: Sequence[Cost]) -> Bound:
    """The enrollments per second the raw limits allow.

    Each raw rate was measured with the whole machine given to that one kind of work
    (the server and its client on the same two cores), so ``count / rate`` is the
    machine-time one enrollment spends on it, and an enrollment needs the sum. The
    bound is 1 / that sum; the tighter-looking "alone" figure (each kind as if nothing
    else ran) is reported beside it for reference.
    """
    result = Bound(list(costs))
    total = 0.0
    for cost in costs:
        s = cost.seconds
        if s is None:
            result.missing.append(cost.name)
            continue
        total += s
        if cost.per_enrollment > 0 and cost.raw_rate_per_s:
            alone = cost.raw_rate_per_s / cost.per_enrollment
            if result.tightest_alone_per_s is None or alone < result.tightest_alone_per_s:
                result.tightest_alone_per_s = alone
                result.tightest = cost.name
    if total > 0 and not result.missing:
        result.additive_per_s = 1.0 / total
    return result


# --- keeping up -----------------------------------------------------------------------


def kept_up(
    *,
    sent: int,
    errors: int,
    drained: bool,
    drain_s: float | None,
    duration_s: float,
    dead_letters: int = 0,
    stats_lag_s: float = 5.0,
) -> tuple[bool, str]:
    """Whether the downstream flow kept up with an offered rate, and why not.

    It kept up when every request was answered without error, nothing was dead-lettered,
    and every queue and outbox was empty again within a quarter of the step's duration
    (at least 10 s) after the last request, plus the management API's statistics interval.
    """
    if sent == 0:
        return False, "nothing sent"
    if errors:
        return False, f"{errors} of {sent} requests failed"
    if dead_letters:
        return False, f"{dead_letters} message(s) dead-lettered"
    if not drained or drain_s is None:
        return False, "queues did not drain"
    allowed = max(10.0, 0.25 * duration_s) + stats_lag_s
    if drain_s > allowed:
        return False, f"drained {drain_s:.1f} s after the load (allowed {allowed:.1f} s)"
    return True, "kept up"


# --- machine load ---------------------------------------------------------------------


def quiet_verdict(
    *, load_before: float, cores: int, foreign_cpu_share: float | None
) -> tuple[bool, list[str]]:
    """Whether the machine was quiet enough for the figures to mean something.

    Quiet: the 1-minute load average before the run below 0.25 per core, and other
    processes (not the ones measured) using under 5% of the machine during it.
    """
    warnings = []
    if load_before > 0.25 * cores:
        warnings.append(
            f"1-minute load average {load_before:.2f} before the run on {cores} cores "
            "(quiet is below 0.25 per core)"
        )
    if foreign_cpu_share is not None and foreign_cpu_share > 0.05:
        warnings.append(
            f"other processes used {foreign_cpu_share:.0%} of the machine's CPU during the run"
            " (quiet is below 5%)"
        )
    return not warnings, warnings


# --- targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    passed: bool | None  # None: not measured in this run
    measured: str


def all_reps(values: Sequence[bool | None]) -> bool | None:
    """A target passes only if it passed in every repetition that measured it."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return all(known)


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """after - before for every key of ``after`` (a counter absent before started at 0)."""
    return {k: after[k] - before.get(k, 0.0) for k in after}
