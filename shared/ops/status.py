"""``ops status``: queues, outboxes, failed deliveries and health, and the verdict.

Something is *stuck* (exit code 1) when, past the thresholds given:

- a dead-letter queue holds more than ``max_dead`` messages, or is 80% of the way to
  its bound (DLQ_MAX_LENGTH's policy), past which the broker drops the oldest;
- a service's oldest unpublished outbox event is older than ``max_outbox_age_s``;
- an outbox claim expired while its aggregate still has events (a relay died holding it);
- the relay set an event aside because it cannot be opened or parsed (it never goes out);
- a service queue has messages waiting and no consumer.

A part that could not be inspected at all (broker or database unreachable) is
reported too, with exit code 3 when nothing else is stuck. A service whose
``/readyz`` does not answer is a warning unless ``fail_on_unhealthy``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from shared.ops import deliveries
from shared.ops.outbox import OutboxReport, inspect_outbox
from shared.ops.queues import SOURCE_API, QueueReport, queue_report
from shared.ops.settings import OpsSettings
from shared.topology import SERVICES

EXIT_OK = 0
EXIT_STUCK = 1
EXIT_USAGE = 2
EXIT_UNINSPECTABLE = 3


@dataclass
class Finding:
    # dead_letters, outbox_lag, stuck_claim, outbox_parked, no_consumer, unhealthy, unreachable
    kind: str
    where: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


@dataclass
class Health:
    service: str
    url: str
    status: str  # ok, unavailable (503), unreachable, error
    detail: dict[str, Any] | str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "url": self.url,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass
class Thresholds:
    max_dead: int = 0
    max_outbox_age_s: float = 60.0
    fail_on_unhealthy: bool = False


@dataclass
class StatusReport:
    checked_at: datetime
    thresholds: Thresholds
    queues: QueueReport
    outboxes: list[OutboxReport]
    deliveries: dict[str, Any]
    health: list[Health]
    alerts: dict[str, Any] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(p.kind != "unreachable" for p in self.problems):
            return EXIT_STUCK
        return EXIT_UNINSPECTABLE if self.problems else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat(),
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "thresholds": {
                "max_dead": self.thresholds.max_dead,
                "max_outbox_age_s": self.thresholds.max_outbox_age_s,
                "fail_on_unhealthy": self.thresholds.fail_on_unhealthy,
            },
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
            "queues": self.queues.to_json(),
            "outbox": [o.to_json(show=5) for o in self.outboxes],
            "deliveries": self.deliveries,
            "safety_alerts": self.alerts,
            "health": [h.to_json() for h in self.health],
        }


async def check_health(settings: OpsSettings) -> list[Health]:
    async with httpx.AsyncClient(timeout=settings.ops_timeout_s) as client:

        async def one(service: str) -> Health:
            url = f"{settings.service_url(service)}/readyz"
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                return Health(service, url, "unreachable", type(exc).__name__)
            try:
                body: Any = response.json()
            except ValueError:
                body = None
            if response.status_code == 200:
                # "degraded": serving, its broker away (its events wait in the outbox).
                degraded = isinstance(body, dict) and body.get("status") == "degraded"
                return Health(service, url, "degraded" if degraded else "ok", body)
            status = "unavailable" if response.status_code == 503 else "error"
            return Health(service, url, status, body or f"HTTP {response.status_code}")

        return list(await asyncio.gather(*(one(s) for s in SERVICES)))


def judge(report: StatusReport) -> None:
    """Fill in problems and warnings from the figures and the thresholds."""
    t = report.thresholds
    if report.queues.source is None:
        report.problems.append(Finding("unreachable", "broker", report.queues.note or ""))
    missing: dict[str, list[str]] = {}
    for q in report.queues.queues:
        if not q.exists:
            missing.setdefault(q.service, []).append(q.name)
            continue
        depth = (q.ready or 0) + (q.unacked or 0)
        if q.role == "dlq":
            _judge_dead_letters(report, q.name, depth, q.max_length)
        if q.role == "service" and (q.ready or 0) > 0 and q.consumers == 0:
            report.problems.append(
                Finding("no_consumer", q.name, f"{q.ready} message(s) waiting, no consumer")
            )
    if report.queues.source is not None:
        for service, names in missing.items():
            report.warnings.append(
                Finding("missing_queue", service, f"not declared yet: {', '.join(names)}")
            )
    for o in report.outboxes:
        if o.error:
            report.problems.append(Finding("unreachable", o.database, o.error))
            continue
        age = o.oldest_age_s
        if age is not None and age > t.max_outbox_age_s:
            report.problems.append(
                Finding(
                    "outbox_lag",
                    o.service,
                    f"{o.pending} pending, oldest {age:.0f}s (max {t.max_outbox_age_s:.0f}s)",
                )
            )
        for claim in o.stuck_claims:
            report.problems.append(
                Finding("stuck_claim", o.service, f"{claim.key} expired {claim.expires_at:%X}")
            )
        for e in o.parked:
            report.problems.append(
                Finding(
                    "outbox_parked",
                    o.service,
                    f"{e.type} {e.id} of {e.collection}:{e.aggregate_id} set aside ({e.error})",
                )
            )
    if report.alerts.get("escalated"):
        report.problems.append(
            Finding(
                "safety_unacknowledged",
                "notifications",
                f"{report.alerts['escalated']} safety flag(s) sent again: no coordinator has "
                "said they are handling them (the console's Safety flags)",
            )
        )
    for h in report.health:
        if h.status != "ok":
            finding = Finding("unhealthy", h.service, f"{h.status} at {h.url}")
            (report.problems if t.fail_on_unhealthy else report.warnings).append(finding)


NEAR_BOUND = 0.8


def _judge_dead_letters(report: StatusReport, name: str, depth: int, bound: int | None) -> None:
    t = report.thresholds
    if depth > t.max_dead:
        report.problems.append(
            Finding("dead_letters", name, f"{depth} dead letter(s) (max {t.max_dead})")
        )
    if bound is not None and depth >= NEAR_BOUND * bound:
        report.problems.append(
            Finding(
                "dlq_near_bound",
                name,
                f"{depth} of at most {bound} kept: past it the broker drops the oldest",
            )
        )
    elif bound is None and report.queues.source == SOURCE_API:
        report.warnings.append(
            Finding("dlq_unbounded", name, "no max-length in force (the DLQ bounds policy)")
        )


async def gather_status(
    settings: OpsSettings, thresholds: Thresholds, client: AsyncMongoClient
) -> StatusReport:
    queues, health, outboxes, failed, alerts = await asyncio.gather(
        queue_report(settings),
        check_health(settings),
        asyncio.gather(*(inspect_outbox(client[settings.database_name(s)], s) for s in SERVICES)),
        deliveries.failed_deliveries(settings, client),
        deliveries.safety_alerts(settings, client),
    )
    report = StatusReport(
        checked_at=datetime.now(UTC),
        thresholds=thresholds,
        queues=queues,
        outboxes=list(outboxes),
        deliveries=failed,
        health=health,
        alerts=alerts,
    )
    judge(report)
    return report
