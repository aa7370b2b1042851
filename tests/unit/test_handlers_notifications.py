"""Notifications' handlers on in-memory collections: no broker, no database.

The service is built as app.py builds it and its events go through the same handler
registry the consumer uses; what matters is what a person receives: once, in order,
whatever the broker does (redeliveries, events overtaking each other).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from notifications.handlers import subscriptions
from notifications.service import NotificationService, RecipientUnknown
from notifications.settings import NotificationsSettings
from notifications.store import Sealer, Stores
from pymongo.errors import AutoReconnect

from shared import events as ev
from shared.erasure import erasures_store
from shared.errors import NotFound
from shared.security import FieldCipher
from tests.fakes import MemoryBus, MemoryConsumer, MemoryDatabase

START = datetime(2030, 3, 1, 11, 0, tzinfo=UTC)


class Outbox:
    """The SMTP server as the applicant's inbox sees it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.messages: list[EmailMessage] = []

    async def send(self, message: EmailMessage, to: str) -> None:
        self.sent.append((to, str(message["Subject"])))
        self.messages.append(message)


class System:
    def __init__(self) -> None:
        self.settings = NotificationsSettings(quiet_hours_start="00:00", quiet_hours_end="00:00")
        db = MemoryDatabase()
        self.stores = Stores(
            deliveries=db.store("deliveries"),
            recipients=db.store("recipients"),
            cohorts=db.store("cohorts"),
            alerts=db.store("alerts"),
            programs=db["programs"],  # type: ignore[arg-type]
            delivery_log=db["delivery_log"],  # type: ignore[arg-type]
        )
        self.mail = Outbox()
        self.service = NotificationService(
            self.settings,
            self.stores,
            Sealer(FieldCipher.from_settings(self.settings)),
            email=self.mail,  # type: ignore[arg-type]
        )
        self.consumer = MemoryConsumer(subscriptions.bind(self.service))
        self.bus = MemoryBus(self.stores.deliveries)

    async def settle(self) -> None:
        """Let the sends the handler started finish."""
        for _ in range(50):
            await asyncio.sleep(0)
        await asyncio.gather(*self.service.sender._sending)


def submitted(
    rid: str = "reg-1", language: str = "zh", access_token: str | None = None
) -> ev.Envelope:
    data = ev.RegistrationSubmitted(
        registration_id=rid,
        cohort_id="cohort-1",
        program_id="program-1",
        contact=ev.Contact(
            name="林", email=f"{rid}@example.org", language=language, access_token=access_token
        ),
        cohort=ev.CohortRef(
            cohort_id="cohort-1",
            program_id="program-1",
            display_name="周四晚间小组",
            sessions=[
                ev.Session(
                    starts_at=START, ends_at=START + timedelta(hours=2), timezone="Asia/Shanghai"
                )
            ],
        ),
        submitted_at=START - timedelta(days=10),
    )
    return ev.about_registration(data, rid, source="holdspace/registration")


def approved(rid: str = "reg-1") -> ev.Envelope:
    data = ev.RegistrationApproved(
        registration_id=rid, cohort_id="cohort-1", program_id="program-1"
    )
    return ev.about_registration(data, rid, source="holdspace/registration")


async def test_a_redelivered_event_sends_its_email_once() -> None:
    system = System()
    event = submitted()
    await system.consumer.deliver(event)
    await system.consumer.deliver(event)  # the broker delivers again (a lost ack)
    await system.settle()
    assert [to for to, _ in system.mail.sent] == ["reg-1@example.org"]
    sent = system.bus.take("notification.sent")
    assert len(sent) == 1 and sent[0].causationid == event.id


