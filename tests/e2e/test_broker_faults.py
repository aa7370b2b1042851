"""Matrix rows 2 and 15: the broker killed outright under load, and the broker refusing
publishers (a memory alarm), with the whole system running (docs/reliability.md).

Row 2 is the journey of test_journey.py with the broker's Erlang VM SIGKILLed while
payments arrive (no goodbye to any client, unconfirmed publishes lost in flight), then
started again: the outboxes resend, consumers' inboxes absorb the duplicates.

Row 15 raises RabbitMQ's memory alarm (``set_vm_memory_high_watermark``) during a burst
of sign-ups: every publishing connection is blocked, so the API must still answer at
once (the events wait in the outbox), and the backlog must go out within a minute of the
alarm clearing. Scored with the Jepsen tally: each sign-up attempted by its key, each
acknowledged (202), its effect the verification event for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from shared import devinfra
from tests.canary import CANARY
from tests.e2e.harness import System, write_report
from tests.e2e.journey import WAIT_S, Journey
from tests.faults.harness import Tally
from tests.integration.helpers_messaging import eventually

ROOT = Path(__file__).resolve().parents[2]
SIGN_UPS = 50
HIGH_WATERMARK_DEFAULT = "0.4"  # RabbitMQ's default fraction of the machine's memory


def _broker_pid() -> int:
    found = subprocess.run(
        ["pgrep", "-o", "-f", "beam.*rabbit"], capture_output=True, text=True, check=False
    )
    assert found.stdout.strip(), "no local broker process (RABBITMQ_URL points elsewhere?)"
    return int(found.stdout.split()[0])


def _start_local_broker() -> None:
    subprocess.run([str(ROOT / "scripts" / "ensure-rabbitmq")], check=True, timeout=300)


@pytest.mark.faults
async def test_journey_with_the_broker_killed_while_payments_arrive(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "broker-sigkill")
    notes: dict[str, float | int] = {}

    async def kill() -> None:
        os.kill(_broker_pid(), signal.SIGKILL)  # the broker this session started
        notes["killed_at"] = time.monotonic()
        await eventually(system.broker_refuses_connections, timeout=30, what="broker gone")

    async def start() -> None:
        began = time.monotonic()
        await asyncio.to_thread(_start_local_broker)
        notes["start_s"] = round(time.monotonic() - began, 2)
        notes["down_s"] = round(time.monotonic() - notes.pop("killed_at"), 2)
        await system.wait_ready()
        notes["ready_after_start_s"] = round(time.monotonic() - began, 2)

    try:
        await journey.run({"paid_half": kill, "paid": start})
    finally:
        await asyncio.to_thread(_start_local_broker)  # the broker is every other test's too
    await journey.verify()
    write_report("broker-sigkill", journey.report(fault=notes))


async def _watermark(value: str) -> None:
    await asyncio.to_thread(devinfra.rabbitmqctl, "set_vm_memory_high_watermark", value)


@pytest.mark.faults
@pytest.mark.timeout(600)
async def test_sign_ups_during_a_broker_memory_alarm_answer_at_once_and_go_out_after(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "memory-alarm")
    await journey.open_cohort()
    tally = Tally()
    took: list[float] = []
    url = f"{system.url('registration')}/cohorts/{journey.cohort_id}/registrations"

    async def sign_up(n: int) -> None:
        key = f"alarm-{journey.tag}-{n}"
        body = {
            "name": f"Alarm {n} {CANARY}",
            "email": f"alarm-{journey.tag}-{n}@example.org",
            "age_attested": True,
            "safety_answers": {"self_harm": False, "unsafe_now": False},
            "privacy_notice_accepted": True,
            "language": "en",
            "timezone": "Asia/Shanghai",
        }
        began = time.monotonic()
        answer = await system.http.post(url, json=body, headers={"Idempotency-Key": key})
        took.append(time.monotonic() - began)
        tally.attempt(key, acknowledged=answer.status_code == 202)

    def verification_keys() -> Counter[str]:
        seen = system.spy.of("registration.email_verification_requested")
        return Counter(
            s.data["contact"]["email"].split("@")[0]
            for s in {s.id: s for s in seen}.values()  # each event once (redeliveries)
            if s.data["cohort_id"] == journey.cohort_id
        )

    notes: dict[str, float | int] = {}
    try:
        await _watermark("0.000001")  # every publisher is blocked from here on
        await asyncio.gather(*(sign_up(n) for n in range(SIGN_UPS)))
        await asyncio.sleep(5)  # the relay tries, and cannot
        notes["pending_during_alarm"] = (await system.pending_outbox())["registration"]
        notes["published_during_alarm"] = sum(verification_keys().values())
    finally:
        await _watermark(HIGH_WATERMARK_DEFAULT)
    cleared = time.monotonic()
    assert len(tally.acknowledged) == SIGN_UPS, tally.score()
    assert max(took) < 5, f"a sign-up took {max(took):.1f}s during the alarm"
    assert notes["pending_during_alarm"] >= 1, "nothing waited: was the alarm raised?"

    async def all_out() -> bool:
        keys = verification_keys()
        assert len(keys) == SIGN_UPS, len(keys)
        return True

    await eventually(all_out, timeout=WAIT_S, interval=0.5, what="every verification event")
    notes["backlog_out_s"] = round(time.monotonic() - cleared, 2)
    assert notes["backlog_out_s"] <= 60
    # The verification address's local part is the sign-up's key.
    tally.found(key for key, n in verification_keys().items() for _ in range(n))
    tally.assert_valid()
    notes["slowest_sign_up_s"] = round(max(took), 3)
    write_report("memory-alarm", {"fault": notes, "tally": tally.score()})
