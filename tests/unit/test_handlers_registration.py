"""Registration's sign-up and handlers on in-memory collections: no broker, no database.

Built as app.py builds it; what is checked is what an applicant and the other services
see: one registration per Idempotency-Key, one seat per registration, every event once,
and events from consent and payments applied once, whatever order they come in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from registration.domain.events import program_spec
from registration.domain.ledger import Status
from registration.domain.programs import (
    Application,
    IntakeQuestion,
    Joining,
    PaymentInstructions,
    ProgramSpec,
)
from registration.domain.schedule import CohortSpec
from registration.erasure import Erasures
from registration.handlers import subscriptions
from registration.programs import ProgramAdmin
from registration.service import RegistrationService
from registration.settings import RegistrationSettings
from registration.signups import SignUps, Verified
from registration.store import RegistrationStores, Sealer
from registration.views import RegistrationViews, cohort_out, program_out

from shared import errors
from shared import events as ev
from shared.security import BlindIndexer, DecryptionError, FieldCipher
from tests.fakes import MemoryBus, MemoryConsumer, MemoryDatabase, consent_signed

NOW = datetime.now(UTC)
FIRST = NOW + timedelta(days=20)


class System:
    def __init__(self) -> None:
        settings = RegistrationSettings()
        cipher = FieldCipher.from_settings(settings)
        db = MemoryDatabase(unique={"registrations": ["dedupe_key"]})
        self.stores = RegistrationStores.open(db.store, db, cipher)
        sealer = self.sealer = Sealer(cipher, BlindIndexer.from_settings(settings))
        self.service = RegistrationService(self.stores, sealer)
        self.signups = SignUps(self.service)
        self.links: dict[str, list[str | None]] = {}
        self.service_views = RegistrationViews(self.stores, sealer)
        self.admin = ProgramAdmin(self.stores, sealer)
        self.consumer = MemoryConsumer(subscriptions.bind(self.service))
        self.bus = MemoryBus(self.stores.cohorts)

    async def cohort(self, *, approval_required: bool = False, capacity: int = 8) -> str:
        program = await self.admin.create_program(
            ProgramSpec(
                title="Recovery group",
                display_name="Wednesday group",
                kind="recovery_group",
                facilitator="Facilitator",
                price={"amount_minor": 90000, "currency": "CNY"},
                capacity=capacity,
                approval_required=approval_required,
                consent_form_ref="recovery-group-consent",
            )
        )
        (cohort,) = await self.admin.create_cohort(
            program["_id"],
            CohortSpec(
                sessions=[
                    {
                        "starts_at": FIRST,
                        "ends_at": FIRST + timedelta(hours=2),
                        "timezone": "Asia/Shanghai",
                    }
                ],
                registration_opens_at=NOW - timedelta(days=1),
                registration_closes_at=NOW + timedelta(days=10),
            ),
        )
        return cohort["_id"]

    def link_token(self, rid: str) -> str | None:
        """The token the verification email carries (None: no link was sent)."""
        for e in self.bus.take("registration.email_verification_requested"):
            self.links.setdefault(e.data["registration_id"], []).append(
                e.data["contact"]["access_token"]
            )
        sent = self.links.pop(rid, [])
        assert len(sent) == 1, f"{len(sent)} verification emails for {rid}"
        return sent[0]

    async def verify(self, rid: str, token: str, at: datetime = NOW) -> Verified:
        doc = await self.service_views.own_registration(rid, token)
        return await self.signups.verify_email(doc, token, at)

    async def sign_up(self, cohort_id: str, app: Application, key: str) -> Verified:
        """Signed up and verified, as an applicant following the emailed link."""
        result = await self.signups.sign_up(cohort_id, app, key, NOW)
        token = self.link_token(result.registration_id)
        assert token is not None
        return await self.verify(result.registration_id, token)

    async def status(self, cohort_id: str, rid: str) -> Status:
        cohort = await self.stores.cohorts.get(cohort_id)
        return Status(cohort["entries"][rid]["status"])


def application(email: str = "lin@example.org", **changes) -> Application:
    return Application(
        name="林",
        email=email,
        age_attested=True,
        privacy_notice_accepted=True,
        **changes,
    )


async def test_a_retried_sign_up_is_one_registration_one_email_and_one_seat() -> None:
    system = System()
    cohort_id = await system.cohort()
    first = await system.signups.sign_up(cohort_id, application(), "key-12345678", NOW)
    again = await system.signups.sign_up(cohort_id, application(), "key-12345678", NOW)
    assert again.registration_id == first.registration_id
    assert again.replayed and not first.replayed
    token = system.link_token(first.registration_id)  # asserts one email, not two
    assert token is not None
    cohort = await system.stores.cohorts.get(cohort_id)
    assert cohort["entries"] == {}, "nothing is held before the address is verified"

    await system.verify(first.registration_id, token)
    await system.verify(first.registration_id, token)  # the link followed twice
    cohort = await system.stores.cohorts.get(cohort_id)
    assert list(cohort["entries"]) == [first.registration_id]
    assert [e.type for e in system.bus.take("registration.submitted")] == ["registration.submitted"]


async def test_a_key_reused_for_another_request_is_refused_naming_the_key() -> None:
    system = System()
    cohort_id = await system.cohort()
    await system.signups.sign_up(cohort_id, application(), "key-12345678", NOW)
    with pytest.raises(errors.Conflict) as refused:
        await system.signups.sign_up(
            cohort_id, application("other@example.org"), "key-12345678", NOW
        )
    assert refused.value.field == "Idempotency-Key"


async def test_a_known_address_is_answered_as_a_new_one_and_only_its_owner_is_told() -> None:
    system = System()
    cohort_id = await system.cohort()
    registered = await system.sign_up(cohort_id, application(), "key-aaaaaaaa")
    system.bus.take()
    stranger = await system.signups.sign_up(cohort_id, application(), "key-bbbbbbbb", NOW)
    newcomer = await system.signups.sign_up(
        cohort_id, application("new@example.org"), "key-cccccccc", NOW
    )
    # What the caller sees is the same, field for field (the id stays inside).
    assert (stranger.verify_by, stranger.crisis_resources, stranger.replayed) == (
        newcomer.verify_by,
        newcomer.crisis_resources,
        newcomer.replayed,
    )
    [told] = [
        e.data
        for e in system.bus.take("registration.email_verification_requested")
        if e.data["registration_id"] == stranger.registration_id
    ]
    assert told["already_registered"] and told["contact"]["access_token"] is None
    assert told["contact"]["email"] == "lin@example.org"  # the owner's mailbox, no one else
    cohort = await system.stores.cohorts.get(cohort_id)
    assert list(cohort["entries"]) == [registered.registration_id]
    # The second registration can never be verified, even with its own token.
    doc = await system.stores.registrations.find_one({"_id": stranger.registration_id})
    with pytest.raises(errors.Conflict) as refused:
        await system.signups.verify_email(doc, "its-token-was-never-sent", NOW)
    assert refused.value.field == "email"
    listed = await system.service_views.registrations(cohort_id, None, None)
    assert stranger.registration_id not in [r["registration_id"] for r in listed]


async def test_of_two_unverified_sign_ups_with_one_address_the_first_verified_wins() -> None:
    system = System()
    cohort_id = await system.cohort()
    a = await system.signups.sign_up(cohort_id, application(), "key-aaaaaaaa", NOW)
    b = await system.signups.sign_up(cohort_id, application(), "key-bbbbbbbb", NOW)
    tokens = {a.registration_id: system.link_token(a.registration_id)}
    tokens[b.registration_id] = system.link_token(b.registration_id)
    assert all(tokens.values()), "neither was verified yet: both get a link"
    await system.verify(b.registration_id, tokens[b.registration_id])
    with pytest.raises(errors.Conflict) as refused:
        await system.verify(a.registration_id, tokens[a.registration_id])
    assert refused.value.field == "email"
    cohort = await system.stores.cohorts.get(cohort_id)
    assert list(cohort["entries"]) == [b.registration_id]


async def test_a_link_past_its_time_is_refused_and_the_sign_up_forgotten() -> None:
    system = System()
    cohort_id = await system.cohort()
    late = await system.signups.sign_up(cohort_id, application(), "key-aaaaaaaa", NOW)
    kept = await system.sign_up(cohort_id, application("wen@example.org"), "key-bbbbbbbb")
    token = system.link_token(late.registration_id)
    assert token is not None
    after = late.verify_by + timedelta(seconds=1)
    with pytest.raises(errors.Conflict) as refused:
        await system.verify(late.registration_id, token, at=after)
    assert refused.value.field == "verify_by"
    assert await system.signups.never_verified(NOW) == []
    assert await system.signups.never_verified(after) == [late.registration_id]
    for rid in (late.registration_id, kept.registration_id):
        await system.signups.forget(rid)
    left = await system.stores.registrations.find_one({"_id": late.registration_id})
    assert left is None
    assert await system.stores.registrations.find_one({"_id": kept.registration_id})


async def test_a_safety_flag_is_raised_at_sign_up_before_any_verification() -> None:
    system = System()
    cohort_id = await system.cohort()
    program_id = (await system.stores.cohorts.get(cohort_id))["program_id"]
    program = await system.stores.program(program_id)
    await system.admin.edit_program(
        program_id,
        ProgramSpec.model_validate(
            {
                **{k: program[k] for k in ProgramSpec.model_fields if k in program},
                "safety_questions": [{"id": "harm", "text": "Thoughts of harming yourself?"}],
            }
        ),
    )
    system.service._cache.clear()
    answer = await system.signups.sign_up(
        cohort_id, application(safety_answers={"harm": True}), "key-aaaaaaaa", NOW
    )
    assert answer.crisis_resources is not None
    [flag] = system.bus.take("registration.flagged_for_safety")
    assert flag.data["registration_id"] == answer.registration_id
    assert (await system.stores.cohorts.get(cohort_id))["entries"] == {}
    # Never verified, it is kept a week longer for the coordinator answering the alert.
    assert await system.signups.never_verified(answer.verify_by + timedelta(days=1)) == []


def payment_confirmed(rid: str) -> ev.PaymentConfirmed:
    return ev.PaymentConfirmed(
        registration_id=rid,
        payment_id="pay-1",
        amount=ev.Money(amount_minor=90000, currency="CNY"),
        reference="HS-1",
        method="manual",
        confirmed_at=NOW,
    )


@pytest.mark.parametrize("payment_first", [False, True])
async def test_consent_and_payment_apply_once_in_either_order(payment_first: bool) -> None:
    # consent.signed goes to registration and payments at once; payments' confirmation
    # can reach registration before consent.signed does.
    system = System()
    cohort_id = await system.cohort()
    signed = await system.sign_up(cohort_id, application(), "key-12345678")
    rid = signed.registration_id
    assert await system.status(cohort_id, rid) == Status.awaiting_consent
    events = [consent_signed(rid), payment_confirmed(rid)]
    if payment_first:
        events.reverse()
    for data in events:
        envelope = await system.consumer.send(data)
        await system.consumer.deliver(envelope)  # redelivered: changes nothing
    assert await system.status(cohort_id, rid) == Status.confirmed
    assert [e.type for e in system.bus.take("enrollment.confirmed")] == ["enrollment.confirmed"]


async def test_money_confirmed_after_the_registration_ended_is_owed_back_once() -> None:
    # The hold ran out (here: the applicant withdrew) while the payment was on its way:
    # no seat follows, and payments must be told the money is to be returned.
    system = System()
    cohort_id = await system.cohort()
    rid = (await system.sign_up(cohort_id, application(), "key-12345678")).registration_id
    await system.consumer.send(consent_signed(rid))
    await system.service.change(rid, "withdraw", NOW)
    system.bus.take()
    envelope = await system.consumer.send(payment_confirmed(rid))
    await system.consumer.deliver(envelope)  # redelivered: nothing more
    owed = system.bus.take("registration.paid_after_close")
    assert [e.data["previous_status"] for e in owed] == ["withdrawn"]
    assert await system.status(cohort_id, rid) == Status.withdrawn
    assert system.bus.take("enrollment.confirmed") == []
    # a waiver moves no money: nothing is owed
    await system.consumer.send(ev.PaymentWaived(registration_id=rid, payment_id="p"))
    assert system.bus.take("registration.paid_after_close") == []


async def test_an_event_for_a_registration_this_service_does_not_know_is_dropped() -> None:
    system = System()
    await system.consumer.send(consent_signed("nobody"))  # acknowledged, nothing written
    assert system.bus.take() == []


async def test_the_ninth_applicant_of_eight_seats_is_waitlisted() -> None:
    system = System()
    cohort_id = await system.cohort(capacity=8)
    results = [
        await system.sign_up(cohort_id, application(f"p{i}@example.org"), f"key-{i:08d}")
        for i in range(9)
    ]
    assert [r.status for r in results].count(Status.waitlisted) == 1
    assert results[-1].status == Status.waitlisted and results[-1].position == 1


async def test_each_registration_keeps_who_moved_it_and_to_what() -> None:
    system = System()
    cohort_id = await system.cohort(approval_required=True, capacity=1)
    first = await system.sign_up(cohort_id, application(), "key-aaaaaaaa")
    second = await system.sign_up(cohort_id, application("wen@example.org"), "key-bbbbbbbb")
    await system.service.change(first.registration_id, "approve", NOW, by="coordinator@example.org")
    await system.consumer.send(consent_signed(first.registration_id))
    await system.service.change(first.registration_id, "withdraw", NOW, by="applicant")

    def steps(record: dict) -> list[tuple[str, str, str | None]]:
        return [(s["cause"], s["status"], s["by"]) for s in record["history"]]

    assert steps(await system.service_views.record(first.registration_id)) == [
        ("signed_up", "pending_review", "applicant"),
        ("approve", "awaiting_consent", "coordinator@example.org"),
        ("consent_signed", "awaiting_payment", None),
        ("withdraw", "withdrawn", "applicant"),
    ]
    # The freed seat went down the waitlist: the system's doing, not the applicant's.
    assert steps(await system.service_views.record(second.registration_id)) == [
        ("signed_up", "waitlisted", "applicant"),
        ("seat_offered", "offered", None),
    ]


async def test_joining_details_are_sealed_and_shown_only_to_a_confirmed_participant() -> None:
    system = System()
    cohort_id = await system.cohort()
    other_id = await system.cohort()
    joining = Joining(
        platform="腾讯会议",
        url="https://meeting.tencent.com/dm/abc123",
        meeting_id="123 456 789",
        passcode="8642",
    )
    assert await system.admin.set_joining(cohort_id, joining, NOW) == {
        "platform": "腾讯会议",
        "url": "https://meeting.tencent.com/dm/abc123",
        "meeting_id": "123 456 789",
        "passcode": "8642",
    }
    stored = await system.stores.cohorts.get(cohort_id)
    assert "8642" not in str(stored) and "tencent" not in str(stored)  # its outbox too
    await system.admin.set_joining(cohort_id, joining, NOW)  # saved again, unchanged
    (told,) = system.bus.take("cohort.joining_changed")  # notifications tells the confirmed
    assert told.data["joining"]["passcode"] == "8642" and told.data["sequence"] == 1
    assert told.data["cohort"]["sessions_sequence"] == 1
    assert "joining" not in cohort_out(stored)

    signed = await system.sign_up(cohort_id, application(), "key-12345678")
    doc = await system.stores.registrations.find_one({"_id": signed.registration_id})
    with pytest.raises(errors.Forbidden) as refused:
        await system.service_views.own_joining(doc)
    assert refused.value.field == "status"

    await system.consumer.send(consent_signed(signed.registration_id))
    await system.consumer.send(payment_confirmed(signed.registration_id))
    shown = await system.service_views.own_joining(doc)
    assert shown["passcode"] == "8642" and shown["platform"] == "腾讯会议"

    # A sealed value copied to another cohort does not open there.
    await system.stores.cohorts.collection.update_one(
        {"_id": other_id}, {"$set": {"joining": stored["joining"]}}
    )
    with pytest.raises(DecryptionError):
        await system.service_views.joining(other_id)
    with pytest.raises(errors.NotFound):
        await system.service_views.joining(await system.cohort())


def test_a_meeting_link_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        Joining(platform="VooV", url="http://voov.example/x")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_a_programs_payment_instructions_and_qr_code_are_set_shown_and_removed() -> None:
    system = System()
    cohort_id = await system.cohort()
    program_id = (await system.stores.cohorts.get(cohort_id))["program_id"]
    assert await system.service_views.how_to_pay(program_id) == {"qr": False}
    with pytest.raises(errors.NotFound):
        await system.service_views.payment_qr(program_id)

    await system.admin.set_payment_instructions(
        program_id, PaymentInstructions(en="WeChat Pay to Holdspace Ltd", zh="微信支付给本机构")
    )
    await system.admin.set_payment_qr(program_id, PNG)
    assert await system.service_views.how_to_pay(program_id) == {
        "en": "WeChat Pay to Holdspace Ltd",
        "zh": "微信支付给本机构",
        "qr": True,
    }
    assert await system.service_views.payment_qr(program_id) == (PNG, "image/png")
    listed = program_out(await system.stores.program(program_id))
    assert "payment_qr" not in listed and "payment_instructions" not in listed

    for bad, says in ((b"GIF89a...", "PNG or a JPEG"), (b"", "empty"), (PNG * 5000, "KiB")):
        with pytest.raises(errors.Invalid, match=says) as refused:
            await system.admin.set_payment_qr(program_id, bad)
        assert refused.value.field == "qr"
    assert await system.service_views.payment_qr(program_id) == (PNG, "image/png")

    await system.admin.set_payment_qr(program_id, None)
    assert (await system.service_views.how_to_pay(program_id))["qr"] is False


async def test_a_sealed_field_moved_into_another_registration_does_not_open() -> None:
    system = System()
    cohort_id = await system.cohort()
    lin = await system.sign_up(cohort_id, application(), "key-aaaaaaaa")
    wen = await system.sign_up(cohort_id, application("wen@example.org"), "key-bbbbbbbb")
    docs = system.stores.registrations.docs  # type: ignore[attr-defined]
    lin_doc, wen_doc = docs[lin.registration_id], docs[wen.registration_id]
    assert system.sealer.personal(wen_doc)["email"] == "wen@example.org"
    # Someone with write access swaps Lin's sealed email, or answers, into Wen's.
    with pytest.raises(DecryptionError):
        system.sealer.personal(
            {**wen_doc, "sealed": {**wen_doc["sealed"], "email": lin_doc["sealed"]["email"]}}
        )
    with pytest.raises(DecryptionError):
        system.sealer.personal({**wen_doc, "safety_answers": lin_doc["safety_answers"]})


def test_a_registration_sealed_before_values_were_bound_still_opens() -> None:
    settings = RegistrationSettings()
    cipher = FieldCipher.from_settings(settings)
    sealer = Sealer(cipher, BlindIndexer.from_settings(settings))
    legacy = {
        "_id": "r-old",
        "sealed": {"email": cipher.encrypt("old@example.org", context="registration:email")},
        "safety_answers": cipher.encrypt_json({}, context="registration:safety_answers"),
    }
    assert sealer.personal(legacy)["email"] == "old@example.org"


async def test_an_erasure_leaves_the_group_forgets_the_person_and_asks_once() -> None:
    system = System()
    cohort_id = await system.cohort()
    lin = await system.sign_up(cohort_id, application(chat_handle="wx-lin"), "key-aaaaaaaa")
    erasures = Erasures(system.service)
    doc = await system.stores.registrations.find_one({"_id": lin.registration_id})
    exported = await system.service_views.export(doc)
    assert (exported["name"], exported["email"], exported["chat_handle"]) == (
        "林",
        "lin@example.org",
        "wx-lin",
    )
    assert [s["cause"] for s in exported["history"]] == ["signed_up"]
    system.bus.take()

    state = await erasures.request(doc, "applicant", NOW)
    await erasures.request(doc, "applicant", NOW)  # asked twice: one request goes out
    assert state["services"]["registration"] is not None and not state["complete"]
    assert await system.status(cohort_id, lin.registration_id) == Status.withdrawn
    asked = system.bus.take("registration.erasure_requested")
    assert [e.data["registration_id"] for e in asked] == [lin.registration_id]
    erased = await system.stores.registrations.find_one({"_id": lin.registration_id})
    assert erased["sealed"] == {} and erased["safety_answers"] is None
    assert erased["email_index"] is None and "lin@example.org" not in str(erased)
    after = await system.service_views.export(erased)
    assert "email" not in after and "name" not in after and after["safety_answers"] == {}
    # The address may sign up again: it is no longer known here.
    again = await system.sign_up(cohort_id, application(), "key-bbbbbbbb")
    assert again.registration_id != lin.registration_id and again.status == Status.awaiting_consent

    for report in (ev.ConsentErased, ev.PaymentErased, ev.NotificationErased, ev.ProgressErased):
        await system.consumer.send(report(registration_id=lin.registration_id, completed_at=NOW))
    assert (await erasures.state(lin.registration_id))["complete"]


async def test_an_erasure_a_crash_interrupted_is_finished_by_the_due_work() -> None:
    system = System()
    cohort_id = await system.cohort()
    lin = await system.sign_up(cohort_id, application(), "key-aaaaaaaa")
    system.bus.take()
    erasures = Erasures(system.service)
    # The request was recorded, then the process died before anything was erased.
    await system.stores.registrations.update_one(
        {"_id": lin.registration_id},
        {
            "$set": {
                "erasure": {"requested_at": NOW, "by": "applicant", "done": {}},
                "erasure_pending_since": NOW,
            }
        },
    )
    assert await erasures.unfinished(NOW) == [], "not before it has had time to finish"
    later = NOW + timedelta(minutes=1)
    assert await erasures.unfinished(later) == [lin.registration_id]
    await erasures.finish(lin.registration_id)
    assert await erasures.unfinished(later) == []
    doc = await system.stores.registrations.find_one({"_id": lin.registration_id})
    assert doc["sealed"] == {} and doc["erasure"]["erased_here_at"] is not None
    assert await system.status(cohort_id, lin.registration_id) == Status.withdrawn
    assert len(system.bus.take("registration.erasure_requested")) == 1


async def test_answers_to_a_programs_own_questions_are_sealed_and_shown_to_its_coordinator():
    system = System()
    cohort_id = await system.cohort()
    program_id = (await system.stores.cohort(cohort_id))["program_id"]
    spec = program_spec(await system.stores.program(program_id))
    question = {
        "id": "work",
        "text": "How do you work with groups?",
        "kind": "choice",
        "choices": [{"id": "coach", "text": "Coach"}, {"id": "therapist", "text": "Therapist"}],
        "required": True,
    }
    hopes = {"id": "hopes", "text": "Anything else?", "kind": "text", "sensitive": True}
    edited = spec.model_copy(
        update={"intake_questions": [IntakeQuestion(**question), IntakeQuestion(**hopes)]}
    )
    await system.admin.edit_program(program_id, edited)
    answers = {"work": "therapist", "hopes": "I lead a grief group 周三"}
    signed = await system.sign_up(cohort_id, application(intake_answers=answers), "key-intake1")
    doc = await system.stores.registrations.find_one({"_id": signed.registration_id})
    assert "grief" not in str(doc) and "therapist" not in str(doc)  # sealed at rest
    record = await system.service_views.record(signed.registration_id)
    assert record["intake_answers"] == answers


async def test_a_safety_answer_between_sessions_flags_the_registration_once() -> None:
    system = System()
    cohort_id = await system.cohort()
    lin = await system.sign_up(cohort_id, application(), "key-aaaaaaaa")
    system.bus.take()
    program_id = (await system.stores.cohorts.get(cohort_id))["program_id"]
    answered = ev.ProgressSafetyAnswered(
        registration_id=lin.registration_id,
        cohort_id=cohort_id,
        program_id=program_id,
        answered_at=NOW,
    )
    envelope = await system.consumer.send(answered)
    await system.consumer.deliver(envelope)  # redelivered: one flag
    [flag] = system.bus.take("registration.flagged_for_safety")
    assert flag.data["registration_id"] == lin.registration_id
    assert flag.data["program_id"] == program_id  # notifications sends its crisis lines
    doc = await system.stores.registrations.find_one({"_id": lin.registration_id})
    assert doc["flagged"] is True
    assert abs(doc["flagged_later_at"] - NOW) < timedelta(milliseconds=1)  # stored to the ms
    assert await system.status(cohort_id, lin.registration_id) == Status.awaiting_consent