async def test_a_sent_email_whose_record_meets_a_database_outage_is_not_sent_again() -> None:
    """The database goes away between the SMTP server's "250 OK" and the write that
    records it (matrix row 30 found it: 18 of 1,200 applicants got their link twice, the
    second when the claim ran out). The record waits for the database instead."""
    system = System()
    system.settings.sending_claim_s = 3.0
    deliveries = system.stores.deliveries.collection
    write = deliveries.update_one
    outage = {"writes_refused": 0}

    async def send(message: EmailMessage, to: str) -> None:
        await Outbox.send(system.mail, message, to)
        outage["writes_refused"] = 3  # the database is gone for the next three writes

    async def flaky_update_one(*args, **kwargs):
        if outage["writes_refused"]:
            outage["writes_refused"] -= 1
            raise AutoReconnect("connection refused")
        return await write(*args, **kwargs)

    system.mail.send = send  # type: ignore[method-assign]
    deliveries.update_one = flaky_update_one  # type: ignore[method-assign]
    await system.consumer.deliver(submitted())
    await system.settle()
    doc = await deliveries.find_one({})
    assert doc["status"] == "sent", doc
    assert outage["writes_refused"] == 0
    await asyncio.sleep(system.settings.sending_claim_s)  # past the claim of that attempt
    sender = system.service.sender
    for did in await sender.deliveries_due(datetime.now(UTC)):
        await sender.deliver(did)
    await system.settle()
    assert [to for to, _ in system.mail.sent] == ["reg-1@example.org"]


async def test_every_applicant_email_links_to_their_registration_on_the_pages() -> None:
    system = System()
    await system.consumer.deliver(submitted(access_token="tok-123"))
    await system.consumer.deliver(approved())
    await system.settle()
    link = "http://127.0.0.1:8000/my/reg-1?t=tok-123"
    assert len(system.mail.messages) == 2
    for message in system.mail.messages:
        assert link in message.get_body(("plain",)).get_content()
        assert f'href="{link}"' in message.get_body(("html",)).get_content()


async def test_without_the_token_an_email_has_no_broken_link() -> None:
    system = System()
    await system.consumer.deliver(submitted())  # a sign-up finished by the reconciler
    await system.settle()
    (message,) = system.mail.messages
    assert "/my/" not in message.get_body(("plain",)).get_content()


async def test_the_same_event_delivered_twice_at_once_sends_once() -> None:
    system = System()
    event = submitted()
    await asyncio.gather(system.consumer.deliver(event), system.consumer.deliver(event))
    await system.settle()
    assert len(system.mail.sent) == 1


async def test_an_event_that_overtakes_the_sign_up_waits_for_it() -> None:
    system = System()
    later = asyncio.create_task(system.consumer.deliver(approved()))
    await asyncio.sleep(0.05)
    assert not later.done()  # waiting for the registration it is about
    await system.consumer.deliver(submitted())
    await later
    await system.settle()
    assert len(system.mail.sent) == 2  # the acknowledgement and the approval


async def test_an_event_about_an_unknown_registration_is_retried_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    system = System()
    waited = system.service._await_recipient

    async def impatient(rid: str, timeout_s: float = 5.0):  # the test need not wait 5 s
        return await waited(rid, timeout_s=0.05)

    monkeypatch.setattr(system.service, "_await_recipient", impatient)
    with pytest.raises(RecipientUnknown):  # the consumer retries it later
        await system.consumer.deliver(approved("nobody"))
    await system.settle()
    assert system.mail.sent == []


async def test_subjects_name_no_condition_and_follow_the_applicants_language() -> None:
    system = System()
    await system.consumer.deliver(submitted("reg-zh", language="zh"))
    await system.consumer.deliver(submitted("reg-en", language="en"))
    await system.settle()
    subjects = dict(system.mail.sent)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in subjects["reg-zh@example.org"])
    assert subjects["reg-en@example.org"].isascii()
    for subject in subjects.values():
        for word in ("grief", "depress", "addict", "抑郁", "成瘾", "哀伤"):
            assert word not in subject.lower()


