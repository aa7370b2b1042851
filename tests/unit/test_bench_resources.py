"""The report's verdict on which resource ran out in a phase."""

from __future__ import annotations

from holdspace_bench import resources


def usage(wall: float, busy: float, **cpu: float) -> dict:
    return {"wall_s": wall, "machine_busy_cpu_s": busy, "cpu_s": cpu}


def test_a_service_at_a_full_core_is_the_limit_on_an_idle_machine() -> None:
    v = resources.verdict(usage(100, 120, notifications=95.0, registration=20.0), cores=2)
    assert v["limit"].startswith("one core: the notifications process (95%")
    assert v["machine_busy"] == 0.6


def test_the_database_may_use_both_cores_without_being_a_single_core_limit() -> None:
    v = resources.verdict(usage(100, 190, mongo=150.0, registration=30.0), cores=2)
    assert v["limit"].startswith("the machine's 2 cores (the machine 95% busy")
    assert "mongo 150%" in v["limit"]


def test_the_load_generator_is_never_the_systems_limit() -> None:
    v = resources.verdict(usage(100, 110, **{"load generator (bench)": 99.0}), cores=2)
    assert v["limit"].startswith("not CPU (the machine 55% busy)")


def test_a_core_pinned_in_the_busiest_stretch_is_the_limit_though_the_average_hides_it() -> None:
    # Pinned while the work piled up, idle while it drained: 70% over the phase.
    sampled = {
        **usage(100, 150, notifications=70.0, registration=30.0),
        "peak_share": {"notifications": 0.97, "registration": 0.4},
        "machine_peak_busy": 0.93,
    }
    v = resources.verdict(sampled, cores=2)
    assert v["limit"] == (
        "one core: the notifications process (97% of a core at its busiest, 70% over the"
        " phase; the machine 75% busy, 93% at its busiest)"
    )
    calm = {**sampled, "peak_share": {"notifications": 0.8}, "machine_peak_busy": 0.86}
    assert resources.verdict(calm, cores=2)["limit"].startswith("the machine's 2 cores")


def test_the_busiest_window_is_the_rate_over_the_last_window_seconds() -> None:
    from collections import deque

    from holdspace_bench.machine import WINDOW_S, _windowed

    window: deque = deque()
    assert _windowed(window, 0.0, 0.0) is None  # not a whole window seen yet
    rates = [_windowed(window, t, cpu) for t, cpu in [(2.5, 1.0), (5.0, 4.0), (7.5, 6.5)]]
    assert rates[0] is None
    assert rates[1] == 4.0 / WINDOW_S
    assert rates[2] == (6.5 - 1.0) / 5.0  # the sample at 0 s fell out of the window


def test_phases_are_found_in_a_repetition_and_in_its_data_size_part() -> None:
    step = {"offered_per_s": 100.0, "duration_s": 60.0, "usage": usage(60, 60, mongo=10.0)}
    rep = {"ramp": [{**step, "offered_per_s": 25.0}, step], "journey": {"usage": usage(1, 1)}}
    assert list(resources.phase_usages(rep)) == [
        "sign-ups at 100/s for 60 s",
        "journeys as fast as possible",
    ]
    sized = {"signup": step, "journey_target": {"usage": usage(1, 1)}}
    assert list(resources.phase_usages(sized)) == [
        "sign-ups at 100/s for 60 s",
        "journeys at the target rate",
    ]
    text = "\n".join(resources.markdown([{**rep, "data_size": sized}], cores=2))
    assert "| sign-ups at 100/s for 60 s (100,000 stored) | 50% | mongo 17% |" in text
    assert resources.verdict({"wall_s": 0}, 2)["limit"] is None


def test_span_summary_ranks_steps_by_their_time_in_all(tmp_path) -> None:
    import json

    from holdspace_bench import spans

    def span(name: str, ms: int) -> str:
        return json.dumps(
            {
                "name": name,
                "context": {"trace_id": "0x1", "span_id": "0x2"},
                "resource": {"attributes": {"service.name": "registration"}},
                "start_time": "2026-12-07T10:00:00.000000Z",
                "end_time": f"2026-12-07T10:00:00.{ms:03d}000Z",
            }
        )

    lines = [span("POST /cohorts/{cohort_id}/registrations", 20)] * 3 + [span("consume", 500)]
    (tmp_path / "registration.jsonl").write_text("\n".join(lines) + "\n{half")
    rows = spans.summarize(tmp_path)
    assert [(r["step"], r["count"], r["total_s"]) for r in rows] == [
        ("consume", 1, 0.5),
        ("POST /cohorts/{cohort_id}/registrations", 3, 0.1),
    ]
    assert rows[1]["p50_ms"] == 20.0
    text = "\n".join(spans.markdown(rows))
    assert "| registration | consume | 1 | 500.0 | 500.0 | 0.5 |" in text


def test_the_report_says_what_would_move_the_limit_from_the_measurements() -> None:
    pinned = {**usage(60, 90, notifications=45.0), "peak_share": {"notifications": 0.96}}
    rep = {
        "ramp": [{"offered_per_s": 100.0, "duration_s": 60.0, "usage": pinned}],
        "journey": {
            "usage": usage(10, 10, notifications=5.0),
            "costs": {
                "db_commands_by_place": {
                    "notifications find recipients": 33.0,
                    "registration insert registrations": 1.0,
                }
            },
        },
    }
    assert resources.limiting_process([rep]) == "notifications"
    assert resources.limiting_process([{**rep, "ramp": []}]) is None
    summary = {
        "usage_per_enrollment": {
            "notifications": {"cpu_ms": {"median": 100.0}},
            "registration": {"cpu_ms": {"median": 25.0}},
        }
    }
    profile = {
        "journeys": {
            "notifications": {
                "samples": 10,
                "by_library": [{"name": "pymongo", "share": 0.3}],
                "by_our_code": [{"name": "Sender.email_message", "share": 0.2}],
            }
        }
    }
    text = "\n".join(resources.moves("notifications", summary, [rep], profile, rate=20.0, cores=2))
    assert "is 2.5 s of CPU per second, 1.2 times this machine's 2 cores" in text
    assert "at most 100 ms per enrollment in all" in text
    assert "no placement of the processes meets that rate here" in text
    roomy = "\n".join(resources.moves("notifications", summary, [rep], None, rate=20.0, cores=4))
    assert "the cores would do, if the work were spread over them" in roomy
    assert "compete for the same 4 cores" in roomy
    assert "100 ms of CPU per enrollment, 80% of the system's 125 ms" in text
    assert "at most about 10.0 enrollments/s" in text
    assert "It sends 33 of the 34 database commands" in text
    assert "find recipients 33.0" in text
    assert "by library pymongo 30%; our code Sender.email_message 20%" in text
