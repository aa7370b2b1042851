"""Payments' handlers and settling on in-memory collections: no broker, no database.

What is checked is what money and people see: a request only after consent, one request
per signature however often it is delivered, one confirmation per payment however often
the provider notifies, and the program's refund policy applied once on withdrawal.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from payments.domain.claims import Claim
from payments.handlers import subscriptions
from payments.scholarships import RESERVATION_GRACE, Scholarships
from payments.service import PaymentService
from payments.settings import PaymentsSettings
from payments.store import PaymentStores, Sealer
from payments.views import PaymentViews
from web.domain import history

from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.security import FieldCipher, decode_key
from tests.fakes import MemoryBus, MemoryConsumer, MemoryDatabase, consent_signed

NOW = datetime.now(UTC)
PRICE = ev.Money(amount_minor=90000, currency="CNY")


class System:
    def __init__(self) -> None:
        settings = PaymentsSettings()
        db = MemoryDatabase()
        self.stores = PaymentStores.open(db.store, db)
        self.service = PaymentService(
            self.stores,
            Sealer(FieldCipher.from_settings(settings)),
            settings,
            reference_key=decode_key(settings.blind_index_key, setting="BLIND_INDEX_KEY"),
        )
        self.consumer = MemoryConsumer(subscriptions.bind(self.service))
        self.bus = MemoryBus(self.stores.cases, self.stores.flags)


def signed(rid: str, *, refundable: bool = False) -> ev.ConsentSigned:
    return consent_signed(
        rid, price=PRICE, refundable=refundable, hold_expires_at=NOW + timedelta(days=3)
    )


def withdrawn(rid: str, refundable: bool) -> ev.RegistrationWithdrawn:
    return ev.RegistrationWithdrawn(
        registration_id=rid,
        cohort_id="cohort-1",
        previous_status="confirmed",
        refundable=refundable,
    )


async def requested(system: System, rid: str) -> ev.PaymentRequested:
    [envelope] = system.bus.take("payment.requested")
    data = envelope.payload()
    assert isinstance(data, ev.PaymentRequested) and data.registration_id == rid
    return data


async def test_one_request_per_signature_however_often_it_is_delivered() -> None:
    system = System()
    envelope = await system.consumer.send(signed("reg-1"))
    await system.consumer.deliver(envelope)
    await asyncio.gather(system.consumer.deliver(envelope), system.consumer.deliver(envelope))
    request = await requested(system, "reg-1")
    assert request.amount == PRICE and request.reference


async def test_the_same_payment_notified_many_times_confirms_once() -> None:
    system = System()
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    claim = Claim("wechatpay", "wechatpay:tx-1", request.reference, 90000, "CNY")
    notification = {"_id": "wechatpay:tx-1", "method": "wechatpay"}
    outcomes = await asyncio.gather(
        *(system.service.settle(claim, notification) for _ in range(20))
    )
    assert sorted(o.outcome for o in outcomes) == ["confirmed"] + ["duplicate"] * 19
    assert len(system.bus.take("payment.confirmed")) == 1


async def test_a_payment_that_does_not_match_is_flagged_and_confirms_nothing() -> None:
    system = System()
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    short = Claim("alipay", "alipay:tx-2", request.reference, 100, "CNY")
    result = await system.service.settle(short, {"_id": "alipay:tx-2", "method": "alipay"})
    assert result.outcome == "flagged" and result.flag == "amount_mismatch"
    assert system.bus.take("payment.confirmed") == []
    assert len(system.bus.take("payment.flagged")) == 1  # a coordinator hears of it


async def test_a_withdrawal_before_consent_means_no_request_ever() -> None:
    system = System()
    await system.consumer.send(withdrawn("reg-1", refundable=False))
    await system.consumer.send(signed("reg-1"))  # the late consent asks for nothing
    assert system.bus.take("payment.requested") == []


async def test_the_refund_policy_is_recorded_once_on_withdrawal_after_payment() -> None:
    for refundable, status in ((True, "to_be_made"), (False, "none")):
        system = System()
        await system.consumer.send(signed("reg-1"))
        request = await requested(system, "reg-1")
        claim = Claim("generic", "generic:tx-3", request.reference, 90000, "CNY")
        await system.service.settle(claim, {"_id": "generic:tx-3", "method": "generic"})
        envelope = await system.consumer.send(withdrawn("reg-1", refundable))
        await system.consumer.deliver(envelope)
        case = await system.stores.case("reg-1")
        assert case["refund_status"] == status
        assert case["refund"]["amount_minor"] == (90000 if refundable else 0)


async def test_money_confirmed_for_an_ended_registration_is_a_refund_coordinators_see() -> None:
    # Payments confirmed in time by its own clock, but registration had already let the
    # hold go (it was behind on its queue): registration says so, and the money is owed.
    system = System()
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    claim = Claim("wechatpay", "wechatpay:tx-9", request.reference, 90000, "CNY")
    await system.service.settle(claim, {"_id": "wechatpay:tx-9", "method": "wechatpay"})
    told = ev.RegistrationPaidAfterClose(
        registration_id="reg-1", cohort_id="cohort-1", previous_status="expired"
    )
    envelope = await system.consumer.send(told)
    await system.consumer.deliver(envelope)
    [due] = system.bus.take("payment.refund_due")
    assert due.data["reason_code"] == "registration_closed"
    assert due.data["amount"] == {"amount_minor": 90000, "currency": "CNY"}
    views = PaymentViews(system.stores, system.service.sealer)
    [listed] = await views.refunds("to_be_made")
    assert listed["registration_id"] == "reg-1"
    # The coordinator's history says why this money goes back (not a withdrawal).
    lines = [line.what for line in history.payment_lines(await views.case("reg-1"))]
    assert lines == ["payment.requested", "payment.confirmed", "payment.refund_late"]


async def test_the_applicant_saying_they_paid_is_recorded_once_and_confirms_nothing() -> None:
    system = System()
    views = PaymentViews(system.stores, system.service.sealer)
    await system.consumer.send(consent_signed("reg-2"))  # no price: waived, nothing to pay
    with pytest.raises(Conflict):
        await system.service.applicant_says_paid("reg-2")
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    said = await asyncio.gather(*(system.service.applicant_says_paid("reg-1") for _ in range(5)))
    assert sorted(said) == [False, False, False, False, True]
    page = await views.for_applicant("reg-1")
    assert page["status"] == "requested" and page["said_paid_at"] is not None
    assert page["reference"] == request.reference and page["amount_due_minor"] == 90000
    assert system.bus.take("payment.confirmed") == []


async def test_a_coordinator_reads_a_case_as_the_history_page_lines_it_up() -> None:
    system = System()
    views = PaymentViews(system.stores, system.service.sealer)
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    claim = Claim("generic", "generic:tx-4", request.reference, 90000, "CNY")
    await system.service.settle(claim, {"_id": "generic:tx-4", "method": "generic"})
    await system.consumer.send(withdrawn("reg-1", refundable=True))
    case = await views.case("reg-1")
    assert case["status"] == "confirmed" and case["reference"] == request.reference
    lines = [line.what for line in history.payment_lines(case)]
    assert lines == ["payment.requested", "payment.confirmed", "payment.refund_due"]
    with pytest.raises(NotFound):
        await views.case("reg-unknown")


async def test_an_erasure_drops_the_coordinators_notes_and_reasons_keeps_the_accounts() -> None:
    from payments.manual import ManualConfirmations

    system = System()
    await system.consumer.send(signed("reg-1"))
    request = await requested(system, "reg-1")
    manual = ManualConfirmations(system.service)
    mark = await manual.mark_manual(
        reference=request.reference,
        amount_minor=90000,
        currency="CNY",
        evidence="transfer from Lin",
        by="acct_a",
        idempotency_key="key-00000001",
    )
    await manual.decide_manual(
        mark["confirmation_id"], approve=False, by="acct_b", reason="Lin said it bounced"
    )
    before = PaymentViews(system.stores, system.service.sealer)
    (shown,) = (await before.case("reg-1"))["manual"]
    assert (shown["evidence"], shown["why"]) == ("transfer from Lin", "Lin said it bounced")

    await system.consumer.send(
        ev.RegistrationErasureRequested(
            registration_id="reg-1", cohort_id="cohort-1", requested_at=NOW
        )
    )
    (kept,) = (await system.stores.case("reg-1"))["manual"]
    assert (kept["evidence"], kept["why"]) == (None, None)
    assert (kept["status"], kept["amount_minor"], kept["decided_by"]) == (
        "rejected",
        90000,
        "acct_b",
    )


# --- a grant a crash cut in two -------------------------------------------------------------


class Crash(Exception):
    """The process died here (what a kill -9 between two writes leaves behind)."""


async def asked_for_a_scholarship(system: System, rid: str) -> Scholarships:
    await system.consumer.send(
        ev.RegistrationSubmitted(
            registration_id=rid,
            cohort_id="cohort-1",
            program_id="program-1",
            contact=ev.Contact(name="Lin", email="lin@example.org"),
            price=PRICE,
            scholarship_requested=True,
            submitted_at=NOW,
        )
    )
    scholarships = Scholarships(system.service)
    await scholarships.set_budget("cohort-1", 100000, "CNY")
    return scholarships


async def granted_from(system: System) -> dict[str, int]:
    return (await system.stores.budgets.get("cohort-1"))["grants"]


@pytest.mark.parametrize("crash_before_the_case", [True, False])
async def test_a_grant_cut_short_by_a_crash_never_leaks_the_budget(
    crash_before_the_case: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = System()
    scholarships = await asked_for_a_scholarship(system, "reg-1")
    real_decide = system.service.decide

    async def dies(*args, **kwargs):
        if not crash_before_the_case:
            await real_decide(*args, **kwargs)
        raise Crash()

    monkeypatch.setattr(system.service, "decide", dies)
    with pytest.raises(Crash):
        await scholarships.grant("reg-1", 30000, by="coord-1")
    monkeypatch.setattr(system.service, "decide", real_decide)
    assert await granted_from(system) == {"reg-1": 60000}  # reserved, not settled

    # Within the grace the grant may still be on its way: nothing is due yet.
    now = datetime.now(UTC)
    assert await scholarships.reservations_due(now) == []
    later = now + RESERVATION_GRACE + timedelta(seconds=1)
    assert await scholarships.reservations_due(later) == ["cohort-1"]
    # The due work runs once the grace is over (here: the reservation made older).
    past = now - RESERVATION_GRACE - timedelta(seconds=1)
    await system.stores.budgets.collection.update_one(
        {"_id": "cohort-1"}, {"$set": {"reserving": {"reg-1": past}}}
    )
    await scholarships.check_reservations("cohort-1")

    after = await system.stores.budgets.get("cohort-1")
    case = await system.stores.case("reg-1")
    if crash_before_the_case:  # the case was never granted: the reservation goes back
        assert after["grants"] == {} and case["scholarship"]["status"] == "requested"
    else:  # the case was granted: the reservation stands
        assert after["grants"] == {"reg-1": 60000}
        assert case["scholarship"]["status"] == "granted"
    assert after["reserving"] == {} and after["check_at"] is None


async def test_a_grant_that_completes_leaves_nothing_to_check() -> None:
    system = System()
    scholarships = await asked_for_a_scholarship(system, "reg-1")
    await scholarships.grant("reg-1", 30000, by="coord-1")
    budget = await system.stores.budgets.get("cohort-1")
    assert budget["grants"] == {"reg-1": 60000}
    assert budget["reserving"] == {} and budget["check_at"] is None


# --- a granted scholarship follows a move ---------------------------------------------------


def moved(rid: str, to: str = "cohort-2") -> ev.RegistrationMoved:
    return ev.RegistrationMoved(
        registration_id=rid,
        cohort_id=to,
        from_cohort_id="cohort-1",
        program_id="program-1",
        status="pending_decision",
        cohort=ev.CohortRef(cohort_id=to, program_id="program-1", display_name="Circle"),
    )


async def grants(system: System) -> dict[str, dict[str, int]]:
    found = system.stores.budgets.collection.find({})
    return {doc["_id"]: doc["grants"] async for doc in found}


async def test_a_grant_moves_to_the_new_cohorts_budget_and_is_given_back_there() -> None:
    system = System()
    scholarships = await asked_for_a_scholarship(system, "reg-1")
    await scholarships.grant("reg-1", 30000, by="coord-1")
    await scholarships.set_budget("cohort-2", 100000, "CNY")
    envelope = await system.consumer.send(moved("reg-1"))
    await system.consumer.deliver(envelope)  # a redelivery changes nothing
    assert await grants(system) == {"cohort-1": {}, "cohort-2": {"reg-1": 60000}}
    case = await system.stores.case("reg-1")
    assert case["cohort_id"] == "cohort-2" and case["scholarship"]["budget"] == "cohort-2"
    assert case["scholarship"]["amount_due_minor"] == 30000  # what they pay is unchanged

    await system.consumer.send(withdrawn("reg-1", refundable=True))
    assert await grants(system) == {"cohort-1": {}, "cohort-2": {}}


async def test_a_grant_the_new_cohort_cannot_carry_stays_counted_where_it_was() -> None:
    system = System()
    scholarships = await asked_for_a_scholarship(system, "reg-1")
    await scholarships.grant("reg-1", 30000, by="coord-1")
    await scholarships.set_budget("cohort-2", 50000, "CNY")  # less than the 60000 granted
    await system.consumer.send(moved("reg-1"))
    assert await grants(system) == {"cohort-1": {"reg-1": 60000}, "cohort-2": {}}
    case = await system.stores.case("reg-1")
    assert case["cohort_id"] == "cohort-2" and case["scholarship"]["budget"] == "cohort-1"

    await system.consumer.send(withdrawn("reg-1", refundable=True))
    assert await grants(system) == {"cohort-1": {}, "cohort-2": {}}


@pytest.mark.parametrize("dies_in", ["release", "decide"])
async def test_a_move_cut_short_while_carrying_a_grant_is_finished_by_the_redelivery(
    dies_in: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = System()
    scholarships = await asked_for_a_scholarship(system, "reg-1")
    await scholarships.grant("reg-1", 30000, by="coord-1")
    await scholarships.set_budget("cohort-2", 100000, "CNY")
    real = getattr(system.service, dies_in)
    calls = 0

    async def dies(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2 if dies_in == "decide" else calls == 1:  # the carrying step
            raise Crash()
        return await real(*args, **kwargs)

    monkeypatch.setattr(system.service, dies_in, dies)
    envelope = ev.registration_enveloper("holdspace/test")(moved("reg-1"), None)
    with pytest.raises(Crash):
        await system.consumer.deliver(envelope)
    monkeypatch.setattr(system.service, dies_in, real)
    await system.consumer.deliver(envelope)  # not acked: the broker delivers it again
    assert await grants(system) == {"cohort-1": {}, "cohort-2": {"reg-1": 60000}}
    assert (await system.stores.case("reg-1"))["scholarship"]["budget"] == "cohort-2"