async def test_coordinator_emails_link_to_the_console_page_they_are_about() -> None:
    system = System()
    system.settings.coordinator_emails = "ana@example.org"
    await system.consumer.deliver(submitted())
    flagged = ev.RegistrationFlaggedForSafety(
        registration_id="reg-1", cohort_id="cohort-1", program_id="program-1"
    )
    await system.consumer.deliver(ev.about_registration(flagged, "reg-1", source="test"))
    marked = ev.PaymentConfirmationPending(
        registration_id="reg-1",
        payment_id="pay-1",
        confirmation_id="m-1",
        amount=ev.Money(amount_minor=90000, currency="CNY"),
    )
    await system.consumer.deliver(ev.about_registration(marked, "reg-1", source="test"))
    await system.settle()
    to_ana = [
        m.get_body(("plain",)).get_content()
        for m in system.mail.messages
        if m["To"] == "ana@example.org"
    ]
    assert len(to_ana) == 2
    console = "http://127.0.0.1:8000/console"
    assert any(f"{console}/registrations/reg-1" in text for text in to_ana)
    assert any(f"{console}/payments" in text for text in to_ana)


async def test_a_safety_flag_with_no_coordinator_address_set_still_reaches_the_mail_sink() -> None:
    from notifications.settings import DEV_COORDINATOR_EMAIL

    system = System()  # development, COORDINATOR_EMAILS unset
    await system.consumer.deliver(submitted())
    flagged = ev.RegistrationFlaggedForSafety(
        registration_id="reg-1", cohort_id="cohort-1", program_id="program-1"
    )
    await system.consumer.deliver(ev.about_registration(flagged, "reg-1", source="test"))
    await system.settle()
    alerts = [subject for to, subject in system.mail.sent if to == DEV_COORDINATOR_EMAIL]
    assert len(alerts) == 1


def flag(rid: str = "reg-1") -> ev.Envelope:
    flagged = ev.RegistrationFlaggedForSafety(
        registration_id=rid, cohort_id="cohort-1", program_id="program-1"
    )
    return ev.about_registration(flagged, rid, source="test")


async def test_a_safety_alert_nobody_acknowledges_is_sent_again_to_every_coordinator() -> None:
    system = System()
    system.settings.coordinator_emails = "ana@example.org, bo@example.org"
    alerts = system.service.alerts
    await system.consumer.deliver(submitted())
    flagged = flag()
    await system.consumer.deliver(flagged)
    await system.consumer.deliver(flagged)  # redelivered: one alert, sent once
    await system.settle()

    def to_coordinators() -> list[str]:
        return [s for to, s in system.mail.sent if to in ("ana@example.org", "bo@example.org")]

    assert len(to_coordinators()) == 2  # the first alert, to each
    now = datetime.now(UTC)
    assert await alerts.due(now) == []  # not yet: a coordinator has SAFETY_ACK_S
    later = now + timedelta(seconds=system.settings.safety_ack_s + 1)
    assert await alerts.due(later) == ["reg-1"]
    await alerts.escalate("reg-1", later)
    await alerts.escalate("reg-1", later)  # run twice (two replicas): counted once
    await system.settle()
    escalated = [s for s in to_coordinators() if "not yet acknowledged" in s]
    assert len(escalated) == 2  # once to each coordinator
    (alert,) = await alerts.open_alerts()
    assert alert["escalations"] == 1

    # Escalations stop after SAFETY_ESCALATIONS, and nothing names the condition.
    for n in range(2, 6):
        await alerts.escalate("reg-1", later + n * timedelta(seconds=system.settings.safety_ack_s))
    await system.settle()
    assert len([s for s in to_coordinators() if "not yet acknowledged" in s]) == 2 * 3
    assert (await alerts.one("reg-1"))["next_escalation_at"] is None


