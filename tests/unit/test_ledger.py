"""The seat ledger of one cohort: seats, waitlist, offers, expiries and the state machine."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from registration.domain.ledger import (
    SEAT_STATUSES,
    Entry,
    Happened,
    Ledger,
    LedgerError,
    Status,
    Step,
)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HOLD = timedelta(days=7)
OFFER = timedelta(hours=48)


def make_ledger(capacity: int = 3) -> Ledger:
    return Ledger(capacity=capacity, hold=HOLD, offer=OFFER)


def admit(
    ledger: Ledger,
    rid: str,
    *,
    now: datetime = T0,
    needs_review: bool = True,
    price_minor: int = 90000,
) -> list[Happened]:
    return ledger.admit(
        rid, now=now, needs_review=needs_review, price_minor=price_minor, currency="CNY"
    )


def status(ledger: Ledger, rid: str) -> Status:
    return ledger.get(rid).status


def full_with_waitlist(capacity: int = 2, waiting: int = 3) -> Ledger:
    """s0..s{capacity-1} hold seats (pending_review), w0..w{waiting-1} wait in that order."""
    ledger = make_ledger(capacity)
    for i in range(capacity):
        admit(ledger, f"s{i}")
    for i in range(waiting):
        admit(ledger, f"w{i}", now=T0 + timedelta(minutes=i + 1))
    return ledger


# --- admit, counters, persistence ------------------------------------------------------


def test_admit_fills_capacity_then_waitlists_in_arrival_order() -> None:
    ledger = make_ledger(capacity=2)
    kinds = []
    for i, rid in enumerate(["a", "b", "c", "d", "e"]):
        happened = admit(ledger, rid, now=T0 + timedelta(minutes=i))
        assert len(happened) == 1
        kinds.append(happened[0])

    assert [h.kind for h in kinds] == [
        "pending_review",
        "pending_review",
        "waitlisted",
        "waitlisted",
        "waitlisted",
    ]
    assert [h.position for h in kinds[2:]] == [1, 2, 3]
    assert ledger.waitlist == ["c", "d", "e"]
    assert [ledger.position(r) for r in ["c", "d", "e"]] == [1, 2, 3]
    assert ledger.position("a") is None
    assert status(ledger, "a") == status(ledger, "b") == Status.pending_review
    assert {status(ledger, r) for r in ["c", "d", "e"]} == {Status.waitlisted}
    assert ledger.get("c").expires_at is None
    assert ledger.seats_taken == 2
    assert ledger.seats_left == 0


def test_admit_is_idempotent() -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a")
    admit(ledger, "b")
    before = (dict(ledger.entries), list(ledger.waitlist))

    assert admit(ledger, "a", now=T0 + timedelta(hours=1)) == []
    assert admit(ledger, "b", now=T0 + timedelta(hours=1), needs_review=False) == []
    assert (dict(ledger.entries), list(ledger.waitlist)) == before
    assert ledger.waitlist == ["b"]
    assert ledger.seats_taken == 1


def test_admit_after_close_does_not_readmit() -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a")
    ledger.withdraw("a", now=T0)
    assert admit(ledger, "a") == []
    assert status(ledger, "a") == Status.withdrawn
    assert ledger.seats_taken == 0


def test_seats_taken_and_left() -> None:
    ledger = make_ledger(capacity=3)
    assert (ledger.seats_taken, ledger.seats_left) == (0, 3)
    admit(ledger, "a")
    assert (ledger.seats_taken, ledger.seats_left) == (1, 2)
    admit(ledger, "b", needs_review=False)
    admit(ledger, "c")
    admit(ledger, "d")
    assert (ledger.seats_taken, ledger.seats_left) == (3, 0)
    ledger.reject("a", now=T0, reason=None)  # the seat goes to d
    assert (ledger.seats_taken, ledger.seats_left) == (3, 0)
    ledger.withdraw("b", now=T0)
    assert (ledger.seats_taken, ledger.seats_left) == (2, 1)


def test_seat_statuses() -> None:
    assert SEAT_STATUSES == {
        Status.pending_review,
        Status.approved,
        Status.awaiting_consent,
        Status.awaiting_payment,
        Status.confirmed,
        Status.offered,
    }


def test_to_doc_from_doc_round_trip() -> None:
    ledger = full_with_waitlist(capacity=3, waiting=3)
    ledger.approve("s1", now=T0)
    ledger.consent_signed("s1", now=T0)  # awaiting_payment
    ledger.withdraw("s2", now=T0 + timedelta(hours=1))  # w0 offered
    ledger.reject("w2", now=T0, reason="sealed:xyz")

    doc = ledger.to_doc()
    assert doc["waitlist"] == ["w1"]
    assert doc["seats_taken"] == 3
    assert doc["next_due_at"] == T0 + timedelta(hours=1) + OFFER  # w0's offer ends first
    assert doc["entries"]["w0"]["status"] == "offered"
    assert doc["entries"]["w2"]["reason"] == "sealed:xyz"

    cohort = {
        "capacity": 3,
        "hold_seconds": int(HOLD.total_seconds()),
        "offer_seconds": int(OFFER.total_seconds()),
        **doc,
    }
    back = Ledger.from_doc(cohort)
    assert back.entries == ledger.entries
    assert back.waitlist == ledger.waitlist
    assert (back.capacity, back.hold, back.offer) == (3, HOLD, OFFER)
    assert back.seats_taken == ledger.seats_taken
    assert back.seats_left == ledger.seats_left
    assert back.next_due() == ledger.next_due()
    assert back.to_doc() == doc
    # the loaded waitlist is a copy, not the document's list
    back.waitlist.append("x")
    assert doc["waitlist"] == ["w1"]


def test_entry_doc_round_trip() -> None:
    history = (Step(T0, "approve", Status.awaiting_consent, "coordinator@example.org"),)
    entry = Entry(
        Status.awaiting_payment,
        T0,
        True,
        500,
        "CNY",
        expires_at=T0 + HOLD,
        reason="r",
        history=history,
    )
    assert Entry.from_doc(entry.to_doc()) == entry
    assert entry.to_doc()["status"] == "awaiting_payment"
    assert entry.holds_seat
    assert not Entry(Status.waitlisted, T0, True, 500, "CNY").holds_seat


def test_get_unknown_registration_raises() -> None:
    with pytest.raises(LedgerError):
        make_ledger().get("nope")
    with pytest.raises(LedgerError):
        make_ledger().withdraw("nope", now=T0)


# --- review ------------------------------------------------------------------------------


def test_needs_review_goes_to_pending_review_with_hold() -> None:
    ledger = make_ledger()
    (h,) = admit(ledger, "a", needs_review=True)
    entry = ledger.get("a")
    assert entry.status == Status.pending_review
    assert entry.expires_at == T0 + HOLD
    assert entry.since == T0
    assert h == Happened("pending_review", "a", expires_at=T0 + HOLD)


def test_no_review_goes_to_awaiting_consent_and_reports_approved() -> None:
    ledger = make_ledger()
    (h,) = admit(ledger, "a", needs_review=False)
    assert status(ledger, "a") == Status.awaiting_consent
    assert ledger.get("a").expires_at == T0 + HOLD
    assert h.kind == "approved"
    assert h.registration_id == "a"
    assert h.expires_at == T0 + HOLD


def test_approve_from_pending_review() -> None:
    ledger = make_ledger()
    admit(ledger, "a")
    (h,) = ledger.approve("a", now=T0 + timedelta(hours=1))
    assert status(ledger, "a") == Status.awaiting_consent
    assert h.kind == "approved"
    assert ledger.seats_taken == 1


@pytest.mark.parametrize(
    "setup",
    ["no_review", "waitlisted", "offered", "confirmed", "awaiting_payment", "rejected"],
)
def test_approve_only_from_pending_review(setup: str) -> None:
    ledger = make_ledger(capacity=1)
    if setup == "no_review":
        admit(ledger, "x", needs_review=False)
    elif setup == "waitlisted":
        admit(ledger, "s")
        admit(ledger, "x")
    elif setup == "offered":
        admit(ledger, "s")
        admit(ledger, "x")
        ledger.withdraw("s", now=T0)
    elif setup == "confirmed":
        admit(ledger, "x", needs_review=False, price_minor=0)
        ledger.consent_signed("x", now=T0)
    elif setup == "awaiting_payment":
        admit(ledger, "x", needs_review=False)
        ledger.consent_signed("x", now=T0)
    elif setup == "rejected":
        admit(ledger, "x")
        ledger.reject("x", now=T0, reason=None)
    before = ledger.get("x")
    with pytest.raises(LedgerError):
        ledger.approve("x", now=T0)
    assert ledger.get("x") == before


def test_approve_twice_raises() -> None:
    ledger = make_ledger()
    admit(ledger, "a")
    ledger.approve("a", now=T0)
    with pytest.raises(LedgerError):
        ledger.approve("a", now=T0)


def test_reject_frees_the_seat_and_offers_it_to_the_head_of_the_waitlist() -> None:
    ledger = full_with_waitlist(capacity=2, waiting=3)
    now = T0 + timedelta(hours=5)
    happened = ledger.reject("s0", now=now, reason="sealed")

    assert happened[0] == Happened("rejected", "s0", previous=Status.pending_review)
    assert happened[1:] == [
        Happened("seat_offered", "w0", previous=Status.waitlisted, expires_at=now + OFFER)
    ]
    rejected = ledger.get("s0")
    assert rejected.status == Status.rejected
    assert rejected.expires_at is None
    assert rejected.reason == "sealed"
    offered = ledger.get("w0")
    assert offered.status == Status.offered
    assert offered.expires_at == now + OFFER
    assert offered.since == now
    assert ledger.waitlist == ["w1", "w2"]
    assert ledger.position("w0") is None
    assert ledger.position("w1") == 1
    assert ledger.position("w2") == 2
    assert ledger.seats_taken == 2


def test_reject_without_waitlist_just_frees_the_seat() -> None:
    ledger = make_ledger(capacity=2)
    admit(ledger, "a")
    happened = ledger.reject("a", now=T0, reason=None)
    assert [h.kind for h in happened] == ["rejected"]
    assert ledger.seats_taken == 0
    assert ledger.seats_left == 2


@pytest.mark.parametrize("setup", ["awaiting_consent", "confirmed", "withdrawn"])
def test_reject_refused_outside_review(setup: str) -> None:
    ledger = make_ledger()
    admit(ledger, "x", needs_review=setup != "withdrawn", price_minor=0)
    if setup in ("awaiting_consent", "confirmed"):
        ledger.approve("x", now=T0)
    if setup == "confirmed":
        ledger.consent_signed("x", now=T0)
    if setup == "withdrawn":
        ledger.withdraw("x", now=T0)
    before = ledger.get("x")
    with pytest.raises(LedgerError):
        ledger.reject("x", now=T0, reason=None)
    assert ledger.get("x") == before


# --- withdraw ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    ["pending_review", "awaiting_consent", "awaiting_payment", "confirmed", "offered"],
)
def test_withdraw_from_a_seat_state_offers_the_seat(setup: str) -> None:
    ledger = full_with_waitlist(capacity=2, waiting=2)
    rid = "s0"
    if setup != "pending_review":
        ledger.approve("s0", now=T0)
    if setup in ("awaiting_payment", "confirmed"):
        ledger.consent_signed("s0", now=T0)
    if setup == "confirmed":
        ledger.payment_settled("s0", now=T0)
    if setup == "offered":
        ledger.withdraw("s1", now=T0)  # w0 is offered
        rid = "w0"
    previous = status(ledger, rid)
    assert previous == Status(setup)

    now = T0 + timedelta(hours=2)
    happened = ledger.withdraw(rid, now=now)
    assert happened[0] == Happened("withdrawn", rid, previous=previous)
    head = "w1" if setup == "offered" else "w0"
    assert happened[1] == Happened(
        "seat_offered", head, previous=Status.waitlisted, expires_at=now + OFFER
    )
    assert len(happened) == 2
    assert status(ledger, rid) == Status.withdrawn
    assert ledger.get(rid).expires_at is None
    assert status(ledger, head) == Status.offered
    assert head not in ledger.waitlist


def test_no_offer_while_the_cohort_is_still_full() -> None:
    # a document loaded with more seat holders than its capacity (e.g. capacity lowered)
    ledger = make_ledger(capacity=1)
    ledger.entries["a"] = Entry(Status.pending_review, T0, True, 0, "CNY", expires_at=T0 + HOLD)
    ledger.entries["b"] = Entry(Status.pending_review, T0, True, 0, "CNY", expires_at=T0 + HOLD)
    admit(ledger, "w")
    assert ledger.waitlist == ["w"]

    assert [h.kind for h in ledger.withdraw("a", now=T0)] == ["withdrawn"]
    assert status(ledger, "w") == Status.waitlisted
    assert ledger.seats_taken == 1
    happened = ledger.withdraw("b", now=T0)
    assert [h.kind for h in happened] == ["withdrawn", "seat_offered"]
    assert status(ledger, "w") == Status.offered


def test_withdraw_waitlisted_removes_it_without_offering() -> None:
    ledger = full_with_waitlist(capacity=2, waiting=3)
    happened = ledger.withdraw("w1", now=T0)
    assert happened == [Happened("withdrawn", "w1", previous=Status.waitlisted)]
    assert ledger.waitlist == ["w0", "w2"]
    assert ledger.position("w2") == 2
    assert status(ledger, "w0") == Status.waitlisted
    assert ledger.seats_taken == 2


def test_withdraw_twice_raises() -> None:
    ledger = full_with_waitlist(capacity=1, waiting=2)
    ledger.withdraw("s0", now=T0)
    with pytest.raises(LedgerError):
        ledger.withdraw("s0", now=T0)
    # the second attempt did not offer another seat
    assert status(ledger, "w0") == Status.offered
    assert status(ledger, "w1") == Status.waitlisted
    assert ledger.waitlist == ["w1"]

    ledger.withdraw("w1", now=T0)
    with pytest.raises(LedgerError):
        ledger.withdraw("w1", now=T0)


# --- offers ------------------------------------------------------------------------------


def offered_ledger(needs_review: bool) -> Ledger:
    ledger = make_ledger(capacity=1)
    admit(ledger, "s")
    admit(ledger, "w", needs_review=needs_review)
    admit(ledger, "w2")
    ledger.withdraw("s", now=T0)
    assert status(ledger, "w") == Status.offered
    return ledger


@pytest.mark.parametrize(
    ("needs_review", "expected", "kind"),
    [(True, Status.pending_review, "pending_review"), (False, Status.awaiting_consent, "approved")],
)
def test_accept_offer(needs_review: bool, expected: Status, kind: str) -> None:
    ledger = offered_ledger(needs_review)
    now = T0 + timedelta(hours=3)
    (h,) = ledger.accept_offer("w", now=now)
    entry = ledger.get("w")
    assert entry.status == expected
    assert entry.expires_at == now + HOLD
    assert entry.since == now
    assert h == Happened(kind, "w", expires_at=now + HOLD)
    assert ledger.seats_taken == 1
    assert ledger.waitlist == ["w2"]


def test_accept_offer_after_expiry_raises() -> None:
    ledger = offered_ledger(True)
    with pytest.raises(LedgerError):
        ledger.accept_offer("w", now=T0 + OFFER + timedelta(seconds=1))
    with pytest.raises(LedgerError):
        ledger.accept_offer("w", now=T0 + OFFER)  # the expiry instant is already too late
    assert status(ledger, "w") == Status.offered
    # just before the expiry it is still accepted
    ledger.accept_offer("w", now=T0 + OFFER - timedelta(seconds=1))
    assert status(ledger, "w") == Status.pending_review


@pytest.mark.parametrize("who", ["s", "w2"])
def test_accept_offer_when_not_offered_raises(who: str) -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "s")
    admit(ledger, "w2")
    with pytest.raises(LedgerError):
        ledger.accept_offer(who, now=T0)
    assert ledger.waitlist == ["w2"]


def test_accept_offer_twice_raises() -> None:
    ledger = offered_ledger(False)
    ledger.accept_offer("w", now=T0)
    with pytest.raises(LedgerError):
        ledger.accept_offer("w", now=T0)


# --- expiry ------------------------------------------------------------------------------


def test_expire_due_expires_holds_and_offers_their_seats_down_the_waitlist() -> None:
    ledger = make_ledger(capacity=2)
    admit(ledger, "a", now=T0)
    admit(ledger, "b", now=T0 + timedelta(hours=1), needs_review=False)
    admit(ledger, "w0", now=T0 + timedelta(hours=2))
    admit(ledger, "w1", now=T0 + timedelta(hours=3))
    admit(ledger, "w2", now=T0 + timedelta(hours=4))

    assert ledger.expire_due(now=T0 + HOLD - timedelta(seconds=1)) == []
    assert status(ledger, "a") == Status.pending_review

    now = T0 + HOLD + timedelta(hours=1)  # both holds have passed
    happened = ledger.expire_due(now=now)
    assert happened == [
        Happened("expired", "a", previous=Status.pending_review),
        Happened("seat_offered", "w0", previous=Status.waitlisted, expires_at=now + OFFER),
        Happened("expired", "b", previous=Status.awaiting_consent),
        Happened("seat_offered", "w1", previous=Status.waitlisted, expires_at=now + OFFER),
    ]
    assert status(ledger, "a") == status(ledger, "b") == Status.expired
    assert ledger.get("a").expires_at is None
    assert ledger.waitlist == ["w2"]
    assert ledger.position("w2") == 1
    assert ledger.seats_taken == 2
    # running it again at the same moment changes nothing
    assert ledger.expire_due(now=now) == []


def test_expired_offer_passes_to_the_next_person() -> None:
    ledger = offered_ledger(True)
    offer_end = T0 + OFFER
    assert ledger.expire_due(now=offer_end - timedelta(seconds=1)) == []
    happened = ledger.expire_due(now=offer_end + timedelta(minutes=5))
    now = offer_end + timedelta(minutes=5)
    assert happened == [
        Happened("expired", "w", previous=Status.offered),
        Happened("seat_offered", "w2", previous=Status.waitlisted, expires_at=now + OFFER),
    ]
    assert status(ledger, "w") == Status.expired
    assert ledger.waitlist == []
    with pytest.raises(LedgerError):
        ledger.accept_offer("w", now=now)


def test_confirmed_never_expires() -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a", needs_review=False, price_minor=0)
    admit(ledger, "w")
    ledger.consent_signed("a", now=T0)
    assert status(ledger, "a") == Status.confirmed
    assert ledger.get("a").expires_at is None
    assert ledger.expire_due(now=T0 + timedelta(days=3650)) == []
    assert status(ledger, "a") == Status.confirmed
    assert ledger.waitlist == ["w"]
    assert ledger.next_due() is None


def test_confirmed_with_a_stale_expiry_never_expires() -> None:
    # even if an old document still carries an expiry on a confirmed entry
    ledger = make_ledger(capacity=1)
    ledger.entries["a"] = Entry(Status.confirmed, T0, False, 0, "CNY", expires_at=T0)
    assert ledger.expire_due(now=T0 + timedelta(days=1)) == []
    assert status(ledger, "a") == Status.confirmed


def test_expiry_exactly_at_now_is_due() -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a")
    admit(ledger, "w")
    happened = ledger.expire_due(now=T0 + HOLD)
    assert [(h.kind, h.registration_id) for h in happened] == [
        ("expired", "a"),
        ("seat_offered", "w"),
    ]


def test_waitlisted_entries_never_expire() -> None:
    ledger = full_with_waitlist(capacity=1, waiting=2)
    ledger.approve("s0", now=T0)
    ledger.consent_signed("s0", now=T0)
    ledger.payment_settled("s0", now=T0)
    assert ledger.expire_due(now=T0 + timedelta(days=365)) == []
    assert ledger.waitlist == ["w0", "w1"]


def test_next_due_is_the_earliest_pending_expiry() -> None:
    ledger = make_ledger(capacity=3)
    assert ledger.next_due() is None
    admit(ledger, "a", now=T0 + timedelta(hours=5))
    admit(ledger, "b", now=T0 + timedelta(hours=1))
    admit(ledger, "c", now=T0 + timedelta(hours=3))
    admit(ledger, "w", now=T0)  # waitlisted: no expiry
    assert ledger.next_due() == T0 + timedelta(hours=1) + HOLD

    # b leaves; its seat is offered to w, whose offer ends before every hold
    ledger.withdraw("b", now=T0 + timedelta(hours=6))
    assert ledger.next_due() == T0 + timedelta(hours=6) + OFFER
    ledger.accept_offer("w", now=T0 + timedelta(hours=7))
    assert ledger.next_due() == T0 + timedelta(hours=3) + HOLD
    ledger.withdraw("c", now=T0 + timedelta(hours=8))
    assert ledger.next_due() == T0 + timedelta(hours=5) + HOLD
    assert ledger.to_doc()["next_due_at"] == ledger.next_due()


# --- consent and payment -----------------------------------------------------------------


def test_consent_with_a_price_waits_for_payment_then_payment_confirms() -> None:
    ledger = make_ledger()
    admit(ledger, "a", needs_review=False, price_minor=90000)
    (h,) = ledger.consent_signed("a", now=T0)
    assert h == Happened("awaiting_payment", "a")
    assert status(ledger, "a") == Status.awaiting_payment
    assert ledger.get("a").expires_at == T0 + HOLD  # the hold still runs

    (h,) = ledger.payment_settled("a", now=T0)
    assert h == Happened("confirmed", "a", previous=Status.awaiting_payment)
    assert status(ledger, "a") == Status.confirmed
    assert ledger.get("a").expires_at is None
    assert ledger.seats_taken == 1
    # repeated notices change nothing
    assert ledger.payment_settled("a", now=T0) == []
    assert ledger.consent_signed("a", now=T0) == []
    assert status(ledger, "a") == Status.confirmed


def test_consent_when_free_confirms() -> None:
    ledger = make_ledger()
    admit(ledger, "a", needs_review=False, price_minor=0)
    (h,) = ledger.consent_signed("a", now=T0)
    assert h == Happened("confirmed", "a", previous=Status.awaiting_consent)
    assert status(ledger, "a") == Status.confirmed
    assert ledger.get("a").expires_at is None


@pytest.mark.parametrize("price", [0, 90000])
def test_consent_and_payment_do_not_move_a_registration_under_review(price: int) -> None:
    ledger = make_ledger()
    admit(ledger, "a", needs_review=True, price_minor=price)
    before = ledger.get("a")
    assert ledger.consent_signed("a", now=T0) == []
    assert ledger.payment_settled("a", now=T0) == []
    assert ledger.get("a") == before
    assert status(ledger, "a") == Status.pending_review
    # only approval moves it on
    ledger.approve("a", now=T0)
    ledger.consent_signed("a", now=T0)
    ledger.payment_settled("a", now=T0)
    assert status(ledger, "a") == Status.confirmed


@pytest.mark.parametrize("setup", ["waitlisted", "offered", "withdrawn", "expired"])
def test_consent_and_payment_do_not_move_other_states(setup: str) -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "s", needs_review=False)
    admit(ledger, "x", needs_review=False, price_minor=0)
    if setup == "offered":
        ledger.withdraw("s", now=T0)
    elif setup == "withdrawn":
        ledger.withdraw("x", now=T0)
    elif setup == "expired":
        ledger.withdraw("s", now=T0)
        ledger.expire_due(now=T0 + OFFER)
    assert status(ledger, "x") == Status(setup)
    before = ledger.get("x")
    assert ledger.consent_signed("x", now=T0 + OFFER) == []
    assert ledger.payment_settled("x", now=T0 + OFFER) == []
    assert ledger.get("x") == before


@pytest.mark.parametrize("setup", ["withdrawn", "expired", "rejected"])
def test_money_for_an_ended_registration_is_owed_back_and_takes_no_seat(setup: str) -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "x", needs_review=setup == "rejected", price_minor=90000)
    if setup == "withdrawn":
        ledger.withdraw("x", now=T0)
    elif setup == "expired":
        ledger.expire_due(now=T0 + HOLD)
    else:
        ledger.reject("x", now=T0, reason=None)
    before = ledger.get("x")
    (h,) = ledger.payment_settled("x", now=T0 + HOLD, paid=True)
    assert h == Happened("paid_after_close", "x", previous=Status(setup))
    assert ledger.get("x") == before and ledger.seats_taken == 0
    assert ledger.payment_settled("x", now=T0 + HOLD) == []  # a waiver owes nothing


# --- lapse -------------------------------------------------------------------------------


def confirmed_with_waitlist() -> Ledger:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a", needs_review=False, price_minor=0)
    admit(ledger, "w")
    ledger.consent_signed("a", now=T0)
    assert status(ledger, "a") == Status.confirmed
    return ledger


def test_lapse_expiry_after_confirmation_changes_nothing() -> None:
    ledger = confirmed_with_waitlist()
    before = (dict(ledger.entries), list(ledger.waitlist))
    assert ledger.lapse("a", now=T0 + timedelta(days=1), withdrawn=False) == []
    assert (dict(ledger.entries), list(ledger.waitlist)) == before


def test_lapse_withdrawal_after_confirmation_frees_the_seat() -> None:
    ledger = confirmed_with_waitlist()
    now = T0 + timedelta(days=1)
    happened = ledger.lapse("a", now=now, withdrawn=True)
    assert happened == [
        Happened("withdrawn", "a", previous=Status.confirmed),
        Happened("seat_offered", "w", previous=Status.waitlisted, expires_at=now + OFFER),
    ]
    assert status(ledger, "a") == Status.withdrawn
    assert status(ledger, "w") == Status.offered
    assert ledger.seats_taken == 1


@pytest.mark.parametrize(
    ("withdrawn", "final"), [(True, Status.withdrawn), (False, Status.expired)]
)
def test_lapse_from_awaiting_payment(withdrawn: bool, final: Status) -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a", needs_review=False)
    admit(ledger, "w")
    ledger.consent_signed("a", now=T0)
    happened = ledger.lapse("a", now=T0, withdrawn=withdrawn)
    assert happened[0] == Happened(str(final), "a", previous=Status.awaiting_payment)
    assert happened[1].kind == "seat_offered"
    assert status(ledger, "a") == final
    # a closed registration does not lapse again
    assert ledger.lapse("a", now=T0, withdrawn=True) == []
    assert status(ledger, "w") == Status.offered


# --- invariants under a random sequence of calls -------------------------------------------

ALLOWED = {
    Status.pending_review: {
        Status.awaiting_consent,
        Status.rejected,
        Status.withdrawn,
        Status.expired,
    },
    Status.awaiting_consent: {
        Status.awaiting_payment,
        Status.confirmed,
        Status.withdrawn,
        Status.expired,
    },
    Status.awaiting_payment: {Status.confirmed, Status.withdrawn, Status.expired},
    Status.confirmed: {Status.withdrawn},
    # the code also lets a coordinator reject a waitlisted registration
    Status.waitlisted: {Status.offered, Status.withdrawn, Status.rejected},
    Status.offered: {
        Status.pending_review,
        Status.awaiting_consent,
        Status.withdrawn,
        Status.expired,
    },
    Status.rejected: set(),
    Status.withdrawn: set(),
    Status.expired: set(),
}


def check_invariants(ledger: Ledger, happened: list[Happened], before: dict[str, Status]) -> None:
    assert ledger.seats_taken <= ledger.capacity
    assert len(ledger.waitlist) == len(set(ledger.waitlist)), ledger.waitlist
    waiting = {rid for rid, e in ledger.entries.items() if e.status == Status.waitlisted}
    assert set(ledger.waitlist) == waiting
    # nobody waits while a seat is free: a freed seat always goes down the waitlist
    assert ledger.seats_left == 0 or not ledger.waitlist

    for h in happened:
        if h.kind == "seat_offered":
            assert h.previous == Status.waitlisted, h
            assert before.get(h.registration_id) != Status.confirmed, h
            assert ledger.get(h.registration_id).status == Status.offered, h

    for rid, entry in ledger.entries.items():
        if entry.status == Status.confirmed:
            assert entry.expires_at is None
        elif entry.holds_seat:
            assert entry.expires_at is not None
        else:
            assert entry.expires_at is None
        old = before.get(rid)
        if old is not None and old != entry.status:
            assert entry.status in ALLOWED[old], (rid, old, entry.status)
        if old is None:
            assert entry.status in (
                Status.pending_review,
                Status.awaiting_consent,
                Status.waitlisted,
            )


ACTIONS = [
    "admit",
    "approve",
    "reject",
    "withdraw",
    "accept_offer",
    "expire_due",
    "consent_signed",
    "payment_settled",
]
WEIGHTS = [4, 2, 1, 1, 3, 1, 2, 2]
FITS = {
    "approve": {Status.pending_review},
    "reject": {Status.pending_review},
    "withdraw": SEAT_STATUSES | {Status.waitlisted},
    "accept_offer": {Status.offered},
    "consent_signed": {Status.awaiting_consent},
    "payment_settled": {Status.awaiting_payment},
}


def test_random_sequences_keep_the_invariants() -> None:
    rng = random.Random(1234)
    ids = [f"r{i:02d}" for i in range(40)]
    now = T0
    counts: dict[str, int] = {}
    seen: set[Status] = set()
    offers = 0

    for step in range(4000):
        if step % 250 == 0:  # a fresh cohort now and then, so ids do not all end up closed
            ledger = Ledger(capacity=8, hold=timedelta(hours=6), offer=timedelta(hours=2))
        now += timedelta(minutes=rng.randrange(0, 20))
        action = rng.choices(ACTIONS, weights=WEIGHTS)[0]
        # mostly pick someone the call applies to, sometimes anyone (to hit the refusals)
        fitting = [r for r, e in ledger.entries.items() if e.status in FITS.get(action, ())]
        rid = rng.choice(fitting) if fitting and rng.random() < 0.7 else rng.choice(ids)
        before = {r: e.status for r, e in ledger.entries.items()}
        seats_before = ledger.seats_taken
        try:
            if action == "admit":
                happened = ledger.admit(
                    rid,
                    now=now,
                    needs_review=rng.random() < 0.5,
                    price_minor=rng.choice([0, 90000]),
                    currency="CNY",
                )
            elif action == "reject":
                happened = ledger.reject(rid, now=now, reason=None)
            elif action == "expire_due":
                happened = ledger.expire_due(now=now)
            else:
                happened = getattr(ledger, action)(rid, now=now)
        except LedgerError:
            assert {r: e.status for r, e in ledger.entries.items()} == before
            assert ledger.seats_taken == seats_before
            happened = []
            counts["error"] = counts.get("error", 0) + 1
        counts[action] = counts.get(action, 0) + 1
        offers += sum(1 for h in happened if h.kind == "seat_offered")
        check_invariants(ledger, happened, before)
        seen |= {e.status for e in ledger.entries.values()}

    # the walk really exercised the machine
    assert offers > 50
    assert counts["error"] > 100
    assert seen >= {
        Status.pending_review,
        Status.awaiting_consent,
        Status.awaiting_payment,
        Status.confirmed,
        Status.waitlisted,
        Status.offered,
        Status.rejected,
        Status.withdrawn,
        Status.expired,
    }


def test_the_codec_parses_only_the_entries_that_changed_since_it_last_saw_the_cohort() -> None:
    from registration.domain.ledger import LedgerCodec

    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    ledger = Ledger(capacity=2, hold=timedelta(days=1), offer=timedelta(hours=1))
    for n in range(5):
        ledger.admit(f"r{n}", now=now, needs_review=False, price_minor=1, currency="CNY")
    settings = {"_id": "c1", "capacity": 2, "hold_seconds": 86400, "offer_seconds": 3600}
    doc = {**settings, **ledger.to_doc()}
    codec = LedgerCodec()
    first = codec.load(doc)
    again = codec.load(doc)
    assert all(again.entries[r] is first.entries[r] for r in first.entries), "not parsed again"
    assert again == first == Ledger.from_doc(doc)

    # As the store hands it over after a write: a new map, one entry new, the rest shared.
    changed = {
        **doc,
        "entries": {**doc["entries"], "r4": {**doc["entries"]["r4"], "status": "withdrawn"}},
    }
    after = codec.load(changed)
    assert (
        after.entries["r4"].status == "withdrawn" and after.entries["r4"] is not first.entries["r4"]
    )
    assert all(after.entries[r] is first.entries[r] for r in ("r0", "r1", "r2", "r3"))
    # An equal entry that is another object is parsed: identity, not equality, is trusted.
    copied = {**doc, "entries": {r: dict(e) for r, e in doc["entries"].items()}}
    assert all(codec.load(copied).entries[r] is not first.entries[r] for r in first.entries)
    # Another cohort's document is parsed on its own.
    other = codec.load({**doc, "_id": "c2"})
    assert other == first and other.entries["r0"] is not first.entries["r0"]


def test_a_coordinators_reason_is_kept_on_their_step_only_and_survives_the_document() -> None:
    ledger = make_ledger(capacity=1)
    admit(ledger, "a")
    admit(ledger, "b")  # waitlisted behind a's seat
    ledger.approve("a", now=T0)
    ledger.record(
        [Happened("approved", "a")],
        now=T0,
        cause="approve",
        subject="a",
        by="acct_1",
        why="sealed-token",
    )
    freed = ledger.withdraw("a", now=T0 + HOLD / 2)
    ledger.record(freed, now=T0 + HOLD / 2, cause="withdraw", subject="a", by="applicant")
    (approved,) = [s for s in ledger.get("a").history if s.cause == "approve"]
    assert (approved.by, approved.why) == ("acct_1", "sealed-token")
    (offered,) = ledger.get("b").history  # what followed for another is nobody's words
    assert (offered.cause, offered.by, offered.why) == ("seat_offered", None, None)
    assert "why" not in offered.to_doc()
    assert Step.from_doc(approved.to_doc()) == approved


# Matrix row 12, stateful: Hypothesis drives one cohort of 3 seats through any sequence of
# the ledger's calls for a dozen applicants, with time passing, and checks every invariant
# after every step (seats never past capacity, the waitlist exactly the waitlisted, every
# transition allowed, a refused call changing nothing). Hypothesis shrinks what it finds.
LEDGER_IDS = [f"r{i:02d}" for i in range(12)]
RID = st.sampled_from(LEDGER_IDS)


class LedgerMachine(RuleBasedStateMachine):
    steps = 0

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(capacity=3, hold=timedelta(hours=6), offer=timedelta(hours=2))
        self.now = T0

    def _apply(self, call: Callable[[], list[Happened]]) -> None:
        before = {r: e.status for r, e in self.ledger.entries.items()}
        seats_before = self.ledger.seats_taken
        try:
            happened = call()
        except LedgerError:
            assert {r: e.status for r, e in self.ledger.entries.items()} == before
            assert self.ledger.seats_taken == seats_before
            happened = []
        check_invariants(self.ledger, happened, before)
        LedgerMachine.steps += 1

    @rule(rid=RID, needs_review=st.booleans(), price=st.sampled_from([0, 90000]))
    def admit(self, rid: str, needs_review: bool, price: int) -> None:
        self._apply(
            lambda: self.ledger.admit(
                rid, now=self.now, needs_review=needs_review, price_minor=price, currency="CNY"
            )
        )

    @rule(
        rid=RID,
        action=st.sampled_from(
            ["approve", "withdraw", "accept_offer", "consent_signed", "payment_settled"]
        ),
    )
    def act(self, rid: str, action: str) -> None:
        self._apply(lambda: getattr(self.ledger, action)(rid, now=self.now))

    @rule(rid=RID)
    def reject(self, rid: str) -> None:
        self._apply(lambda: self.ledger.reject(rid, now=self.now, reason=None))

    @rule(minutes=st.integers(min_value=0, max_value=600))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self._apply(lambda: self.ledger.expire_due(now=self.now))


def test_any_sequence_of_ledger_calls_keeps_the_invariants() -> None:
    LedgerMachine.steps = 0
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(max_examples=40, stateful_step_count=50, deadline=None, database=None),
    )
    assert LedgerMachine.steps >= 1000, LedgerMachine.steps
