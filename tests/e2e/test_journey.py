"""The whole journey, all four services as real processes, and the same journey under faults.

50 applicants race for the 8 seats of the recovery group: sign-up, coordinator approval,
consent signed over HTTP, payment confirmed by a signed WeChat Pay notification,
enrollment.confirmed seen by an outside subscriber, confirmation emails with calendars,
a withdrawal whose seat is offered to the head of the waitlist (see journey.py).

Then the same journey, each in its own test: with poison messages in every service's
queue, with registration killed (SIGKILL) while payments arrive, with the broker
restarted while payments arrive, with two replicas of every service. Each must end with
exactly 8 enrolled, no seat given twice, no message sent twice, nothing pending in any
outbox, and dead letters only where poison was put, visible and replayable with ``ops``.
Timings are written to var/reports/e2e-*.json.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from shared import events as ev
from shared.topology import SERVICES
from tests.e2e.harness import REPORTS, System, write_report
from tests.e2e.journey import SEATS, WAIT_S, Journey
from tests.integration.helpers_messaging import eventually


async def test_journey_50_applicants_race_for_8_seats(system: System, program_id: str) -> None:
    journey = Journey(system, program_id, "plain")
    await journey.run()
    await journey.verify()
    # No fault: the subscriber got each enrollment exactly once, not merely once per id.
    assert journey.counts["enrollment_confirmed_deliveries_for_8"] == SEATS
    assert journey.counts["enrollment_confirmed_deliveries"] == SEATS + 1
    write_report("plain", journey.report())


@pytest.mark.faults
async def test_journey_with_poison_messages_in_every_queue(system: System, program_id: str) -> None:
    journey = Journey(system, program_id, "poison")
    malformed: dict[str, str] = {}
    unknown: dict[str, ev.Envelope] = {}

    async def inject() -> None:
        """In the middle of the journey: a body that is not an envelope, and an event
        about a registration no service knows, into each service's own queue."""
        stranger = str(uuid.uuid4())
        for service in SERVICES:
            malformed[service] = f"poison-{journey.tag}-{service}"
            await system.inject_raw(service, b'{"specversion": "1.0", "id": ', malformed[service])
        unknown["registration"] = await system.inject_event(
            "registration",
            ev.PaymentConfirmed(
                registration_id=stranger,
                payment_id=str(uuid.uuid4()),
                amount=ev.Money(amount_minor=90000, currency="CNY"),
                reference="HS-UNKNOWN",
                method="wechatpay",
                confirmed_at=datetime.now(UTC),
            ),
        )
        for service in ("consent", "payments", "notifications"):
            unknown[service] = await system.inject_event(
                service,
                ev.RegistrationWithdrawn(
                    registration_id=stranger,
                    cohort_id=journey.cohort_id,
                    previous_status="awaiting_consent",
                ),
            )

    # The malformed body is dead-lettered by every service at once. An unknown
    # registration is acknowledged by registration, consent and payments (nothing to
    # do); notifications waits for the registration.submitted it needs, retries, and
    # dead-letters it after MAX_ATTEMPTS.
    expected = {s: 1 for s in SERVICES} | {"notifications": 2}
    journey.expected_dead_now = expected
    await journey.run({"approved": inject})
    await journey.verify(dead_letters=expected, ops=False)  # ops status follows

    async def listed(service: str) -> dict[str, dict]:
        code, out = await system.ops_json("dlq", "list", service)
        assert code == 0 and out["queue"] == system.dlq(service)
        assert out["count"] == journey.dead_expected(expected)[service], out
        return {d["message_id"]: d for d in out["dead_letters"]}

    letters_of = dict(zip(SERVICES, await asyncio.gather(*map(listed, SERVICES)), strict=True))
    for service in SERVICES:
        poison = letters_of[service][malformed[service]]
        assert poison["first_error"].startswith("PoisonMessage"), poison
        assert poison["failed_service"] == service and poison["original_exchange"] == ""
        assert poison["original_routing_key"] == system.queue(service)
    stuck = letters_of["notifications"][unknown["notifications"].id]
    attempts = int(system.env["MAX_ATTEMPTS"])
    assert stuck["type"] == "registration.withdrawn" and stuck["attempts"] == attempts, stuck
    assert "RecipientUnknown" in stuck["last_error"]

    # What an operator sees: `ops status` names the dead letters and exits 1.
    code, text, _ = await system.ops("status")
    assert code == 1 and "dead_letters" in text and system.dlq("notifications") in text
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "e2e-ops-status-with-dead-letters.txt").write_text(text)

    # Replayed: each goes back to its original routing key; the malformed bodies and the
    # unknown registration fail again and are dead letters again; nothing else moves.
    replayed_at = time.monotonic()
    replays = await asyncio.gather(
        *(system.ops_json("dlq", "replay", service, "--all") for service in SERVICES)
    )
    for service, (code, out) in zip(SERVICES, replays, strict=True):
        assert code == 0 and out["done"] == expected[service] and out["failed"] == 0, out
    await journey.check_drained(dead_letters=expected)
    letters_of = dict(zip(SERVICES, await asyncio.gather(*map(listed, SERVICES)), strict=True))
    for service in SERVICES:
        assert malformed[service] in letters_of[service]
    assert unknown["notifications"].id in letters_of["notifications"]
    replay_s = round(time.monotonic() - replayed_at, 2)

    # The journey's outcome is untouched by the replay: still 8, nothing sent twice.
    await journey.check_seats()
    await journey.check_mail(expected)

    purged = await asyncio.gather(  # leave the system clean for the next journeys
        *(system.ops("dlq", "purge", service, "--yes") for service in SERVICES)
    )
    assert [code for code, _, _ in purged] == [0] * len(SERVICES), purged
    journey.dead_before = {}
    await journey.check_drained(ops=False)
    write_report("poison", journey.report(dead_letters=expected, replay_and_recheck_s=replay_s))


