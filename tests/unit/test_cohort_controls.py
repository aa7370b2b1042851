"""A coordinator's changes to a whole cohort (registration/domain/controls.py): cancel
it, change its capacity, close or reopen registration, change its sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from registration.domain.controls import (
    cancel,
    change_sessions,
    resize,
    set_registration_open,
)
from registration.domain.events import event_payloads
from registration.domain.ledger import LedgerError, Status

from shared import events as ev
from tests.unit.test_composition import T0, cohort_with
from tests.unit.test_intake import program

LATER = T0 + timedelta(hours=1)


def full_cohort():
    """Capacity 3: a confirmed place, one awaiting payment, one in review, two waiting
    (w1 first) and one rejected."""
    cohort, ledger = cohort_with({"a": "confirmed", "b": "awaiting_payment", "c": "pending_review"})
    for rid in ("w1", "w2", "x"):
        ledger.admit(rid, now=T0, needs_review=True, price_minor=90000, currency="CNY")
    ledger.reject("x", now=T0, reason=None)
    cohort["sessions"] = [
        {
            "starts_at": T0 + timedelta(days=10),
            "ends_at": T0 + timedelta(days=10, hours=1),
            "timezone": "Asia/Shanghai",
        }
    ]
    return cohort, ledger


@pytest.mark.parametrize(("policy", "refunded"), [("refundable", True), ("no_refund", False)])
def test_cancelling_ends_everyone_still_in_and_offers_no_seat(policy, refunded) -> None:
    cohort, ledger = full_cohort()
    change = cancel(cohort, ledger, LATER, "coord-1")
    assert change is not None
    ended = {h.registration_id: h.previous for h in change.happened}
    assert ended == {
        "a": Status.confirmed,
        "b": Status.awaiting_payment,
        "c": Status.pending_review,
        "w1": Status.waitlisted,
        "w2": Status.waitlisted,
    }
    assert {h.kind for h in change.happened} == {"cancelled"}  # no seat_offered among them
    assert ledger.waitlist == [] and ledger.seats_taken == 0
    assert ledger.get("x").status == Status.rejected  # already closed: untouched
    assert change.stored["registration_closed"] is True
    assert change.stored["cancelled"] == {"at": LATER, "by": "coord-1"}
    assert [type(e) for e in change.cohort_events] == [ev.CohortCancelled]

    spec = program(cancellation_refund=policy, refund_policy="no_refund")
    events = event_payloads(change.happened, cohort, "prg1", spec, ledger, LATER)
    withdrawn = [e for e in events if isinstance(e, ev.RegistrationWithdrawn)]
    assert len(withdrawn) == 5
    assert all(e.cohort_cancelled and e.refundable is refunded for e in withdrawn)
    cancelled = [e.registration_id for e in events if isinstance(e, ev.EnrollmentCancelled)]
    assert cancelled == ["a"]  # public: only the confirmed enrollment ended


def test_a_cancelled_cohort_changes_no_more() -> None:
    cohort, ledger = full_cohort()
    change = cancel(cohort, ledger, LATER, "coord-1")
    assert change is not None
    cohort.update(change.stored)
    assert cancel(cohort, ledger, LATER, "coord-1") is None  # again: nothing twice
    with pytest.raises(LedgerError):
        resize(cohort, ledger, 5, LATER)
    with pytest.raises(LedgerError):
        set_registration_open(cohort, True, LATER)
    with pytest.raises(LedgerError):
        change_sessions(cohort, cohort["sessions"], LATER)


def test_new_seats_go_down_the_waitlist_in_order() -> None:
    cohort, ledger = full_cohort()
    change = resize(cohort, ledger, 4, LATER)
    assert change is not None
    assert [(h.kind, h.registration_id) for h in change.happened] == [("seat_offered", "w1")]
    assert ledger.get("w1").status == Status.offered
    assert ledger.get("w1").expires_at == LATER + ledger.offer
    assert ledger.waitlist == ["w2"]
    assert change.stored == {"capacity": 4}
    (event,) = change.cohort_events
    assert isinstance(event, ev.CohortCapacityChanged) and event.capacity == 4
    events = event_payloads(change.happened, cohort, "prg1", program(), ledger, LATER)
    assert [type(e) for e in events] == [ev.RegistrationSeatOffered]

    change = resize(cohort, ledger, 8, LATER)
    assert change is not None
    assert [h.registration_id for h in change.happened] == ["w2"]
    assert ledger.waitlist == []


def test_capacity_never_goes_below_the_seats_held_and_the_same_changes_nothing() -> None:
    cohort, ledger = full_cohort()
    assert resize(cohort, ledger, 3, LATER) is None
    with pytest.raises(LedgerError, match="3 seats"):
        resize(cohort, ledger, 2, LATER)
    assert ledger.capacity == 3


def test_registration_closes_early_and_reopens_once_each() -> None:
    cohort, _ = full_cohort()
    assert set_registration_open(cohort, True, LATER) is None  # it is open
    closed = set_registration_open(cohort, False, LATER)
    assert closed is not None and closed.stored == {"registration_closed": True}
    assert [type(e) for e in closed.cohort_events] == [ev.CohortRegistrationClosed]
    cohort.update(closed.stored)
    assert set_registration_open(cohort, False, LATER) is None
    reopened = set_registration_open(cohort, True, LATER)
    assert reopened is not None and reopened.stored == {"registration_closed": False}
    assert [type(e) for e in reopened.cohort_events] == [ev.CohortRegistrationReopened]


def test_changed_sessions_raise_the_calendar_sequence_and_the_same_ones_do_not() -> None:
    cohort, _ = full_cohort()
    assert change_sessions(cohort, list(cohort["sessions"]), LATER) is None
    moved = [
        {
            "starts_at": T0 + timedelta(days=12),
            "ends_at": T0 + timedelta(days=12, hours=1),
            "timezone": "Asia/Shanghai",
        },
        {
            "starts_at": T0 + timedelta(days=11),
            "ends_at": T0 + timedelta(days=11, hours=1),
            "timezone": "Asia/Shanghai",
        },
    ]
    change = change_sessions(cohort, moved, LATER)
    assert change is not None
    assert change.stored["sessions_sequence"] == 1
    assert [s["starts_at"] for s in change.stored["sessions"]] == [
        T0 + timedelta(days=11),
        T0 + timedelta(days=12),
    ]  # in time order, as the calendar numbers them
    (event,) = change.cohort_events
    assert isinstance(event, ev.CohortSessionsChanged) and event.sequence == 1
    assert len(event.sessions) == 2
    cohort.update(change.stored)
    again = change_sessions(cohort, moved[:1], LATER)
    assert again is not None and again.stored["sessions_sequence"] == 2
