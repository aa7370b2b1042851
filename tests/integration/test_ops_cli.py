"""The ``ops`` tool against the real broker and database, with the registration service.

The registration service runs as a real process on its own topology prefix and
database names in the session's vhost; the tests drive ``ops`` in-process with
typer's CliRunner (in a worker thread: the commands run their own event loop) and
once through the installed ``ops`` script, and check what they print and their exit
codes against what is really in the queues and databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from typer.testing import CliRunner, Result

from shared import devinfra
from shared import events as ev
from shared.cli import app
from shared.messaging import (
    H_ATTEMPT,
    H_FAILED_SERVICE,
    H_FIRST_ERROR,
    H_LAST_ERROR,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    build_message,
)
from shared.topology import SERVICES
from tests.bus import TestBus
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.registration_api import RegistrationApi
from tests.services import WIRE_CIPHER, ServiceProcess, service_env

runner = CliRunner()
REPORTS = Path(__file__).resolve().parents[2] / "var" / "reports"
CANARY_NAME = "Canary Zhang-7f3a"
CANARY_EMAIL = "canary-7f3a@example.org"
STATUS_KEYS = {
    "checked_at",
    "ok",
    "exit_code",
    "thresholds",
    "problems",
    "warnings",
    "queues",
    "outbox",
    "deliveries",
    "safety_alerts",
    "health",
}
QUEUE_KEYS = {
    "service",
    "role",
    "name",
    "exists",
    "ready",
    "unacked",
    "consumers",
    "rate_in",
    "rate_out",
    "max_length",
}


class OpsSystem:
    """The registration service, the environment ops runs with, a broker connection."""

    def __init__(self, env: dict[str, str], process: ServiceProcess) -> None:
        self.env = env
        self.process = process
        self.connection: aio_pika.abc.AbstractConnection | None = None

    @property
    def prefix(self) -> str:
        return self.env["HOLDSPACE_TOPOLOGY_PREFIX"]

    def db_name(self, service: str) -> str:
        return f"{self.env['HOLDSPACE_DB_PREFIX']}{service}"

    async def ops(self, *args: str, input: str | None = None, **env: str) -> Result:
        return await asyncio.to_thread(
            runner.invoke, app, list(args), env={**self.env, **env}, input=input
        )

    async def ops_json(self, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
        result = await self.ops(*args, "--json", **env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result.exit_code, json.loads(result.stdout)

    async def channel(self) -> aio_pika.abc.AbstractChannel:
        if self.connection is None:
            self.connection = await aio_pika.connect(self.env["RABBITMQ_URL"])
        return await self.connection.channel(publisher_confirms=True)

    async def dead_letter(
        self,
        data: ev.EventData,
        *,
        service: str = "registration",
        event_id: str | None = None,
        sealed: bool = True,
    ) -> ev.Envelope:
        """Put an event into a service's DLQ as its consumer would have after 3 attempts;
        ``sealed=False``: a personal event as a publisher that did not seal it sent it."""
        envelope = ev.make_envelope(
            data,
            source="urn:holdspace:test",
            correlation_id=getattr(data, "registration_id", "test"),
            event_id=event_id,
        )
        headers = {
            H_ATTEMPT: 3,
            H_FIRST_ERROR: "RuntimeError: database timed out",
            H_LAST_ERROR: "RuntimeError: still timing out",
            H_FAILED_SERVICE: service,
            H_ORIGINAL_EXCHANGE: f"{self.prefix}internal",
            H_ORIGINAL_ROUTING_KEY: envelope.type,
        }
        message = build_message(envelope, headers, cipher=WIRE_CIPHER)
        if not sealed:
            message.body = envelope.model_dump_json().encode()
        channel = await self.channel()
        await channel.default_exchange.publish(message, routing_key=f"{self.prefix}{service}.dlq")
        await channel.close()
        return envelope

    async def ready(self, queue: str) -> int:
        channel = await self.channel()
        declared = await channel.declare_queue(queue, passive=True)
        await channel.close()
        return declared.declaration_result.message_count or 0

    async def purge(self, *queues: str) -> None:
        channel = await self.channel()
        for queue in queues:
            await (await channel.declare_queue(queue, passive=True)).purge()
        await channel.close()

    async def consumed(self, event_type: str) -> float:
        """registration's holdspace_events_consumed_total{type, outcome="ok"}."""
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{self.process.url}/metrics")).text
        needle = f'type="{event_type}"'
        for line in text.splitlines():
            if (
                line.startswith("holdspace_events_consumed_total{")
                and needle in line
                and 'outcome="ok"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
async def system(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[OpsSystem]:
    closed = f"http://127.0.0.1:{devinfra.free_port()}"  # nothing listens there
    env = service_env(mongodb_url, rabbitmq_url, short_id())
    process = ServiceProcess("registration", env, tmp_path_factory.mktemp("ops")).start()
    env = {
        **env,
        "REGISTRATION_URL": process.url,
        "CONSENT_URL": closed,
        "PAYMENTS_URL": closed,
        "NOTIFICATIONS_URL": closed,
        "PROGRESS_URL": closed,
    }
    s = OpsSystem(env, process)
    yield s
    if s.connection is not None:
        await s.connection.close()
    process.stop()


@pytest.fixture(scope="module")
async def api(system: OpsSystem) -> AsyncIterator[RegistrationApi]:
    bus = TestBus(system.env)
    async with httpx.AsyncClient(base_url=system.process.url, timeout=30) as client:
        yield RegistrationApi(client, bus)
    await bus.close_bus()


def others(system: OpsSystem) -> list[str]:
    return [f"{system.prefix}{s}" for s in SERVICES if s != "registration"]


async def status_when(
    system: OpsSystem, problems: set[tuple[str, str]], **env: str
) -> dict[str, Any]:
    """``ops status --json`` once it finds exactly ``problems`` (kind, where) and exits
    accordingly (management figures lag up to ~5 s behind the queues)."""

    async def check() -> dict[str, Any]:
        code, report = await system.ops_json("status", **env)
        assert {(p["kind"], p["where"]) for p in report["problems"]} == problems
        assert code == (1 if problems else 0), code
        return report

    return await eventually(check, timeout=20, interval=0.5, what=f"ops status {problems}")


def consent_signed(registration_id: str) -> ev.ConsentSigned:
    return ev.ConsentSigned(
        registration_id=registration_id,
        form_id="f1",
        form_version=1,
        text_sha256="0" * 64,
        signed_at=datetime.now(UTC),
    )


# --- ops status ----------------------------------------------------------------------------


async def test_status_is_clean_then_names_a_dead_letter_and_a_queue_nobody_consumes(
    system: OpsSystem,
) -> None:
    async def from_the_api() -> dict[str, Any]:
        # New queues get management statistics after ~5 s; until then they are read
        # passively. Wait, so the figures below are the management API's.
        report = await status_when(system, set())
        assert "without statistics" not in report["queues"]["note"], report["queues"]["note"]
        return report

    report = await eventually(from_the_api, timeout=30, interval=0.5, what="API statistics")
    assert set(report) == STATUS_KEYS
    assert report["ok"] is True and report["problems"] == []
    assert report["queues"]["source"] == "management-api"
    items = {q["name"]: q for q in report["queues"]["items"]}
    p = system.prefix
    # Every queue of the system, the retry steps named from MAX_ATTEMPTS/RETRY_BASE_MS.
    assert set(items) == {
        f"{p}{s}{suffix}"
        for s in SERVICES
        for suffix in ("", ".retry.50ms", ".retry.100ms", ".dlq")
    }
    assert all(set(q) == QUEUE_KEYS for q in items.values())
    assert items[f"{p}registration"]["consumers"] == 1
    assert items[f"{p}registration.dlq"]["role"] == "dlq"
    assert [o["service"] for o in report["outbox"]] == list(SERVICES)
    assert report["deliveries"]["failed"] is None and report["deliveries"]["source"] == "n/a"
    assert report["safety_alerts"] == {"unacknowledged": None, "escalated": None, "source": "n/a"}
    health = {h["service"]: h["status"] for h in report["health"]}
    assert health == {
        "registration": "ok",
        "consent": "unreachable",
        "payments": "unreachable",
        "notifications": "unreachable",
        "progress": "unreachable",
    }
    assert {w["where"] for w in report["warnings"] if w["kind"] == "unhealthy"} == {
        "consent",
        "payments",
        "notifications",
        "progress",
    }

    # A dead letter: exit 1, and the report says where.
    letter = await system.dead_letter(consent_signed(ev.new_id()))
    report = await status_when(system, {("dead_letters", f"{p}registration.dlq")})
    assert report["problems"] == [
        {
            "kind": "dead_letters",
            "where": f"{p}registration.dlq",
            "detail": "1 dead letter(s) (max 0)",
        }
    ]
    dlq = next(q for q in report["queues"]["items"] if q["name"] == f"{p}registration.dlq")
    assert dlq["ready"] == 1
    # ... tolerated with --max-dead 1, and failing again on an unhealthy service if asked.
    code, _ = await system.ops_json("status", "--max-dead", "1")
    assert code == 0
    code, loose = await system.ops_json("status", "--max-dead", "1", "--fail-on-unhealthy")
    assert code == 1 and {f["kind"] for f in loose["problems"]} == {"unhealthy"}

    # Without the management API: passive declarations, said so, the same verdict.
    closed = f"http://127.0.0.1:{devinfra.free_port()}"
    code, passive = await system.ops_json("status", RABBITMQ_MANAGEMENT_URL=closed)
    assert code == 1
    assert passive["queues"]["source"] == "amqp-passive"
    assert "ConnectError" in passive["queues"]["note"]
    dlq = next(q for q in passive["queues"]["items"] if q["name"] == f"{p}registration.dlq")
    assert (dlq["ready"], dlq["unacked"], dlq["rate_in"]) == (1, None, None)

    # Human output: a table naming the DLQ and the verdict.
    human = await system.ops("status")
    assert human.exit_code == 1
    assert f"{p}registration.dlq" in human.stdout and "STUCK" in human.stdout
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "ops-status-with-a-dead-letter.txt").write_text(human.stdout)

    # A service queue with messages and no consumer is stuck too.
    await system.purge(f"{p}registration.dlq")
    channel = await system.channel()
    exchange = await channel.get_exchange(f"{p}internal")
    await exchange.publish(
        build_message(
            ev.make_envelope(
                ev.RegistrationWithdrawn(
                    registration_id=letter.id, cohort_id="c1", previous_status="approved"
                ),
                source="urn:holdspace:test",
                correlation_id=letter.id,
            )
        ),
        routing_key="registration.withdrawn",
    )
    await channel.close()
    report = await status_when(system, {("no_consumer", q) for q in others(system)})
    assert all("waiting, no consumer" in f["detail"] for f in report["problems"])
    await system.purge(*others(system))
    await status_when(system, set())


async def test_the_installed_script_exits_non_zero_with_a_dead_letter(system: OpsSystem) -> None:
    await system.dead_letter(consent_signed(ev.new_id()), service="payments")
    ops = Path(sys.executable).with_name("ops")
    done = await asyncio.to_thread(
        subprocess.run,
        [str(ops), "status", "--json", "--max-outbox-age", "600"],
        env={**os.environ, **system.env, "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 1
    assert report["problems"][0]["where"] == f"{system.prefix}payments.dlq"
    await system.purge(f"{system.prefix}payments.dlq")


# --- ops dlq ---------------------------------------------------------------------------------


async def test_dlq_list_and_show_leave_the_letters_and_never_print_personal_data(
    system: OpsSystem,
) -> None:
    p = system.prefix
    rid = ev.new_id()
    submitted = ev.RegistrationSubmitted(
        registration_id=rid,
        cohort_id="c1",
        program_id="p1",
        contact=ev.Contact(name=CANARY_NAME, email=CANARY_EMAIL, chat_handle="canary_wx"),
        submitted_at=datetime.now(UTC),
    )
    # In clear, as no Holdspace service sends it (they seal it, shared/wire.py): the tool
    # must not print it even then.
    first = await system.dead_letter(submitted, service="notifications", sealed=False)
    second = await system.dead_letter(consent_signed(rid), service="notifications")

    code, listed = await system.ops_json("dlq", "list", "notifications")
    assert code == 0
    assert listed["queue"] == f"{p}notifications.dlq" and listed["count"] == 2
    rows = listed["dead_letters"]
    assert [(r["message_id"], r["type"], r["position"]) for r in rows] == [
        (first.id, "registration.submitted", 1),
        (second.id, "consent.signed", 2),
    ]
    assert rows[0]["attempts"] == 3
    assert rows[0]["first_error"] == "RuntimeError: database timed out"
    assert rows[0]["last_error"] == "RuntimeError: still timing out"
    assert rows[0]["failed_service"] == "notifications"
    assert rows[0]["original_exchange"] == f"{p}internal"
    assert rows[0]["original_routing_key"] == "registration.submitted"
    assert rows[0]["correlation_id"] == rid
    assert CANARY_NAME not in json.dumps(listed)
    # Listing took nothing: both are back in the queue, in order.
    assert await system.ready(f"{p}notifications.dlq") == 2
    human = await system.ops("dlq", "list", f"{p}notifications.dlq")
    assert human.exit_code == 0 and first.id in human.stdout

    code, shown = await system.ops_json("dlq", "show", "notifications.dlq", first.id)
    assert code == 0
    assert shown["body"]["id"] == first.id and shown["body"]["correlationid"] == rid
    assert shown["body"]["data"]["registration_id"] == rid
    contact = shown["body"]["data"]["contact"]
    assert contact["name"] == contact["email"] == contact["chat_handle"] == "[redacted]"
    assert shown["headers"][H_LAST_ERROR] == "RuntimeError: still timing out"
    for result in (
        json.dumps(shown),
        (await system.ops("dlq", "show", "notifications", first.id)).stdout,
    ):
        assert CANARY_NAME not in result and CANARY_EMAIL not in result
        assert "canary_wx" not in result
    missing = await system.ops("dlq", "show", "notifications", ev.new_id())
    assert missing.exit_code == 1
    assert await system.ready(f"{p}notifications.dlq") == 2

    # Purge asks first; "no" keeps everything.
    refused = await system.ops("dlq", "purge", "notifications", input="n\n")
    assert refused.exit_code == 1
    assert await system.ready(f"{p}notifications.dlq") == 2
    code, dropped = await system.ops_json(
        "dlq", "purge", "notifications", "--type", "consent.signed", "--yes"
    )
    assert code == 0 and dropped["done"] == 1
    assert await system.ready(f"{p}notifications.dlq") == 1
    confirmed = await system.ops("dlq", "purge", "notifications", input="y\n")
    assert confirmed.exit_code == 0 and "purged 1 message(s)" in confirmed.stdout
    assert await system.ready(f"{p}notifications.dlq") == 0

    bad = await system.ops("dlq", "list", f"{p}registration")
    assert bad.exit_code == 2 and "not a dead-letter queue" in bad.stderr


async def test_a_replayed_dead_letter_is_applied_exactly_once(
    system: OpsSystem, api: RegistrationApi, mongo_client
) -> None:
    p = system.prefix
    program_id = await api.program(approval_required=False)
    cohort_id = await api.cohort(program_id)
    holder = await api.signed_up(cohort_id, 1, name=CANARY_NAME, email=CANARY_EMAIL)
    rid = holder["registration_id"]
    assert holder["status"] == "awaiting_consent"
    regdb = mongo_client[system.db_name("registration")]

    letter = await system.dead_letter(consent_signed(rid))
    await system.dead_letter(consent_signed(ev.new_id()))  # another one, left alone
    before = await system.consumed("consent.signed")
    in_payments = await system.ready(f"{p}payments")
    code, replayed = await system.ops_json("dlq", "replay", "registration", "--id", letter.id)
    assert code == 0, replayed
    assert replayed["done"] == 1 and replayed["failed"] == 0 and replayed["not_found"] == []
    assert replayed["results"][0]["target"] == f"{p}internal -> consent.signed"

    async def moved() -> dict:
        cohort = await regdb.cohorts.find_one({"_id": cohort_id})
        assert cohort["entries"][rid]["status"] == "awaiting_payment"
        return cohort

    cohort = await eventually(moved, timeout=15, what="consent.signed applied")
    assert cohort["inbox"].count(letter.id) == 1
    version = cohort["version"]
    assert await system.ready(f"{p}registration.dlq") == 1  # the other one stayed
    # The original routing key reaches every subscriber of consent.signed: payments too.
    assert await system.ready(f"{p}payments") == in_payments + 1

    # The same event dead-lettered again and replayed again, this time only to
    # registration's queue: the inbox turns it into a no-op.
    await system.dead_letter(consent_signed(rid), event_id=letter.id)
    code, again = await system.ops_json(
        "dlq", "replay", "registration", "--type", "consent.signed", "--to-queue"
    )
    assert code == 0 and again["done"] == 2  # the duplicate and the unrelated one
    assert again["results"][0]["target"] == f"(default) -> {p}registration"

    async def both_handled() -> bool:
        return await system.consumed("consent.signed") >= before + 3

    await eventually(both_handled, timeout=15, what="the replays consumed")
    cohort = await regdb.cohorts.find_one({"_id": cohort_id})
    assert cohort["entries"][rid]["status"] == "awaiting_payment"
    assert cohort["inbox"].count(letter.id) == 1
    assert cohort["version"] == version
    assert await system.ready(f"{p}payments") == in_payments + 1  # --to-queue: registration only
    assert await system.ready(f"{p}registration.dlq") == 0

    # Replaying what is not there says so.
    code, nothing = await system.ops_json("dlq", "replay", "registration", "--id", letter.id)
    assert code == 1 and nothing["not_found"] == [letter.id]
    usage = await system.ops("dlq", "replay", "registration")
    assert usage.exit_code == 2

    # Follow it across the services: its state and the events it caused, no personal data.
    code, trace = await system.ops_json("registration", "show", rid)
    assert code == 0 and trace["found"] is True
    assert trace["status"] == "awaiting_payment"
    reg = next(s for s in trace["services"] if s["service"] == "registration")
    ledger = next(d for d in reg["documents"] if d["collection"] == "cohorts")
    assert ledger["fields"]["ledger_entry"]["status"] == "awaiting_payment"
    application = next(d for d in reg["documents"] if d["collection"] == "registrations")
    assert application["fields"]["cohort_id"] == cohort_id
    assert trace["dead_letters"] == []
    human = await system.ops("registration", "show", rid)
    for text in (json.dumps(trace), human.stdout):
        assert CANARY_NAME not in text and CANARY_EMAIL not in text
        assert "v1.dev1." not in text  # no sealed value either
    assert "awaiting_payment" in human.stdout
    unknown = await system.ops("registration", "show", ev.new_id(), "--no-dlq")
    assert unknown.exit_code == 1

    await system.purge(*others(system))


# --- ops outbox and failed deliveries ------------------------------------------------------


async def test_outbox_reports_lag_and_a_stuck_claim_and_failed_deliveries(
    system: OpsSystem, mongo_client
) -> None:
    code, clean = await system.ops_json("outbox", "registration")
    assert code == 0
    assert [o["service"] for o in clean["outbox"]] == ["registration"]
    assert clean["outbox"][0]["exists"] is True and clean["outbox"][0]["pending"] == 0

    # A payments aggregate whose events wait since 10 minutes, claimed by a relay that died.
    payments = mongo_client[system.db_name("payments")]
    old = datetime.now(UTC) - timedelta(minutes=10)
    rid = ev.new_id()
    outbox = [
        {
            "id": ev.new_id(),
            "type": t,
            "time": (old + timedelta(seconds=i)).isoformat(),
            "correlationid": rid,
            "data": {},
            "sealed_data": "v1.dev1.abc.def",
        }
        for i, t in enumerate(("payment.requested", "payment.confirmed"))
    ]
    await payments.cases.insert_one(
        {
            "_id": rid,
            "status": "confirmed",
            "version": 3,
            "has_outbox": True,
            "outbox": outbox,
            "inbox": [],
            "relay_claim": {"by": "dead-relay", "until": datetime.now(UTC) - timedelta(seconds=30)},
        }
    )
    # A claim that ran out on an aggregate with nothing left to publish: not stuck.
    await payments.cases.insert_one(
        {
            "_id": "published",
            "version": 2,
            "has_outbox": False,
            "outbox": [],
            "inbox": [],
            "relay_claim": {"by": "dead-relay", "until": datetime.now(UTC) - timedelta(seconds=30)},
        }
    )
    # A failed delivery in notifications.
    notifications = mongo_client[system.db_name("notifications")]
    await notifications.deliveries.insert_one(
        {
            "_id": "d1",
            "status": "failed",
            "template": "payment_requested",
            "channel": "email",
            "attempts": 5,
            "registration_id": rid,
            "sealed": {"to": "v1.dev1.abc.def"},
            "error_code": "smtp_5xx",
        }
    )
    try:
        code, report = await system.ops_json("outbox", "payments")
        assert code == 1
        (payments_report,) = report["outbox"]
        assert payments_report["pending"] == 2
        assert 590 < payments_report["oldest_age_s"] < 700
        assert payments_report["oldest"]["type"] == "payment.requested"
        assert payments_report["collections"] == ["cases"]
        stuck = payments_report["claims"]["stuck"]
        assert [c["key"] for c in stuck] == [f"cases:{rid}"]  # not the empty one
        assert payments_report["claims"]["expired"] == 2
        assert "v1.dev1" not in json.dumps(report)
        code, _ = await system.ops_json("outbox", "payments", "--max-age", "3600")
        assert code == 1  # the stuck claim alone is enough
        human = await system.ops("outbox")
        assert human.exit_code == 1 and "payment.requested" in human.stdout

        code, status = await system.ops_json(
            "status", "--max-outbox-age", "60", RABBITMQ_MANAGEMENT_URL="http://127.0.0.1:1"
        )
        assert code == 1
        kinds = {(f["kind"], f["where"]) for f in status["problems"]}
        assert kinds == {("outbox_lag", "payments"), ("stuck_claim", "payments")}
        failed = status["deliveries"]
        assert failed["failed"] == 1 and failed["source"].endswith("notifications.deliveries")
        assert failed["recent"] == [
            {
                "_id": "d1",
                "status": "failed",
                "template": "payment_requested",
                "channel": "email",
                "attempts": 5,
                "registration_id": rid,
                "error_code": "smtp_5xx",
            }
        ]

        code, trace = await system.ops_json("registration", "show", rid, "--no-dlq")
        assert code == 0
        by_service = {s["service"]: s for s in trace["services"]}
        assert [e["type"] for e in by_service["payments"]["pending_events"]] == [
            "payment.requested",
            "payment.confirmed",
        ]
        assert by_service["payments"]["documents"][0]["fields"]["status"] == "confirmed"
        deliveries = by_service["notifications"]["documents"]
        assert deliveries[0]["collection"] == "deliveries"
        assert "sealed" not in deliveries[0]["fields"]
        assert "v1.dev1" not in json.dumps(trace)
    finally:
        await mongo_client.drop_database(system.db_name("payments"))
        await mongo_client.drop_database(system.db_name("notifications"))

    unknown = await system.ops("outbox", "billing")
    assert unknown.exit_code == 2
