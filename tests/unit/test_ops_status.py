"""The ops tool's pure parts: names from settings, the verdict, reading a dead letter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.messaging import (
    H_ATTEMPT,
    H_FAILED_SERVICE,
    H_FIRST_ERROR,
    H_LAST_ERROR,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
)
from shared.ops.deadletters import DeadLetter, Selection, describe
from shared.ops.outbox import Claim, OutboxReport, PendingEvent
from shared.ops.queues import QueueReport, QueueStats, management_endpoint, system_queues
from shared.ops.settings import OpsSettings
from shared.ops.status import Finding, Health, StatusReport, Thresholds, judge

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    for name in (
        "RABBITMQ_URL",
        "RABBITMQ_MANAGEMENT_URL",
        "HOLDSPACE_TOPOLOGY_PREFIX",
        "MAX_ATTEMPTS",
        "RETRY_BASE_MS",
        "RETRY_MAX_MS",
    ):
        monkeypatch.delenv(name, raising=False)


# --- names and endpoints ----------------------------------------------------------------


def test_queue_names_follow_the_prefix_and_the_services_retry_settings(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_TOPOLOGY_PREFIX", "t1.")
    monkeypatch.setenv("MAX_ATTEMPTS", "4")
    monkeypatch.setenv("RETRY_BASE_MS", "100")
    monkeypatch.setenv("RETRY_MAX_MS", "300")
    refs = system_queues(OpsSettings())
    registration = [(r.role, r.name) for r in refs if r.service == "registration"]
    assert registration == [
        ("service", "t1.registration"),
        ("retry", "t1.registration.retry.100ms"),
        ("retry", "t1.registration.retry.200ms"),
        ("retry", "t1.registration.retry.300ms"),
        ("dlq", "t1.registration.dlq"),
    ]
    assert {r.service for r in refs} == {
        "registration",
        "consent",
        "payments",
        "notifications",
        "progress",
    }
    assert len(refs) == 5 * 5


def test_defaults_match_the_services_settings() -> None:
    from shared.settings import ServiceSettings

    ops = OpsSettings()
    assert ops.retry_delays_ms() == ServiceSettings().retry_delays_ms()
    assert ops.service_url("payments") == "http://127.0.0.1:8003"


def test_a_dlq_is_named_by_service_by_short_name_or_in_full(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_TOPOLOGY_PREFIX", "t1.")
    s = OpsSettings()
    for name in ("consent", "consent.dlq", "t1.consent.dlq"):
        assert s.resolve_dlq(name) == ("t1.consent.dlq", "consent")
    assert s.resolve_dlq("other.thing.dlq") == ("other.thing.dlq", None)
    for bad in ("t1.consent", "t1.consent.retry.200ms", "billing"):
        with pytest.raises(ValueError, match="not a dead-letter queue"):
            s.resolve_dlq(bad)


def test_management_endpoint_derives_from_the_amqp_url(monkeypatch) -> None:
    monkeypatch.setenv("RABBITMQ_URL", "amqp://ops:p%40ss@broker.local:5672/holdspace-test-1?x=1")
    e = management_endpoint(OpsSettings())
    assert (e.base_url, e.username, e.password, e.vhost) == (
        "http://broker.local:15672",
        "ops",
        "p@ss",
        "holdspace-test-1",
    )
    monkeypatch.setenv("RABBITMQ_URL", "amqp://ops:pw@broker.local/")
    assert management_endpoint(OpsSettings()).vhost == "/"
    monkeypatch.setenv("RABBITMQ_URL", "amqp://ops:pw@broker.local/%2F")
    assert management_endpoint(OpsSettings()).vhost == "/"
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "https://mon:secret@mgmt.local:443/rabbit/")
    e = management_endpoint(OpsSettings())
    assert (e.base_url, e.username, e.password) == (
        "https://mgmt.local:443/rabbit",
        "mon",
        "secret",
    )
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://rabbitmq:15672/")
    e = management_endpoint(OpsSettings())
    assert (e.base_url, e.username, e.password) == ("http://rabbitmq:15672", "ops", "pw")


# --- the verdict ------------------------------------------------------------------------


def queue(role: str, name: str, **figures: Any) -> QueueStats:
    return QueueStats("registration", role, name, exists=figures.pop("exists", True), **figures)


def outbox(*ages_s: float, claims: list[Claim] | None = None, error: str | None = None):
    report = OutboxReport("payments", "db_payments", exists=True, checked_at=NOW, error=error)
    report.events = [
        PendingEvent("cases", "a1", f"e{i}", "payment.requested", NOW - timedelta(seconds=a), "r")
        for i, a in enumerate(sorted(ages_s, reverse=True))
    ]
    report.claims = claims or []
    return report


def report(
    queues: list[QueueStats],
    outboxes: list[OutboxReport] = (),
    health: list[Health] = (),
    source: str | None = "management-api",
    **thresholds: Any,
) -> StatusReport:
    r = StatusReport(
        checked_at=NOW,
        thresholds=Thresholds(**thresholds),
        queues=QueueReport(source, None, queues),
        outboxes=list(outboxes),
        deliveries={},
        health=list(health),
    )
    judge(r)
    return r


def kinds(r: StatusReport) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in r.problems]


def test_nothing_stuck_exits_zero() -> None:
    r = report(
        [
            queue("service", "q", ready=3, unacked=2, consumers=1),
            queue("retry", "q.retry.200ms", ready=5, consumers=0),
            queue("dlq", "q.dlq", ready=0, unacked=0, consumers=0),
        ],
        [outbox(5.0)],
    )
    assert r.problems == [] and r.exit_code == 0
    assert r.to_json()["ok"] is True


def test_dead_letters_past_the_threshold_are_stuck() -> None:
    letters = [queue("dlq", "q.dlq", ready=2, unacked=1, consumers=0)]
    assert kinds(report(letters)) == [("dead_letters", "q.dlq")]
    assert report(letters).exit_code == 1
    assert report(letters, max_dead=3).exit_code == 0
    assert report(letters, max_dead=2).problems[0].detail == "3 dead letter(s) (max 2)"


def test_a_dead_letter_queue_near_its_bound_is_stuck_and_an_unbounded_one_warned() -> None:
    near = report([queue("dlq", "q.dlq", ready=80, unacked=0, max_length=100)], max_dead=1000)
    assert kinds(near) == [("dlq_near_bound", "q.dlq")] and near.exit_code == 1
    assert near.problems[0].detail == "80 of at most 100 kept: past it the broker drops the oldest"
    far = report([queue("dlq", "q.dlq", ready=79, unacked=0, max_length=100)], max_dead=1000)
    assert far.problems == [] and far.warnings == []
    unbounded = report([queue("dlq", "q.dlq", ready=0, unacked=0)])
    assert [(w.kind, w.where) for w in unbounded.warnings] == [("dlq_unbounded", "q.dlq")]
    assert unbounded.exit_code == 0


def test_the_bound_in_force_is_read_from_the_management_api() -> None:
    from shared.ops.queues import _max_length

    assert _max_length({"effective_policy_definition": {"max-length": 10000}}) == 10000
    assert _max_length({"arguments": {"x-max-length": 5}, "effective_policy_definition": {}}) == 5
    assert _max_length({"arguments": {}, "effective_policy_definition": []}) is None


def test_a_service_queue_with_messages_and_no_consumer_is_stuck() -> None:
    assert kinds(report([queue("service", "q", ready=1, consumers=0)])) == [("no_consumer", "q")]
    assert report([queue("service", "q", ready=0, consumers=0)]).exit_code == 0
    # Unknown consumers (no figure) is not a verdict of zero.
    assert report([queue("service", "q", ready=4, consumers=None)]).exit_code == 0


def test_outbox_lag_and_stuck_claims() -> None:
    stuck = Claim("outbox:cases:a1", "host:1", NOW - timedelta(seconds=5), True, True)
    idle = Claim("outbox:cases:zz", "host:1", NOW - timedelta(seconds=5), True, False)
    assert kinds(report([], [outbox(61.0, 2.0)])) == [("outbox_lag", "payments")]
    assert report([], [outbox(61.0)], max_outbox_age_s=120).exit_code == 0
    assert kinds(report([], [outbox(claims=[stuck, idle])])) == [("stuck_claim", "payments")]


def test_an_event_the_relay_set_aside_is_stuck_and_named_with_its_error() -> None:
    aside = outbox()
    aside.parked = [
        PendingEvent("cases", "a1", "e9", "payment.requested", NOW, "r", "DecryptionError")
    ]
    r = report([], [aside])
    assert kinds(r) == [("outbox_parked", "payments")] and r.exit_code == 1
    assert "e9" in r.problems[0].detail and "DecryptionError" in r.problems[0].detail
    assert aside.to_json()["parked"][0]["error"] == "DecryptionError"


def test_what_cannot_be_inspected_exits_three_unless_something_is_stuck() -> None:
    r = report([queue("dlq", "q.dlq", exists=False)], source=None)
    assert kinds(r) == [("unreachable", "broker")] and r.exit_code == 3
    r = report([queue("dlq", "q.dlq", ready=1)], [outbox(error="ServerSelectionTimeoutError")])
    assert set(kinds(r)) == {("unreachable", "db_payments"), ("dead_letters", "q.dlq")}
    assert r.exit_code == 1


def test_missing_queues_and_unhealthy_services_are_warnings_by_default() -> None:
    down = Health("consent", "http://127.0.0.1:8002/readyz", "unreachable", "ConnectError")
    r = report([queue("service", "q", exists=False)], health=[down])
    assert r.exit_code == 0
    assert [(w.kind, w.where) for w in r.warnings] == [
        ("missing_queue", "registration"),
        ("unhealthy", "consent"),
    ]
    strict = report([], health=[down], fail_on_unhealthy=True)
    assert kinds(strict) == [("unhealthy", "consent")] and strict.exit_code == 1
    assert Finding("x", "y", "z").to_json() == {"kind": "x", "where": "y", "detail": "z"}


# --- reading a dead letter --------------------------------------------------------------


@dataclass
class Message:
    """The attributes of an incoming message that describe() reads."""

    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = "e1"
    type: str | None = "consent.signed"
    correlation_id: str | None = "r1"
    timestamp: datetime | None = NOW
    body: bytes = b"{}"


def test_a_dead_letter_from_the_consumer_says_attempts_errors_and_origin() -> None:
    letter = describe(
        1,
        Message(
            headers={
                H_ATTEMPT: 5,
                H_FIRST_ERROR: b"RuntimeError: first",
                H_LAST_ERROR: "RuntimeError: last",
                H_FAILED_SERVICE: "payments",
                H_ORIGINAL_EXCHANGE: "holdspace.internal",
                H_ORIGINAL_ROUTING_KEY: "consent.signed",
            }
        ),
    )
    assert letter == DeadLetter(
        position=1,
        message_id="e1",
        type="consent.signed",
        correlation_id="r1",
        attempts=5,
        first_error="RuntimeError: first",
        last_error="RuntimeError: last",
        failed_service="payments",
        original_exchange="holdspace.internal",
        original_routing_key="consent.signed",
        dead_lettered_by="consumer",
        timestamp=NOW.isoformat(),
        size=2,
    )


def test_a_dead_letter_from_the_broker_is_read_from_x_death() -> None:
    deaths = [
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "holdspace.payments",
            "exchange": "holdspace.internal",
            "routing-keys": ["consent.signed"],
        }
    ]
    letter = describe(2, Message(headers={"x-death": deaths, "x-delivery-count": 10}))
    assert letter.dead_lettered_by == "broker"
    assert letter.attempts == 11
    assert letter.first_error == letter.last_error == "broker: delivery_limit"
    assert (letter.original_exchange, letter.original_routing_key) == (
        "holdspace.internal",
        "consent.signed",
    )
    bare = describe(3, Message(headers={}, timestamp=None))
    assert (bare.attempts, bare.original_exchange, bare.timestamp) == (None, None, None)


def test_a_selection_matches_by_id_type_or_everything() -> None:
    letter = describe(1, Message())
    assert Selection.of(ids=["e1"]).matches(letter)
    assert Selection.of(types=["consent.signed"]).matches(letter)
    assert Selection.of(everything=True).matches(letter)
    assert not Selection.of(ids=["e2"], types=["payment.confirmed"]).matches(letter)
    assert Selection.of().empty and not Selection.of(ids=["e1"]).empty


def test_a_safety_flag_sent_again_with_nobody_handling_it_is_stuck() -> None:
    def with_alerts(**alerts: Any) -> StatusReport:
        r = StatusReport(
            checked_at=NOW,
            thresholds=Thresholds(),
            queues=QueueReport("management-api", None, []),
            outboxes=[],
            deliveries={},
            health=[],
            alerts=alerts,
        )
        judge(r)
        return r

    waiting = with_alerts(unacknowledged=1, escalated=0, source="db.alerts")
    assert waiting.exit_code == 0  # within SAFETY_ACK_S: a coordinator may still answer
    stuck = with_alerts(unacknowledged=2, escalated=1, source="db.alerts")
    assert kinds(stuck) == [("safety_unacknowledged", "notifications")]
    assert stuck.exit_code == 1 and stuck.to_json()["safety_alerts"]["escalated"] == 1


async def test_a_service_serving_without_its_broker_is_reported_degraded(monkeypatch) -> None:
    import httpx

    from shared.ops import status

    def readyz(request: httpx.Request) -> httpx.Response:
        degraded = request.url.port == 8002  # consent's broker is away
        body = {"status": "degraded" if degraded else "ok", "database": "ok"}
        return httpx.Response(200, json={**body, "broker": "down" if degraded else "ok"})

    real = httpx.AsyncClient
    monkeypatch.setattr(
        status.httpx,
        "AsyncClient",
        lambda **kw: real(transport=httpx.MockTransport(readyz), **kw),
    )
    health = {h.service: h.status for h in await status.check_health(OpsSettings())}
    assert health["consent"] == "degraded"
    assert all(v == "ok" for s, v in health.items() if s != "consent")
