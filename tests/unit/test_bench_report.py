"""The benchmark's report: targets judged as stated, summaries, Markdown, metrics parsing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from holdspace_bench import profile, report, runner, system

LAT = {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 40.0, "max_ms": 60.0, "count": 6000}


def rep(index: int = 1, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "index": index,
        "raw": {
            "broker": {
                "publish_batched_per_s": 8000.0,
                "publish_serial_per_s": 1500.0,
                "consume_per_s": 9000.0,
                "message_bytes_median": 692,
                "publish_window": 128,
                "consume_prefetch": 32,
            },
            "database": {
                "insert_per_s": 2000.0,
                "conditional_update_per_s": 1500.0,
                "find_by_id_per_s": 3000.0,
                "delete_by_id_per_s": 2000.0,
                "workers": 32,
                "document_bytes": 881,
                "hot_documents": 16,
            },
            "http": {"noop_requests_per_s": 6000.0, "client": "aiohttp", "command": "uvicorn"},
        },
        "ramp": [
            {
                "offered_per_s": 100.0,
                "duration_s": 60.0,
                "achieved_per_s": 99.8,
                "latency": dict(LAT),
                "errors": 0,
                "drained": True,
                "drain_s": 4.0,
                "kept_up": True,
                "why": "kept up",
                "usage": {"foreign_cpu_share": 0.01},
            }
        ],
        "journey": {
            "started": 1000,
            "confirmed": 1000,
            "failures": {},
            "wall_s": 25.0,
            "drained": True,
            "drain_s": 3.0,
            "cohorts": 125,
            "started_from_rest": True,
            "enrollments_per_s": 40.0,
            "steady_enrollments_per_s": 45.0,
            "latency": dict(LAT),
            "failed": 0,
            "step_median_ms": {"sign_up": 12.0},
            "per_second": [10, 40, 42],
            "usage": {"foreign_cpu_share": 0.02},
            "usage_per_enrollment": {
                "cpu_ms": {"registration": 3.0},
                "cpu_ms_net": {"registration": 2.5},
                "peak_rss_mib": {"registration": 90.0},
            },
            "costs": {
                "http_by_route": {},
                "published_by_service": {},
                "db_commands": {"insert": 6.0},
                "db_writes_counted_by_services": 4.0,
            },
        },
        "journey_target": {
            "offered_per_s": 20.0,
            "duration_s": 60.0,
            "latency": {**LAT, "p99_ms": 800.0},
            "confirmed": 6000,
            "started": 6000,
            "failed": 0,
            "usage": {"foreign_cpu_share": 0.0},
        },
        "bound": {
            "costs": [
                {
                    "name": "HTTP requests",
                    "per_enrollment": 5.0,
                    "raw_rate_per_s": 6000.0,
                    "machine_ms": 0.83,
                }
            ],
            "additive_per_s": 60.0,
            "tightest_alone_per_s": 1200.0,
        },
        "fraction_of_bound": 40.0 / 60.0,
        "race": {
            "sign_ups": 1000,
            "seats": 8,
            "held": 8,
            "waitlisted": 992,
            "errors": 0,
            "roster_seats_taken": 8,
            "exactly_held": True,
            "wall_s": 2.0,
            "latency": dict(LAT),
        },
    }
    r["data_size"] = {
        "preload": {"registrations_before": 17_000, "registrations_after": 102_000},
        "journey": copy.deepcopy(r["journey"]),
        "bound": copy.deepcopy(r["bound"]),
        "fraction_of_bound": r["fraction_of_bound"],
        "journey_target": copy.deepcopy(r["journey_target"]),
        "signup": copy.deepcopy(r["ramp"][0]),
    }
    r.update(over)
    return r


def verdicts(reps: list[dict[str, Any]], **kw: Any) -> dict[str, bool | None]:
    return {t.key: t.passed for t in report.targets(reps, **kw)}


def test_every_target_passes_when_every_repetition_meets_it() -> None:
    assert verdicts([rep(1), rep(2), rep(3)]) == {
        "signup_p99": True,
        "journey_p99": True,
        "bound_fraction": True,
        "db_commands": True,
        "cpu_ms": True,
        "seat_race": True,
        "signup_p99_at_size": True,
        "journey_p99_at_size": True,
        "bound_fraction_at_size": True,
        "costs_at_size": True,
    }


def test_the_data_size_targets_need_the_grown_database() -> None:
    small = rep(1)
    small["data_size"]["preload"]["registrations_after"] = 99_999
    judged = {t.key: t for t in report.targets([small])}
    for key in report.SIZE_TARGETS:
        assert judged[key].passed is None
        assert "grown to 99,999" in judged[key].measured
    assert judged["signup_p99"].passed is True  # the rest judged as before
    none = rep(1)
    del none["data_size"]
    assert {k: verdicts([none])[k] for k in report.SIZE_TARGETS} == dict.fromkeys(
        report.SIZE_TARGETS
    )


def test_costs_that_grow_with_the_data_fail_at_size_only() -> None:
    grown = rep(1)
    sized = grown["data_size"]
    sized["journey"]["costs"]["db_commands"] = {"find": 30.0, "update": 11.0}
    sized["signup"]["latency"]["p99_ms"] = 120.0
    v = verdicts([grown])
    assert v["costs_at_size"] is False and v["signup_p99_at_size"] is False
    assert v["db_commands"] is True and v["signup_p99"] is True
    short = rep(1)
    short["data_size"]["signup"]["duration_s"] = 20.0
    assert verdicts([short])["signup_p99_at_size"] is None


def test_one_bad_repetition_fails_a_target() -> None:
    slow = rep(2)
    slow["ramp"][0]["latency"]["p99_ms"] = 51.0
    undrained = rep(3)
    undrained["ramp"][0]["drained"] = False
    dead = rep(3)
    dead["ramp"][0]["dead_letters"] = 2
    assert verdicts([rep(1), dead])["signup_p99"] is False
    assert verdicts([rep(1), slow])["signup_p99"] is False
    assert verdicts([rep(1), undrained])["signup_p99"] is False
    late = rep(2)
    late["journey_target"]["latency"]["p99_ms"] = None  # journeys that never finished
    assert verdicts([rep(1), late])["journey_p99"] is False
    assert verdicts([rep(1), rep(2, fraction_of_bound=0.49)])["bound_fraction"] is False
    nine = rep(2)
    nine["race"] = {**nine["race"], "held": 9, "exactly_held": False}
    assert verdicts([rep(1), nine])["seat_race"] is False
    slow_drain = rep(2)
    slow_drain["ramp"][0]["drain_s"] = 15.5  # drained, but not within 15 s
    assert verdicts([rep(1), slow_drain])["signup_p99"] is False


def test_costs_per_enrollment_are_judged_against_their_bounds() -> None:
    chatty = rep(2)
    chatty["journey"]["costs"]["db_commands"] = {"find": 25.0, "update": 15.5}
    assert verdicts([rep(1), chatty])["db_commands"] is False
    busy = rep(2)
    busy["journey"]["usage_per_enrollment"]["cpu_ms"] = {"registration": 100.0, "mongo": 51.0}
    assert verdicts([rep(1), busy])["cpu_ms"] is False
    # The load generator is not the system: its CPU does not count.
    driven = rep(2)
    driven["journey"]["usage_per_enrollment"]["cpu_ms"] = {
        "registration": 100.0,
        "load generator (bench)": 500.0,
    }
    assert verdicts([rep(1), driven])["cpu_ms"] is True
    uncounted = rep(2)
    uncounted["journey"]["costs"]["db_commands"] = None
    assert verdicts([uncounted])["db_commands"] is None


def test_targets_are_not_judged_on_other_rates_sizes_or_quick_runs() -> None:
    other = rep(1)
    other["ramp"][0]["offered_per_s"] = 50.0
    other["journey_target"]["offered_per_s"] = 100.0  # issue 8's rate, not issue 20's
    other["race"] = {**other["race"], "sign_ups": 100}
    v = verdicts([other])
    assert v["signup_p99"] is None and v["journey_p99"] is None and v["seat_race"] is None
    assert set(verdicts([rep(1)], quick=True).values()) == {None}


def test_a_repetition_that_crashed_cannot_pass() -> None:
    crashed = {"index": 2, "error": "RuntimeError: boom"}
    assert verdicts([rep(1), crashed])["seat_race"] is False


def test_summary_gives_min_median_max_and_markdown_states_everything(tmp_path: Path) -> None:
    reps = [rep(1), rep(2), rep(3)]
    reps[1]["journey"] = copy.deepcopy(reps[1]["journey"])
    reps[1]["journey"]["enrollments_per_s"] = 30.0
    reps[2]["journey"]["enrollments_per_s"] = 50.0
    summary = report.summarize(reps)
    assert summary["journey"]["enrollments_per_s"] == {
        "min": 30.0,
        "median": 40.0,
        "max": 50.0,
        "n": 3,
    }
    assert summary["ramp"][0]["all_drained"] is True
    assert summary["foreign_cpu_share_max"] == 0.02
    result = {
        "date": "2026-01-01",
        "quick": False,
        "command": "bench/run",
        "duration_s": 1800.0,
        "machine": {
            "cpu_model": "cpu",
            "logical_cores": 2,
            "memory_gib": 24.0,
            "kernel": "6",
            "python": "3.11",
            "packages": {"aio-pika": "10.2.1"},
            "git": "abc",
        },
        "servers": {
            "rabbitmq": "3.10.8",
            "erlang": "25",
            "database": "mongo-java-server 1.47.0, in memory with a journal",
        },
        "quiet": {
            "quiet": False,
            "warnings": ["other processes used 50% of the machine's CPU"],
            "load_before": [4.0, 3.0, 2.0],
            "load_after": [4.0, 3.0, 2.0],
            "foreign_cpu_share_max": 0.5,
        },
        "repetitions": reps,
        "summary": summary,
        "targets": [t.__dict__ for t in report.targets(reps)],
    }
    text = report.markdown(result, ["a-latency.png", "a-journey.png"])
    assert "Warning: the machine was not quiet" in text
    assert "other processes used 50%" in text
    assert text.count("**pass**") == len(report.TARGET_TEXT)
    assert "40.00 (30.00–50.00)" in text
    assert "![latency against offered rate](a-latency.png)" in text
    assert "- rep 1: 1000 of 1000 confirmed in 25.0 s, 125 cohorts" in text
    assert "one enrollment took 3 ms of CPU in all: registration 100% (3 ms)" in text
    assert "database: mongo-java-server 1.47.0, in memory with a journal" in text
    assert "database commands {'insert': 6.0}" in text
    for heading in ("## 1. Raw limits", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7."):
        assert heading in text
    assert "| database commands per enrollment | 6.0 | 6.0 |" in text  # the data-size table
    assert "| journeys as fast as possible | " in text  # what ran out

    # The report again from the run's JSON, with the code's current report.
    path = tmp_path / "2026-01-01.json"
    report.write_json(path, {**result, "summary": {}, "targets": []})
    md = report.rerender(path)
    again = md.read_text()
    assert again.count("**pass**") == len(report.TARGET_TEXT)
    assert "Partial report" not in again
    report.write_json(path, {**result, "partial": True, "config": {"reps": 5}})
    assert "stopped after 3 of 5 repetitions" in report.rerender(path).read_text()
    assert (tmp_path / "2026-01-01-latency.png").exists()


def test_service_metrics_are_summed_without_operations_routes() -> None:
    text = "\n".join(
        [
            "# TYPE holdspace_http_requests_total counter",
            'holdspace_http_requests_total{service="r",method="POST",route="/x",status="201"} 3.0',
            'holdspace_http_requests_total{service="r",method="POST",route="/x",status="409"} 1.0',
            'holdspace_http_requests_total{service="r",method="GET",route="/metrics",status="200"}'
            " 9",
            "# TYPE holdspace_events_consumed_total counter",
            'holdspace_events_consumed_total{service="r",type="a",outcome="ok"} 5.0',
            'holdspace_events_consumed_total{service="r",type="a",outcome="duplicate"} 2.0',
            "# TYPE holdspace_events_published_total counter",
            'holdspace_events_published_total{service="r",type="a"} 7.0',
            "# TYPE holdspace_db_writes_total counter",
            'holdspace_db_writes_total{service="r",op="update"} 4.0',
        ]
    )
    got = system.summarize_metrics(text)
    assert got["http"] == 4.0
    assert got["http|POST /x"] == 4.0
    assert got["consumed"] == 7.0 and got["consumed|duplicate"] == 2.0
    assert got["published"] == 7.0 and got["db_writes"] == 4.0


def test_database_commands_are_summed_by_command_from_a_services_metrics() -> None:
    text = "\n".join(
        [
            "# HELP holdspace_db_commands_total Database commands sent",
            "# TYPE holdspace_db_commands_total counter",
            'holdspace_db_commands_total{command="insert",service="r"} 40.0',
            'holdspace_db_commands_total{command="find",service="r"} 12.0',
            'holdspace_db_commands_total{command="find",service="unknown"} 1.0',
            "# HELP holdspace_db_commands_created Database commands sent",
            "# TYPE holdspace_db_commands_created gauge",
            'holdspace_db_commands_created{command="insert",service="r"} 1.7e9',
        ]
    )
    assert system.db_commands_from_metrics(text) == {"insert": 40.0, "find": 13.0}
    # Exported but nothing sent yet: nothing; not exported at all: not counted (None).
    header_only = "\n".join(text.splitlines()[:2])
    assert system.db_commands_from_metrics(header_only) == {}
    assert system.db_commands_from_metrics("# TYPE other_total counter\nother_total 1\n") is None


async def test_the_services_clients_count_what_they_send_and_not_the_handshake() -> None:
    from prometheus_client import generate_latest
    from pymongo import monitoring

    from shared import mongo

    client = mongo.make_client("mongodb://127.0.0.1:1/", service="bench-unit")
    try:
        [counter] = [
            c for c in client.options.event_listeners if isinstance(c, mongo.CommandCounter)
        ]
        assert counter.service == "bench-unit"
    finally:
        await client.close()
    by_place = ("command", "collection")
    before = system.db_commands_from_metrics(generate_latest().decode()) or {}
    places_before = system.db_commands_from_metrics(generate_latest().decode(), by_place) or {}
    sent = [
        {"insert": "c"},
        {"findAndModify": "c"},
        {"find": "c"},
        {"find": "d"},
        {"getMore": 7, "collection": "d"},
    ]
    handshake = [{"hello": 1}, {"isMaster": 1}, {"ismaster": 1}, {"ping": 1}, {"endSessions": []}]
    for command in sent + handshake:
        event = monitoring.CommandStartedEvent(command, "db", 1, ("127.0.0.1", 1), 1)
        counter.started(event)
    after = system.db_commands_from_metrics(generate_latest().decode())
    assert after is not None
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {"insert": 1.0, "findAndModify": 1.0, "find": 2.0, "getMore": 1.0}
    # And where: by collection, a getMore under the collection its cursor reads.
    places = system.db_commands_from_metrics(generate_latest().decode(), by_place) or {}
    moved = {k: v - places_before.get(k, 0.0) for k, v in places.items()}
    assert {k: v for k, v in moved.items() if v} == {
        "insert c": 1.0,
        "findAndModify c": 1.0,
        "find c": 1.0,
        "find d": 1.0,
        "getMore d": 1.0,
    }


def test_a_find_and_modify_is_priced_as_an_update() -> None:
    costs = {
        "http_requests": 5.0,
        "events_published": 6.0,
        "deliveries_consumed": 9.0,
        "db_writes_counted_by_services": 4.0,
        "db_commands": {"insert": 3.0, "update": 2.0, "findAndModify": 4.0, "find": 5.0},
    }
    bound = runner.bound_for(costs, rep()["raw"])
    by_name = {c.name: c for c in bound.costs}
    assert by_name["db updates"].per_enrollment == 6.0
    assert by_name["db updates"].source == "services' holdspace_db_commands_total"
    assert by_name["db finds"].per_enrollment == 5.0
    # Without the services' command counts, the writes they count themselves are used.
    fallback = runner.bound_for({**costs, "db_commands": None}, rep()["raw"])
    assert [c.name for c in fallback.costs][-1] == "db writes"


def test_costs_take_the_idle_background_out() -> None:
    before = {"services": {"r|http": 10.0, "r|published": 0.0}, "db": {"find": 100.0}}
    after = {"services": {"r|http": 30.0, "r|published": 40.0}, "db": {"find": 300.0}}
    idle = {"services": {"r|http": 0.0, "r|published": 0.0}, "db": {"find": 10.0}}
    gross = runner.costs_per_enrollment(runner.phase_delta(before, after), 10)
    net = runner.costs_per_enrollment(runner.phase_delta(before, after, idle, 5.0), 10)
    assert gross["http_requests"] == 2.0 and gross["events_published"] == 4.0
    assert gross["db_commands"] == {"find": 20.0}
    assert net["db_commands"] == {"find": 15.0}  # 200 - 10/s * 5 s, per 10 enrollments


def test_noop_server_runs_with_the_services_command_line() -> None:
    from holdspace_bench import raw

    command = raw.noop_command(8123)
    assert command.endswith(" -m holdspace_bench.noop_app")
    assert "HTTP_PORT=8123" in command and "HTTP_HOST=127.0.0.1" in command


def test_profile_summary_by_library_function_and_our_code() -> None:
    uv = "<module> (/r/.venv/bin/uvicorn:8)"
    raw_text = "\n".join(
        [
            f"{uv};run (/usr/lib/python3.11/asyncio/runners.py:118);"
            "decide (/r/services/registration/service.py:10) 30",
            f"{uv};sign_up (/r/services/registration/service.py:200);validate_python "
            "(/r/.venv/lib/python3.11/site-packages/pydantic/main.py:5) 50",
            f"{uv};_apply (/r/shared/aggregates.py:200) 10",
            f"{uv};Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 10",
            "_bootstrap (/usr/lib/python3.11/threading.py:1);"
            "Condition.wait (/usr/lib/python3.11/threading.py:320) 40",
            "garbage line",
        ]
    )
    s = profile.summarize(raw_text)
    assert s["samples"] == 100 and s["waiting_excluded"] == 40
    libs = {x["name"]: x["share"] for x in s["by_library"]}
    assert libs == {
        "pydantic": 0.5,
        "registration (ours)": 0.3,
        "shared (ours)": 0.1,
        "uvloop": 0.1,
    }
    assert s["by_function"][0] == {"name": "validate_python (pydantic)", "share": 0.5}
    ours = {x["name"]: x["share"] for x in s["by_our_code"]}
    # The pydantic time counts for the function of ours that called it.
    assert ours["sign_up (registration (ours))"] == 0.5
    assert ours["outside our code"] == 0.1
    assert profile.summarize("")["samples"] == 0


def test_dead_letter_queues_are_counted_apart() -> None:
    queues = [
        {"name": "b1.notifications", "messages": 3},
        {"name": "b1.notifications.dlq", "messages": 2},
        {"name": "b1.consent.dlq", "messages": 0},
        {"name": "b1.consent.retry.200ms", "messages": 1},
    ]
    assert system.dead_letters(queues) == 2
    assert [q["name"] for q in queues if system.is_dlq(q)] == [
        "b1.notifications.dlq",
        "b1.consent.dlq",
    ]