async def test_an_acknowledged_safety_alert_is_not_sent_again() -> None:
    system = System()
    system.settings.coordinator_emails = "ana@example.org"
    alerts = system.service.alerts
    await system.consumer.deliver(submitted())
    await system.consumer.deliver(flag())
    first = await alerts.acknowledge("reg-1", "ana@example.org")
    again = await alerts.acknowledge("reg-1", "bo@example.org")
    assert first["acknowledged"]["by"] == again["acknowledged"]["by"] == "ana@example.org"
    later = datetime.now(UTC) + timedelta(days=1)
    assert await alerts.due(later) == []
    await alerts.escalate("reg-1", later)
    await system.settle()
    assert not [s for _, s in system.mail.sent if "not yet acknowledged" in s]
    assert await alerts.open_alerts() == []
    with pytest.raises(NotFound):
        await alerts.acknowledge("nobody", "ana@example.org")


async def test_at_night_a_reply_goes_at_once_and_news_nobody_asked_for_waits() -> None:
    from zoneinfo import ZoneInfo

    system = System()
    local = datetime.now(ZoneInfo("Asia/Shanghai"))  # the applicant's zone (Contact's default)
    system.service.quiet = system.service.quiet.parse(
        (local - timedelta(hours=1)).strftime("%H:%M"),
        (local + timedelta(hours=3)).strftime("%H:%M"),
    )  # it is night where the applicant is
    await system.consumer.deliver(submitted())
    offered = ev.RegistrationSeatOffered(
        registration_id="reg-1",
        cohort_id="cohort-1",
        offer_expires_at=datetime.now(UTC) + timedelta(days=2),
    )
    await system.consumer.deliver(ev.about_registration(offered, "reg-1", source="test"))
    await system.settle()
    # The sign-up's receipt answers what the applicant just did: it goes now.
    assert [to for to, _ in system.mail.sent] == ["reg-1@example.org"]
    (waiting,) = [
        d for d in system.stores.deliveries.collection.docs.values() if d["status"] == "pending"
    ]
    assert waiting["template"] == "seat_offered"
    assert waiting["due_at"] > datetime.now(UTC) + timedelta(hours=2)


async def test_an_erased_registration_keeps_no_message_and_gets_none_later() -> None:
    system = System()
    system.stores.erasures = erasures_store(MemoryDatabase().store, "test")
    await system.consumer.deliver(submitted())
    await system.settle()
    assert len(system.mail.sent) == 1
    # A delivery still waiting when the erasure comes (written in the race with it).
    waiting = await system.stores.deliveries.collection.find_one({"registration_id": "reg-1"})
    erase = ev.RegistrationErasureRequested(
        registration_id="reg-1", cohort_id="cohort-1", requested_at=START
    )
    await system.consumer.deliver(ev.about_registration(erase, "reg-1", source="test"))
    recipient = await system.stores.recipients.collection.find_one({"_id": "reg-1"})
    assert recipient["sealed"] is None and recipient["erased_at"] is not None
    assert await system.stores.deliveries.collection.find_one({"registration_id": "reg-1"}) is None
    assert await system.stores.delivery_log.find_one({"registration_id": "reg-1"}) is None
    reported = MemoryBus(system.stores.erasures).take("notification.erased")
    assert [e.data["registration_id"] for e in reported] == ["reg-1"]

    due = {**waiting, "status": "pending", "due_at": datetime.now(UTC) - timedelta(seconds=1)}
    await system.stores.deliveries.collection.insert_one(due)
    await system.service.sender.deliver(waiting["_id"])
    await system.consumer.deliver(approved())  # an event in flight: dropped, not retried
    await system.settle()
    assert len(system.mail.sent) == 1, "nothing sent after the erasure"
    assert await system.stores.deliveries.collection.find_one({"registration_id": "reg-1"}) is None


