"""A cohort's gender make-up (registration/domain/composition.py): who is told, the
withdrawal window, and the refund a withdrawal within it gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from registration.domain.composition import (
    Composition,
    latecomer,
    notice_for,
    set_composition,
    wish_met,
    withdrawal_refundable,
)
from registration.domain.events import event_payloads
from registration.domain.ledger import Ledger, Status

from shared import events as ev
from tests.unit.test_intake import program

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def cohort_with(statuses: dict[str, str]) -> tuple[dict[str, Any], Ledger]:
    """A cohort of capacity 3 whose registrations end in ``statuses``."""
    ledger = Ledger(capacity=3, hold=timedelta(days=7), offer=timedelta(days=2))
    for rid in statuses:
        ledger.admit(rid, now=T0, needs_review=True, price_minor=90000, currency="CNY")
    for rid, wanted in statuses.items():
        if wanted in ("confirmed", "awaiting_payment"):
            ledger.approve(rid, now=T0)
            ledger.consent_signed(rid, now=T0)
        if wanted == "confirmed":
            ledger.payment_settled(rid, now=T0)
        if wanted == "withdrawn":
            ledger.withdraw(rid, now=T0)
    assert {rid: str(ledger.get(rid).status) for rid in statuses} == statuses
    return {"_id": "coh1", "program_id": "prg1"}, ledger


def test_only_a_single_gender_cohort_of_ones_own_gender_meets_the_wish() -> None:
    assert wish_met(Composition.women, "woman")
    assert wish_met(Composition.men, "man")
    assert not wish_met(Composition.mixed, "woman")
    assert not wish_met(Composition.women, "man")
    assert not wish_met(Composition.men, "non_binary")
    assert not wish_met(Composition.women, None)


def test_those_still_in_whose_wish_is_unmet_are_told_once_with_the_window() -> None:
    cohort, ledger = cohort_with(
        {
            "a": "confirmed",
            "b": "awaiting_payment",
            "c": "pending_review",
            "d": "waitlisted",
            "e": "withdrawn",
        }
    )
    wishes = {"a": "woman", "b": "man", "d": "woman", "e": "woman", "z": "woman"}
    prog = program(composition_window_days=10)
    decided = set_composition(cohort, ledger, Composition.women, wishes, prog, T0)
    assert decided is not None
    # b is a man in a women's group; c asked for nothing; e left; z is not on the ledger.
    assert decided.stored["unmet"] == ["b"]
    assert decided.stored["withdraw_by"] == T0 + timedelta(days=10)
    assert decided.notices == [
        ev.RegistrationCompositionUnmet(
            registration_id="b",
            cohort_id="coh1",
            composition="women",
            withdraw_by=T0 + timedelta(days=10),
            refundable=True,
        )
    ]
    cohort["composition"] = decided.stored
    assert set_composition(cohort, ledger, Composition.women, wishes, prog, T0) is None

    mixed = set_composition(cohort, ledger, Composition.mixed, wishes, prog, T0)
    assert mixed is not None
    assert mixed.stored["unmet"] == ["a", "b", "d"]


def test_a_withdrawal_in_the_window_gets_the_programs_refund_for_that_case() -> None:
    cohort, ledger = cohort_with({"a": "confirmed", "b": "confirmed"})
    prog = program(refund_policy="no_refund", composition_refund="refundable")
    decided = set_composition(cohort, ledger, Composition.mixed, {"a": "woman"}, prog, T0)
    assert decided is not None
    cohort["composition"] = decided.stored
    in_window = T0 + timedelta(days=6)
    assert notice_for(cohort, "a", in_window) == {
        "composition": "mixed",
        "withdraw_by": T0 + timedelta(days=7),
    }
    assert withdrawal_refundable(cohort, prog, "a", in_window)
    assert not withdrawal_refundable(cohort, prog, "b", in_window)  # asked for nothing
    late = T0 + timedelta(days=7, seconds=1)
    assert notice_for(cohort, "a", late) is None
    assert not withdrawal_refundable(cohort, prog, "a", late)
    # A program that refunds no such withdrawal keeps its usual policy.
    strict = program(refund_policy="no_refund", composition_refund="no_refund")
    assert not withdrawal_refundable(cohort, strict, "a", in_window)

    # And the event payments acts on says so.
    happened = ledger.withdraw("a", now=in_window)
    withdrawn = event_payloads(happened, cohort, "prg1", prog, ledger, in_window)
    assert [e for e in withdrawn if isinstance(e, ev.RegistrationWithdrawn)][0].refundable
    happened = ledger.withdraw("b", now=in_window)
    withdrawn = event_payloads(happened, cohort, "prg1", prog, ledger, in_window)
    assert not [e for e in withdrawn if isinstance(e, ev.RegistrationWithdrawn)][0].refundable
    assert ledger.get("a").status == Status.withdrawn


def test_a_latecomer_whose_wish_the_set_make_up_does_not_meet_gets_a_window_of_their_own() -> None:
    cohort, ledger = cohort_with({"a": "confirmed"})
    prog = program(refund_policy="no_refund", composition_refund="refundable")
    decided = set_composition(cohort, ledger, Composition.women, {"a": "woman"}, prog, T0)
    assert decided is not None and decided.notices == []
    cohort["composition"] = decided.stored
    later = T0 + timedelta(days=20)  # the first window has long closed

    assert latecomer(cohort, "m", "woman", prog, later) is None  # a women's group suits her
    late = latecomer(cohort, "n", "man", prog, later)
    assert late is not None
    assert late.notices == [
        ev.RegistrationCompositionUnmet(
            registration_id="n",
            cohort_id="coh1",
            composition="women",
            withdraw_by=later + timedelta(days=7),
            refundable=True,
        )
    ]
    cohort["composition"] = late.stored
    assert notice_for(cohort, "n", later + timedelta(days=6)) == {
        "composition": "women",
        "withdraw_by": later + timedelta(days=7),
    }
    assert withdrawal_refundable(cohort, prog, "n", later + timedelta(days=6))
    assert notice_for(cohort, "n", later + timedelta(days=8)) is None
    assert latecomer(cohort, "n", "man", prog, later) is None  # told once
    assert latecomer({"_id": "coh2"}, "n", "man", prog, later) is None  # make-up not set
