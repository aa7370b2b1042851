"""The benchmark's arithmetic: percentiles, the open-loop schedule, the bound, the verdicts."""

from __future__ import annotations

import math

import pytest
from holdspace_bench import stats


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert stats.percentile([], 50) is None


def test_latency_summary_in_ms_and_failures_count_as_slowest() -> None:
    fast = [0.010] * 98 + [0.020, 0.030]
    summary = stats.latency_summary(fast)
    assert summary["p50_ms"] == 10.0
    assert summary["p99_ms"] == 20.0
    assert summary["max_ms"] == 30.0
    assert summary["count"] == 100 and summary["failed"] == 0
    # Two failures among 100 attempts: the p99 falls on a failure, so it is unknown (None).
    with_failures = stats.latency_summary([0.010] * 98, failed=2)
    assert with_failures["p50_ms"] == 10.0
    assert with_failures["p99_ms"] is None
    assert with_failures["max_ms"] is None
    assert stats.latency_summary([])["p50_ms"] is None


def test_schedule_is_evenly_spaced_and_complete() -> None:
    offsets = stats.schedule(100, 60)
    assert len(offsets) == 6000
    assert offsets[0] == 0.0
    assert offsets[1] == pytest.approx(0.01)
    assert offsets[-1] == pytest.approx(59.99)
    assert stats.schedule(0, 10) == [] and stats.schedule(10, 0) == []


def test_spread_ignores_missing_values() -> None:
    assert stats.spread([3.0, None, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert stats.spread([None])["median"] is None


def test_per_second_and_steady_rate() -> None:
    times = [100.1, 100.5, 101.2, 103.9]
    assert stats.per_second(times, 100.0) == [2, 1, 0, 1]
    steady = [10.0 + i * 0.1 for i in range(101)]  # 10 per second
    assert stats.steady_rate(steady) == pytest.approx(10.0, rel=0.02)
    assert stats.steady_rate([1.0, 2.0]) is None


def test_bound_adds_machine_time_per_kind() -> None:
    costs = [
        stats.Cost("http", 5, 5000),  # 1 ms
        stats.Cost("publish", 8, 8000),  # 1 ms
        stats.Cost("db", 6, 2000),  # 3 ms
    ]
    b = stats.bound(costs)
    assert b.additive_per_s == pytest.approx(200.0)  # 1 / 5 ms
    assert b.tightest == "db"
    assert b.tightest_alone_per_s == pytest.approx(2000 / 6)
    assert not b.missing


def test_bound_is_unknown_when_a_raw_rate_is_missing() -> None:
    b = stats.bound([stats.Cost("http", 5, 5000), stats.Cost("db", 6, None)])
    assert b.additive_per_s is None
    assert b.missing == ["db"]
    # A kind an enrollment does not use costs nothing, whatever its rate.
    assert stats.bound([stats.Cost("http", 5, 5000), stats.Cost("x", 0, None)]).additive_per_s


def test_kept_up_needs_no_errors_and_a_prompt_drain() -> None:
    ok, why = stats.kept_up(sent=100, errors=0, drained=True, drain_s=3.0, duration_s=20)
    assert ok and why == "kept up"
    assert not stats.kept_up(sent=100, errors=1, drained=True, drain_s=1, duration_s=20)[0]
    assert not stats.kept_up(sent=100, errors=0, drained=False, drain_s=None, duration_s=20)[0]
    late, why = stats.kept_up(sent=100, errors=0, drained=True, drain_s=16.0, duration_s=20)
    assert not late and "allowed 15.0 s" in why
    # Longer steps allow a quarter of their duration.
    assert stats.kept_up(sent=100, errors=0, drained=True, drain_s=19, duration_s=60)[0]
    assert not stats.kept_up(sent=0, errors=0, drained=True, drain_s=0, duration_s=1)[0]
    lost, why = stats.kept_up(
        sent=100, errors=0, drained=True, drain_s=1, duration_s=20, dead_letters=3
    )
    assert not lost and why == "3 message(s) dead-lettered"


def test_quiet_verdict() -> None:
    assert stats.quiet_verdict(load_before=0.2, cores=2, foreign_cpu_share=0.01) == (True, [])
    quiet, warnings = stats.quiet_verdict(load_before=4.3, cores=2, foreign_cpu_share=0.5)
    assert not quiet and len(warnings) == 2
    assert "4.30" in warnings[0] and "50%" in warnings[1]


def test_all_reps_and_counter_delta() -> None:
    assert stats.all_reps([True, True]) is True
    assert stats.all_reps([True, False, True]) is False
    assert stats.all_reps([None, True]) is True
    assert stats.all_reps([None]) is None
    assert stats.counter_delta({"a": 1.0}, {"a": 4.0, "b": 2.0}) == {"a": 3.0, "b": 2.0}
    assert not math.isnan(stats.counter_delta({}, {"x": 0.0})["x"])
