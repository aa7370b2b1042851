"""Moving a registration between cohorts of a program (registration/domain/moves.py):
copied onto the target's ledger, then taken off the source's only if unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest
from registration.domain.ledger import LedgerError, Status
from registration.domain.moves import move_in, move_out, take_back

from tests.unit.test_composition import T0, cohort_with

LATER = T0 + timedelta(hours=1)


def source_and_target():
    """Source (capacity 3): a confirmed place, one in review, one more holding a seat,
    and two waiting; the target has two of its three places held."""
    _, source = cohort_with({"a": "confirmed", "b": "pending_review", "c": "awaiting_payment"})
    for rid in ("w1", "w2"):
        source.admit(rid, now=T0, needs_review=True, price_minor=90000, currency="CNY")
    _, target = cohort_with({"t1": "confirmed", "t2": "confirmed"})
    return source, target


def test_a_confirmed_place_moves_and_the_freed_seat_goes_to_the_sources_waitlist() -> None:
    source, target = source_and_target()
    copied = source.get("a")
    happened = move_in(target, "a", copied, LATER, "coord-1")
    assert [(h.kind, h.previous) for h in happened] == [("moved_in", Status.confirmed)]
    moved = target.get("a")
    assert moved.status == Status.confirmed and target.seats_taken == 3
    assert moved.history[-1].cause == "moved_in" and moved.history[-1].by == "coord-1"
    assert moved.history[:-1] == copied.history  # its story travels with it
    assert move_in(target, "a", copied, LATER, "coord-1") == []  # a retry: nothing twice

    out = move_out(source, "a", copied, LATER)
    assert [(h.kind, h.registration_id) for h in out] == [
        ("moved_out", "a"),
        ("seat_offered", "w1"),
    ]
    assert "a" not in source.entries and source.get("w1").status == Status.offered
    assert move_out(source, "a", copied, LATER) == []


def test_no_free_place_an_open_offer_or_a_change_meanwhile_refuses_the_move() -> None:
    source, target = source_and_target()
    move_in(target, "b", source.get("b"), LATER, "coord-1")  # the target's last place
    with pytest.raises(LedgerError, match="no free place"):
        move_in(target, "c", source.get("c"), LATER, "coord-1")
    source.withdraw("a", now=LATER)  # frees a seat: w1 is offered it
    with pytest.raises(LedgerError, match="offered"):
        move_in(target, "w1", source.get("w1"), LATER, "coord-1")

    copied = source.get("b")
    source.approve("b", now=LATER)  # the registration moved on before it was taken off
    with pytest.raises(LedgerError, match="changed"):
        move_out(source, "b", copied, LATER)
    assert source.get("b").status == Status.awaiting_consent  # the source keeps it
    assert [h.kind for h in take_back(target, "b", copied, LATER)] == ["taken_back"]
    assert "b" not in target.entries and target.seats_taken == 2


def test_a_waiting_place_goes_to_the_end_of_the_targets_waitlist() -> None:
    source, target = source_and_target()
    target.capacity = 2
    target.admit("t3", now=T0, needs_review=True, price_minor=90000, currency="CNY")
    (h,) = move_in(target, "w2", source.get("w2"), LATER, "coord-1")
    assert h.position == 2 and target.waitlist == ["t3", "w2"]
    move_out(source, "w2", source.get("w2"), LATER)
    assert source.waitlist == ["w1"]


def test_taking_back_leaves_a_copy_it_did_not_make() -> None:
    source, target = source_and_target()
    assert take_back(target, "t1", source.get("a"), LATER) == []
    assert target.get("t1").status == Status.confirmed
