"""`bench/run --quick` end to end: it must produce a well-formed report.

No timing is asserted (a benchmark is a script with a report, never a timed test): only
that the command finishes, and that the JSON, the Markdown and the plots it writes have
the shape a reader relies on.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_benchmark_writes_a_well_formed_report(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    # MONGODB_URL, when set, is used as is; otherwise bench/run starts its own embedded
    # MongoDB with the file store, as scripts/up does.
    env = {**os.environ, "SKIP_BOOTSTRAP": "1"}
    env.pop("RABBITMQ_URL", None)  # the benchmark makes its own vhost on the local broker
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--out", str(out), "--work", str(work)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (json_path,) = out.glob("*-quick.json")
    result = json.loads(json_path.read_text())
    assert result["quick"] is True
    assert {"machine", "servers", "quiet", "summary", "targets", "repetitions"} <= result.keys()
    assert result["machine"]["logical_cores"] >= 1
    assert len(result["quiet"]["load_before"]) == 3 and len(result["quiet"]["load_after"]) == 3
    assert isinstance(result["quiet"]["quiet"], bool)

    (rep,) = result["repetitions"]
    assert "error" not in rep, rep.get("traceback")
    if not os.environ.get("MONGODB_URL"):
        assert result["servers"]["database"].startswith("mongo-java-server 1.47.0")
        mongo = rep["commands"]["mongo"]
        assert (
            mongo.startswith("exec ")
            and str(work / "rep1" / "mongo" / "holdspace.journal") in mongo
        )
    for group, key in (
        ("broker", "publish_batched_per_s"),
        ("broker", "consume_per_s"),
        ("database", "insert_per_s"),
        ("database", "conditional_update_per_s"),
        ("http", "noop_requests_per_s"),
    ):
        assert rep["raw"][group][key] > 0, (group, key)
    assert [s["offered_per_s"] for s in rep["ramp"]] == [5.0, 10.0]
    for step in rep["ramp"]:
        assert step["sent"] == step["latency"]["count"] + step["errors"]
        assert step["latency"]["p50_ms"] is None or step["latency"]["p50_ms"] > 0
    journey = rep["journey"]
    assert journey["started"] == 6
    assert journey["confirmed"] + journey["failed"] == 6
    costs = journey["costs"]
    assert costs["confirmed"] == journey["confirmed"]
    if journey["confirmed"]:
        # Every journey makes 5 requests: sign-up, approve, form, sign, webhook.
        assert costs["http_requests"] >= 5
        assert costs["events_published"] > 0
        # Counted by the services' own clients (holdspace_db_commands_total).
        assert costs["db_commands"] and sum(costs["db_commands"].values()) > 0
        assert "db updates" in [c["name"] for c in rep["bound"]["costs"]]
        assert rep["bound"]["additive_per_s"] > 0
    assert rep["race"]["sign_ups"] == 60 and rep["race"]["held"] == 8
    assert set(journey["usage_per_enrollment"]["cpu_ms"]) >= {
        "registration",
        "consent",
        "payments",
        "notifications",
        "load generator (bench)",
    }

    # The data-size phase: the database grown to the quick run's 1,000 registrations by
    # copies of what the run wrote, then the journey measured again on it.
    sized = rep["data_size"]
    assert sized["preload"]["registrations_after"] >= 1000
    assert sized["preload"]["registrations_before"] < 1000 < sized["preload"]["documents_inserted"]
    assert sized["journey"]["confirmed"] + sized["journey"]["failed"] == 6
    assert (
        sized["signup"]["sent"] == sized["signup"]["latency"]["count"] + sized["signup"]["errors"]
    )
    # The spans the services wrote, summed per step.
    assert rep["spans"] and {"service", "step", "count", "total_s"} <= rep["spans"][0].keys()

    assert [t["key"] for t in result["targets"]] == [
        "signup_p99",
        "journey_p99",
        "bound_fraction",
        "db_commands",
        "cpu_ms",
        "seat_race",
        "signup_p99_at_size",
        "journey_p99_at_size",
        "bound_fraction_at_size",
        "costs_at_size",
    ]
    assert all(t["passed"] is None for t in result["targets"])  # a quick run judges nothing

    (md_path,) = out.glob("*-quick.md")
    text = md_path.read_text()
    for heading in (
        "## Targets",
        "## Machine and load",
        "## 1. Raw limits",
        "## 4. Costs",
        "## 8. What ran out",
        "## 9. With 100,000 registrations already stored",
    ):
        assert heading in text
    images = sorted(out.glob("*-quick-*.png"))
    assert [p.name.rsplit("-", 1)[1] for p in images] == ["journey.png", "latency.png"]
    for image in images:
        assert image.read_bytes()[:8] == PNG_MAGIC
        assert f"]({image.name})" in text
    assert not work.exists()  # scratch removed after a successful run