@pytest.mark.faults
async def test_journey_with_registration_killed_while_payments_arrive(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "sigkill")
    killed = system.processes["registration"][0]
    notes: dict[str, float | int] = {}

    async def kill() -> None:
        # Registration is taking payment.confirmed events and publishing enrollments.
        notes["pid_before"] = killed.process.pid if killed.process else 0
        await system.kill("registration")
        notes["killed_at"] = time.monotonic()

        async def consumer_gone() -> bool:
            _, consumers = (await system.queue_figures())[system.queue("registration")]
            assert consumers == 0
            return True

        await eventually(consumer_gone, timeout=30, what="registration's consumer gone")

    async def restart() -> None:
        # The payments made meanwhile wait in registration's queue.
        async def waiting() -> int:
            ready, _ = (await system.queue_figures())[system.queue("registration")]
            return ready

        notes["waiting_while_down"] = await eventually(
            waiting, timeout=WAIT_S, what="payment.confirmed waiting for registration"
        )
        began = time.monotonic()
        await system.restart("registration")
        notes["restart_s"] = round(time.monotonic() - began, 2)
        notes["down_s"] = round(time.monotonic() - notes["killed_at"], 2)

    await journey.run({"paid_half": kill, "paid": restart})
    assert killed.process is not None and killed.process.pid != notes["pid_before"]
    await journey.verify()
    notes.pop("killed_at")
    write_report("sigkill", journey.report(fault=notes))


@pytest.mark.faults
async def test_journey_with_broker_restart_while_payments_arrive(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "broker-restart")
    notes: dict[str, float] = {}

    async def stop() -> None:
        began = time.monotonic()
        await system.stop_broker()
        notes["stop_app_s"] = round(time.monotonic() - began, 2)
        notes["stopped_at"] = time.monotonic()
        assert await system.broker_refuses_connections()

    async def start() -> None:
        # The second half was paid while the broker was down: the webhooks answered
        # and the confirmations wait in payments' outbox.
        assert await system.broker_refuses_connections()
        assert (await system.pending_outbox())["payments"] >= 1
        began = time.monotonic()
        await system.start_broker()
        notes["start_app_s"] = round(time.monotonic() - began, 2)
        notes["down_s"] = round(time.monotonic() - notes.pop("stopped_at"), 2)
        await system.wait_ready()
        notes["ready_after_start_s"] = round(time.monotonic() - began, 2)

    try:
        await journey.run({"paid_half": stop, "paid": start})
    finally:
        await system.start_broker()  # always: the broker is shared with every other vhost
    await journey.verify()
    write_report("broker-restart", journey.report(fault=notes))


async def test_journey_with_two_replicas_of_every_service(system: System, program_id: str) -> None:
    began = time.monotonic()
    await system.scale(2)
    scale_s = round(time.monotonic() - began, 2)
    journey = Journey(system, program_id, "two-replicas")

    async def both_consume() -> None:
        figures = await system.queue_figures()
        for service in SERVICES:
            assert figures[system.queue(service)][1] == 2, (service, figures)

    await journey.run({"signed_up": both_consume})
    await journey.verify()
    await both_consume()
    for service in ("registration", "consent", "payments"):  # calls went to both replicas
        for process in system.processes[service]:
            assert '"http request"' in process.log_text(), (service, process.port)
    write_report("two-replicas", journey.report(start_second_replicas_s=scale_s))
