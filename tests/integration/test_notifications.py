"""The notifications service as real processes (two replicas), with a real SMTP sink and a
real chat robot webhook, the real broker and database.

The tests publish the events the other services would (to ``<prefix>internal``, and
enrollment.confirmed to ``<prefix>public``), read what the SMTP sink received, read
the service's database, and listen for notification.* events as an outside consumer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from bson import json_util
from icalendar import Calendar
from notifications.domain.delivery import delivery_id
from notifications.rendering import when

from shared import events as ev
from shared.security import Role
from tests.bus import TestBus
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.helpers_notifications import ChatRobot, Received, SmtpSink
from tests.services import ServiceProcess, coordinator_headers, service_env

COORDINATOR = "coord-desk@example.org"
SHANGHAI = "Asia/Shanghai"


def tz_with_local_hour(hours: range) -> str:
    """A fixed-offset zone whose local time now is within ``hours`` (Etc/GMT signs are inverted)."""
    now = datetime.now(UTC)
    for offset in range(-12, 15):
        if (now.hour + offset) % 24 in hours:
            return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"
    raise AssertionError("no zone found")


AWAKE = range(11, 17)  # far from the 22:00-08:00 quiet hours
ASLEEP = range(1, 5)


class System(TestBus):
    def __init__(self, env: dict[str, str], sink: SmtpSink, robot: ChatRobot) -> None:
        super().__init__(env)
        self.sink = sink
        self.robot = robot
        self.processes: list[ServiceProcess] = []
        self.notification_events: list[dict[str, Any]] = []
        self.secrets: set[str] = set()  # personal values that must never show in clear

    @property
    def url(self) -> str:
        return self.processes[0].url

    async def listen_notifications(self) -> None:
        self.notification_events = await self.listen("internal", "notification.#")

    def events_for(self, did: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.notification_events
            if e["type"] == event_type and e["data"]["delivery_id"] == did
        ]

    def logs(self) -> str:
        return "".join(p.log_text() for p in self.processes)


@pytest.fixture(scope="module")
async def system(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[System]:
    sink = SmtpSink().start()
    robot = await ChatRobot().start()
    run_id = short_id()
    env = service_env(
        mongodb_url,
        rabbitmq_url,
        run_id,
        SMTP_PORT=str(sink.port),
        SMTP_TIMEOUT_S="3",
        COORDINATOR_EMAILS=COORDINATOR,
        CHAT_WEBHOOK_URL=robot.url,
        DELIVERY_RETRY_BASE_S="0.3",
        DELIVERY_RETRY_MAX_S="1",
        DELIVERY_MAX_ATTEMPTS="30",
        REMINDER_WINDOW_S="20",
        JOBS_POLL_S="0.3",
    )
    s = System(env, sink, robot)
    log_dir: Path = tmp_path_factory.mktemp("notifications")
    replicas = [ServiceProcess("notifications", env, log_dir) for _ in range(2)]
    s.processes = await asyncio.gather(*(asyncio.to_thread(p.start) for p in replicas))
    await s.listen_notifications()
    yield s
    await s.close_bus()
    for p in s.processes:
        p.stop()
    await robot.stop()
    sink.stop()


@pytest.fixture
def ndb(system: System, mongo_client):
    return mongo_client[f"{system.env['HOLDSPACE_DB_PREFIX']}notifications"]


# --- building events ---------------------------------------------------------------


def sessions_from(first: datetime, count: int, every: timedelta) -> list[ev.Session]:
    return [
        ev.Session(
            starts_at=first + i * every,
            ends_at=first + i * every + timedelta(minutes=90),
            timezone=SHANGHAI,
        )
        for i in range(count)
    ]


def weekly_sessions() -> list[ev.Session]:
    first = (datetime.now(UTC) + timedelta(days=7)).astimezone(ZoneInfo(SHANGHAI))
    first = first.replace(hour=19, minute=30, second=0, microsecond=0)
    return sessions_from(first, 3, timedelta(days=7))


class Applicant:
    def __init__(
        self,
        system: System,
        *,
        prefix: str = "ann",
        name: str | None = None,
        lang: str = "en",
        tz: str | None = None,
        cohort: ev.CohortRef,
    ) -> None:
        self.system = system
        self.rid = f"reg-{short_id()}"
        self.email = f"{prefix}-{short_id()}@example.org"
        self.name = name or f"Applicant {short_id()}"
        self.lang = lang
        self.tz = tz or tz_with_local_hour(AWAKE)
        self.cohort = cohort
        system.secrets |= {self.email, self.name}

    @property
    def common(self) -> dict[str, str]:
        return {"registration_id": self.rid, "cohort_id": self.cohort.cohort_id}

    def submitted(self) -> ev.RegistrationSubmitted:
        return ev.RegistrationSubmitted(
            **self.common,
            program_id=self.cohort.program_id,
            contact=ev.Contact(
                name=self.name, email=self.email, language=self.lang, timezone=self.tz
            ),
            cohort=self.cohort,
            price=ev.Money(amount_minor=90000, currency="CNY"),
            submitted_at=datetime.now(UTC),
        )

    def confirmed(self) -> ev.EnrollmentConfirmed:
        return ev.EnrollmentConfirmed(
            **self.common, program_id=self.cohort.program_id, occurred_at=datetime.now(UTC)
        )

    def withdrawn(self) -> ev.RegistrationWithdrawn:
        return ev.RegistrationWithdrawn(**self.common, previous_status="confirmed")

    def mail(self) -> list[Received]:
        return self.system.sink.to(self.email)

    async def wait_mail(self, count: int, timeout: float = 10.0) -> list[Received]:
        def enough() -> list[Received]:
            got = self.mail()
            assert len(got) >= count, [r.template for r in got]
            return got

        return await eventually(enough, timeout=timeout, interval=0.05, what=f"{count} emails")


def cohort_ref(display_name: str = "Thursday evening circle", sessions=None) -> ev.CohortRef:
    return ev.CohortRef(
        cohort_id=f"cohort-{short_id()}",
        program_id=f"program-{short_id()}",
        display_name=display_name,
        sessions=sessions if sessions is not None else weekly_sessions(),
    )


def coordinator_mail(system: System, template: str, needle: str) -> list[Received]:
    return [r for r in system.sink.to(COORDINATOR) if r.template == template and needle in r.text]


# --- the applicant's journey ---------------------------------------------------------


async def test_the_applicant_journey_arrives_in_order_with_a_calendar(system: System) -> None:
    cohort = cohort_ref("周四晚间小组")
    ann = Applicant(system, name="李 <b>薇</b>", lang="zh", cohort=cohort)
    signing_url = f"https://sign.holdspace.test/s/{short_id()}{short_id()}"
    system.secrets.add(signing_url)

    await system.publish(ann.submitted())
    await ann.wait_mail(1)
    await system.publish(ev.RegistrationPendingReview(**ann.common))
    await eventually(lambda: coordinator_mail(system, "coordinator_review", ann.rid), timeout=10)
    await eventually(lambda: any(ann.rid in t for t in system.robot.texts()), timeout=10)
    await system.publish(ev.RegistrationApproved(**ann.common, program_id=cohort.program_id))
    await ann.wait_mail(2)
    expires = datetime.now(UTC) + timedelta(days=3)
    await system.publish(
        ev.ConsentRequested(registration_id=ann.rid, signing_url=signing_url, expires_at=expires)
    )
    await ann.wait_mail(3)
    await system.publish(
        ev.PaymentRequested(
            registration_id=ann.rid,
            payment_id="pay-1",
            amount=ev.Money(amount_minor=90000, currency="CNY"),
            reference="HS-7Q2K",
            expires_at=expires,
            instructions="请通过微信转账，并在备注中填写付款备注。",
        )
    )
    await ann.wait_mail(4)
    await system.publish(ann.confirmed())
    mail = await ann.wait_mail(5)

    assert [m.template for m in mail] == [
        "signup_received",
        "approved",
        "consent_requested",
        "payment_requested",
        "confirmed",
    ]
    assert [m.subject for m in mail] == [
        "我们已收到你的报名",
        "你的报名已通过审核",
        "请阅读并签署知情同意书",
        "你的名额的付款信息",
        "你的名额已确认",
    ]
    assert signing_url in mail[2].text and f'href="{signing_url}"' in mail[2].html
    assert "900.00 CNY" in mail[3].text and "HS-7Q2K" in mail[3].text
    # The name is the applicant's own text: escaped in HTML, as typed in plain text.
    assert "李 &lt;b&gt;薇&lt;/b&gt;" in mail[0].html and "<b>薇</b>" not in mail[0].html
    assert "李 <b>薇</b>，你好" in mail[0].text
    for m in mail:
        # Discretion: the group is named in the body, never in what a lock screen shows.
        assert cohort.display_name in m.text
        assert cohort.display_name not in m.subject and cohort.display_name not in m.preview
        assert m.message["Message-ID"].startswith("<") and ann.rid not in m.message["Message-ID"]

    calendar = Calendar.from_ical(mail[4].part("text/calendar"))
    events = calendar.walk("VEVENT")
    assert len(events) == len(cohort.sessions) == 3
    for event, session in zip(events, cohort.sessions, strict=True):
        assert event.decoded("dtstart") == session.starts_at
        assert event.decoded("dtend") == session.ends_at
        assert event["dtstart"].params["TZID"] == SHANGHAI
        assert event.decoded("dtstart").strftime("%H:%M") == "19:30"
        assert str(event["summary"]) == cohort.display_name
    assert [str(tz["tzid"]) for tz in calendar.walk("VTIMEZONE")] == [SHANGHAI]
    listed = [line for line in mail[4].text.splitlines() if line.startswith("- ")]
    # in the applicant's own time zone
    assert listed == [f"- {when(x.starts_at, ann.tz, 'zh')}" for x in cohort.sessions]

    review = coordinator_mail(system, "coordinator_review", ann.rid)
    assert len(review) == 1 and cohort.display_name in review[0].text
    assert ann.email not in review[0].message.as_string()
    assert all(ann.email not in t and ann.name not in t for t in system.robot.texts())

    def sent_events() -> list[dict[str, Any]]:
        mine = [
            e
            for e in system.notification_events
            if e["type"] == "notification.sent" and e["data"]["recipient_ref"] == ann.rid
        ]
        assert len(mine) == 5, len(mine)
        return mine

    mine = await eventually(sent_events, timeout=10, what="notification.sent for each message")
    assert sorted(e["data"]["template"] for e in mine) == sorted(m.template for m in mail)
    assert all("@" not in json.dumps(e["data"]) and e["subject"] == ann.rid for e in mine)


async def test_an_event_that_overtakes_its_sign_up_is_retried(system: System) -> None:
    bob = Applicant(system, prefix="bob", cohort=cohort_ref())
    await system.publish(ev.RegistrationApproved(**bob.common, program_id=bob.cohort.program_id))
    await system.publish(bob.submitted())
    mail = await bob.wait_mail(2)
    assert sorted(m.template for m in mail) == ["approved", "signup_received"]
    assert [m.subject for m in mail if m.template == "approved"] == ["Your sign-up is approved"]


async def test_the_same_event_delivered_three_times_sends_one_message(system: System, ndb) -> None:
    cat = Applicant(system, prefix="cat", cohort=cohort_ref())
    await system.publish(cat.submitted())
    await cat.wait_mail(1)
    waitlisted = ev.make_envelope(
        ev.RegistrationWaitlisted(**cat.common, position=3),
        source="urn:holdspace:test",
        correlation_id=cat.rid,
    )
    await asyncio.gather(*(system.publish(None, envelope=waitlisted) for _ in range(2)))
    await cat.wait_mail(2)
    await system.publish(None, envelope=waitlisted)
    await asyncio.sleep(1.5)
    mail = cat.mail()
    assert [m.template for m in mail] == ["signup_received", "waitlisted"]
    assert "number 3 on the waiting list" in mail[1].text
    did = delivery_id(waitlisted.id, "waitlisted", cat.rid)
    doc = await ndb.deliveries.find_one({"_id": did})
    assert (doc["status"], doc["attempts"]) == ("sent", 1)
    assert await ndb.deliveries.count_documents({"event_id": waitlisted.id}) == 1
    await eventually(lambda: system.events_for(did, "notification.sent"), timeout=5)
    await asyncio.sleep(0.3)
    assert len(system.events_for(did, "notification.sent")) == 1


# --- failures ------------------------------------------------------------------------


async def test_smtp_down_for_a_while_then_back_delivers_once(system: System, ndb) -> None:
    dee = Applicant(system, prefix="greylist-dee", cohort=cohort_ref())
    system.sink.stop()
    try:
        envelope = await system.publish(dee.submitted())
        did = delivery_id(envelope.id, "signup_received", dee.rid)

        async def retried_while_down() -> dict:
            doc = await ndb.deliveries.find_one({"_id": did})
            assert doc and doc["attempts"] >= 2 and doc["error_code"] == "smtp_unreachable", doc
            assert doc["status"] == "pending"
            return doc

        await eventually(retried_while_down, timeout=10, interval=0.1)
    finally:
        system.sink.start()
    mail = await dee.wait_mail(1, timeout=15)
    await asyncio.sleep(1.0)
    assert [m.template for m in dee.mail()] == ["signup_received"] == [m.template for m in mail]
    doc = await ndb.deliveries.find_one({"_id": did})
    # down (refused) at least twice, then greylisted (451) twice, then accepted
    assert doc["status"] == "sent" and doc["attempts"] >= 5
    assert system.sink.rcpt_attempts[dee.email] == 3


async def test_a_permanent_rejection_fails_alerts_and_can_be_resent(system: System, ndb) -> None:
    eve = Applicant(system, prefix="bounce-eve", cohort=cohort_ref())
    envelope = await system.publish(eve.submitted())
    did = delivery_id(envelope.id, "signup_received", eve.rid)

    failed = await eventually(
        lambda: system.events_for(did, "notification.failed"), timeout=10, what="failed event"
    )
    assert failed[0]["data"]["error_code"] == "smtp_550"
    assert failed[0]["data"]["recipient_ref"] == eve.rid
    alert = await eventually(
        lambda: coordinator_mail(system, "coordinator_undeliverable", did), timeout=10
    )
    assert "smtp_550" in alert[0].text and eve.email not in alert[0].message.as_string()
    await eventually(lambda: any(did in t for t in system.robot.texts()), timeout=10)
    await asyncio.sleep(1.5)
    assert system.sink.rcpt_attempts[eve.email] == 1  # no retry after a 5xx
    doc = await ndb.deliveries.find_one({"_id": did})
    assert (doc["status"], doc["attempts"], doc["error_code"]) == ("failed", 1, "smtp_550")

    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        assert (await client.get("/deliveries/failed")).status_code == 401
        coordinator = coordinator_headers(Role.coordinator)
        assert (await client.get("/deliveries/failed", headers=coordinator)).status_code == 403
        assert (
            await client.post(f"/deliveries/{did}/resend", headers=coordinator)
        ).status_code == 403
        operator = coordinator_headers(Role.operator)
        listing = await client.get("/deliveries/failed", headers=operator)
        assert listing.status_code == 200
        row = next(r for r in listing.json() if r["delivery_id"] == did)
        assert row["template"] == "signup_received" and row["error_code"] == "smtp_550"
        assert eve.email not in listing.text and "sealed" not in listing.text

        system.sink.allowed.add(eve.email)  # the address was fixed
        resent = await client.post(f"/deliveries/{did}/resend", headers=operator)
        assert resent.status_code == 202, resent.text
        await eve.wait_mail(1)
        again = await client.post(f"/deliveries/{did}/resend", headers=operator)
        assert again.status_code == 409 and again.json()["field"] == "delivery_id"
        missing = await client.post("/deliveries/nope/resend", headers=operator)
        assert missing.status_code == 404
    doc = await ndb.deliveries.find_one({"_id": did})
    assert (doc["status"], doc["resends"]) == ("sent", 1)
    assert len(eve.mail()) == 1


# --- timing: quiet hours and reminders ---------------------------------------------------


async def test_at_night_the_reply_to_a_sign_up_and_the_crisis_resources_go_at_once(
    system: System, ndb
) -> None:
    # Quiet hours hold news nobody just asked for (reminders, an offer, an expiry);
    # the answer to what the applicant just did goes now, whatever the hour.
    fay = Applicant(system, prefix="fay", tz=tz_with_local_hour(ASLEEP), cohort=cohort_ref())
    envelope = await system.publish(fay.submitted())
    await system.publish(
        ev.RegistrationFlaggedForSafety(
            **fay.common,
            program_id=fay.cohort.program_id,
            crisis_resources=[
                ev.CrisisResource(name="Hope line", contact="12356", url="https://help.test/")
            ],
        )
    )
    mail = await fay.wait_mail(2)
    assert sorted(m.template for m in mail) == ["crisis_resources", "signup_received"]
    crisis = next(m for m in mail if m.template == "crisis_resources")
    assert "12356" in crisis.text and crisis.subject == "Support is available right now"
    safety = await eventually(
        lambda: coordinator_mail(system, "coordinator_safety", fay.rid), timeout=10
    )
    assert safety[0].subject.startswith("URGENT")
    await eventually(lambda: any(fay.rid in t for t in system.robot.texts()), timeout=10)
    receipt = await ndb.deliveries.find_one(
        {"_id": delivery_id(envelope.id, "signup_received", fay.rid)}
    ) or await ndb.delivery_log.find_one(
        {"_id": delivery_id(envelope.id, "signup_received", fay.rid)}
    )
    assert receipt["status"] == "sent"


async def test_reminders_once_over_two_replicas_cancelled_by_withdrawal_dropped_when_late(
    system: System, ndb
) -> None:
    assert len(system.processes) == 2
    first = datetime.now(UTC) + timedelta(seconds=16)
    cohort = cohort_ref(sessions=sessions_from(first, 2, timedelta(seconds=3)))
    async with httpx.AsyncClient(base_url=system.processes[1].url, timeout=10) as client:
        put = await client.put(
            f"/programs/{cohort.program_id}/reminders",
            json={"offsets_s": [7, 120]},
            headers=coordinator_headers(),
        )
        assert put.status_code == 200, put.text
        assert put.json()["offsets_s"] == [120, 7]
        bad = await client.put(
            f"/programs/{cohort.program_id}/reminders",
            json={"offsets_s": [-5]},
            headers=coordinator_headers(),
        )
        assert bad.status_code == 422 and "offsets_s" in bad.text
    people = [Applicant(system, prefix=p, cohort=cohort) for p in ("gus", "hal", "ivy")]
    for person in people:
        await system.publish(person.submitted())
    for person in people:
        await person.wait_mail(1)
        await system.publish(person.confirmed())
    for person in people:
        await person.wait_mail(2)
    gus, hal, ivy = people
    await system.publish(gus.withdrawn())
    await gus.wait_mail(3)

    def reminders() -> list[Received]:
        got = [m for p in people for m in p.mail() if m.template == "reminder"]
        assert len(got) >= 4, len(got)
        return got

    await eventually(reminders, timeout=25, interval=0.2, what="4 reminders")
    await asyncio.sleep(2.0)
    assert [m.template for m in gus.mail()] == ["signup_received", "confirmed", "withdrawn"]
    for person in (hal, ivy):
        got = [m for m in person.mail() if m.template == "reminder"]
        assert len(got) == 2, [m.text for m in got]  # one per session, the late ones dropped
        assert len({m.message["Message-ID"] for m in got}) == 2
    doc = await ndb.cohorts.find_one({"_id": cohort.cohort_id})
    states = sorted((r["offset_s"], r["state"]) for r in doc["reminders"])
    assert states == [(7, "fired"), (7, "fired"), (120, "dropped"), (120, "dropped")]
    assert doc["roster"] == [hal.rid, ivy.rid] or sorted(doc["roster"]) == sorted(
        [hal.rid, ivy.rid]
    )


# --- privacy -------------------------------------------------------------------------------


async def test_no_personal_data_in_logs_or_at_rest(system: System, ndb) -> None:
    assert len(system.secrets) >= 10
    logs = system.logs()
    assert "delivery sent" in logs  # the logs are there and say what happened, by id
    for secret in system.secrets:
        assert secret not in logs, secret
    for phrase in ("We received your sign-up", "我们已收到你的报名", "number 3 on the waiting"):
        assert phrase not in logs
    assert "@example.org" not in logs
    stored = ""
    for name in ("recipients", "deliveries", "delivery_log", "cohorts"):
        stored += json_util.dumps([d async for d in ndb[name].find({})])
    for secret in system.secrets:
        assert secret not in stored, secret
    assert "recipient:" not in stored or "v1." in stored


async def test_payment_problems_reach_coordinators_even_without_a_registration(
    system: System,
) -> None:
    flag = ev.PaymentFlagged(
        flag_id=f"flag-{short_id()}", reason_code="unknown_reference", method="alipay"
    )
    envelope = ev.make_envelope(flag, source="urn:holdspace:test", correlation_id=flag.flag_id)
    await system.publish(flag, envelope=envelope)
    mail = await eventually(
        lambda: coordinator_mail(system, "coordinator_payment_problem", "unknown_reference"),
        timeout=15,
        what="a coordinator alert for an unmatched payment",
    )
    assert len(mail) == 1
