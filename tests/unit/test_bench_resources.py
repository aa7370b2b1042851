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
    assert v["limit"].startswith("the machine's 2 cores (95% busy")
    assert "mongo 150%" in v["limit"]


def test_the_load_generator_is_never_the_systems_limit() -> None:
    v = resources.verdict(usage(100, 110, **{"load generator (bench)": 99.0}), cores=2)
    assert v["limit"].startswith("not CPU (55% of the machine busy)")


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
    assert "| sign-ups at 100/s for 60 s (100,000 stored) | 50% |" in text
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