async def test_a_new_flag_after_an_acknowledged_one_reaches_a_person_again() -> None:
    """A safety item answered between sessions, long after intake's flag was handled."""
    system = System()
    system.settings.coordinator_emails = "ana@example.org"
    alerts = system.service.alerts
    await system.consumer.deliver(submitted())
    await system.consumer.deliver(flag())
    await alerts.acknowledge("reg-1", "ana@example.org")
    assert await alerts.open_alerts() == []
    later = flag()  # a new flag: another event
    await system.consumer.deliver(later)
    await system.consumer.deliver(later)  # redelivered: still one open alert
    (alert,) = await alerts.open_alerts()
    assert alert["acknowledged"] is None and alert["escalations"] == 0
    await system.settle()
    to_ana = [s for to, s in system.mail.sent if to == "ana@example.org"]
    assert len(to_ana) == 2  # intake's alert and the new one


async def test_a_milestone_gets_one_discreet_word_naming_no_condition() -> None:
    system = System()
    await system.consumer.deliver(submitted(language="en"))
    await system.settle()
    system.mail.sent.clear()
    reached = ev.ProgressMilestoneReached(
        registration_id="reg-1",
        cohort_id="cohort-1",
        title={"en": "Told someone I trust", "zh": "告诉了一个信任的人"},
        reached=2,
        of=6,
    )
    envelope = ev.registration_enveloper("holdspace/progress")(reached, None)
    await system.consumer.deliver(envelope)
    await system.consumer.deliver(envelope)
    await system.settle()
    [(to, subject)] = system.mail.sent
    assert to == "reg-1@example.org" and subject == "A step taken"
    body = system.mail.messages[-1].get_body(("plain",)).get_content()
    assert "Told someone I trust" in body and "(2 of 6)" in body


async def test_the_homework_sessions_of_a_plan_are_kept_and_a_late_older_plan_loses() -> None:
    system = System()
    reminders = system.service.reminders
    now = datetime.now(UTC)
    told = ev.ProgressPlanSet(program_id="program-1", homework_sessions=[1, 3], set_at=now)
    await system.consumer.deliver(ev.about_registration(told, "program-1", source="test"))
    older = ev.ProgressPlanSet(
        program_id="program-1", homework_sessions=[2], set_at=now - timedelta(minutes=1)
    )
    await system.consumer.deliver(ev.about_registration(older, "program-1", source="test"))
    assert await reminders.homework_sessions("program-1") == {1, 3}
    assert await reminders.offsets_for("program-1") == system.settings.default_reminder_offsets


async def test_an_event_and_its_email_read_the_applicant_once_each_for_who_and_whether_erased() -> (
    None
):
    """The recipient document answers both "erased?" and "to whom?": the handler and the
    send each read it once for both (the benchmark counts every read an enrollment costs)."""
    system = System()
    await system.consumer.deliver(submitted())
    await system.settle()
    recipients = system.stores.recipients.collection
    reads: list[dict] = []
    find_one = recipients.find_one

    async def counted(flt, projection=None):  # type: ignore[no-untyped-def]
        reads.append(projection or {})
        return await find_one(flt, projection)

    recipients.find_one = counted  # type: ignore[method-assign]
    await system.consumer.deliver(approved())
    await system.settle()
    assert len(system.mail.sent) == 2
    whole = [p for p in reads if not p]
    assert len(whole) == 2  # one for the event, one for its email
    assert len(reads) == 3  # and the check for an erasure while the event was handled


async def test_sends_still_under_way_after_the_event_was_acked_are_shown_to_operators() -> None:
    """The queues are empty once the event is acked, but its e-mail may still be going:
    /metrics says so (holdspace_deliveries_sending), and the benchmark waits for it."""
    from prometheus_client import REGISTRY

    system = System()
    release = asyncio.Event()
    send = system.mail.send

    async def slow(message: EmailMessage, to: str) -> None:
        await release.wait()
        await send(message, to)

    system.mail.send = slow  # type: ignore[method-assign]

    def sending() -> float | None:
        labels = {"service": "notifications"}
        return REGISTRY.get_sample_value("holdspace_deliveries_sending", labels)

    await system.consumer.deliver(submitted())
    for _ in range(20):
        await asyncio.sleep(0)
    assert sending() == 1
    release.set()
    await system.settle()
    assert sending() == 0 and len(system.mail.sent) == 1
