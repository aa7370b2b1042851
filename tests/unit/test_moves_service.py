"""Moving a registration between cohorts, through the use case (registration/moves.py)
on in-memory stores: the events it writes, a move interrupted between its writes, and a
replica that still remembers the cohort the registration left."""

from __future__ import annotations

from datetime import timedelta

import pytest
from registration.domain.ledger import Entry, LedgerError, Status
from registration.domain.schedule import CohortSpec
from registration.moves import Moves
from registration.service import RegistrationService

from shared.errors import NotFound
from tests.fakes import consent_signed
from tests.unit.test_handlers_registration import (
    FIRST,
    NOW,
    System,
    application,
    payment_confirmed,
)


async def second_cohort(system: System, cohort_id: str, capacity: int | None = None) -> str:
    program_id = (await system.stores.cohort(cohort_id))["program_id"]
    spec = CohortSpec(
        sessions=[
            {
                "starts_at": FIRST + timedelta(days=7),
                "ends_at": FIRST + timedelta(days=7, hours=2),
                "timezone": "Asia/Shanghai",
            }
        ],
        registration_opens_at=NOW - timedelta(days=1),
        registration_closes_at=NOW + timedelta(days=10),
        capacity=capacity,
    )
    (cohort,) = await system.admin.create_cohort(program_id, spec)
    return cohort["_id"]


async def confirmed(system: System, cohort_id: str, email: str) -> str:
    rid = (await system.sign_up(cohort_id, application(email), f"key-{email}")).registration_id
    await system.consumer.send(consent_signed(rid))
    await system.consumer.send(payment_confirmed(rid))
    assert await system.status(cohort_id, rid) == Status.confirmed
    system.bus.take()
    return rid


async def test_a_confirmed_place_moves_once_and_says_so() -> None:
    system = System()
    source = await system.cohort()
    target = await second_cohort(system, source)
    rid = await confirmed(system, source, "lin@example.org")
    moves = Moves(system.service)
    for _ in range(2):  # asking again changes nothing
        moved = await moves.move(rid, target, NOW, "coord-1")
        assert moved == {
            "registration_id": rid,
            "cohort_id": target,
            "status": Status.confirmed,
            "waitlist_position": None,
        }
    (event,) = system.bus.take("registration.moved")
    assert event.data["from_cohort_id"] == source and event.data["cohort_id"] == target
    assert event.data["cohort"]["sessions"][0]["starts_at"].startswith(
        (FIRST + timedelta(days=7)).date().isoformat()
    )
    assert [e.data["cohort_id"] for e in system.bus.take("enrollment.cancelled")] == [source]
    assert [e.data["cohort_id"] for e in system.bus.take("enrollment.confirmed")] == [target]
    assert rid not in (await system.stores.cohort(source))["entries"]
    doc = await system.stores.registrations.find_one({"_id": rid})
    assert doc["cohort_id"] == target and "moving" not in doc


async def test_a_move_interrupted_after_the_copy_is_finished_by_the_reconciler() -> None:
    system = System()
    source = await system.cohort()
    target = await second_cohort(system, source)
    rid = await confirmed(system, source, "lin@example.org")
    moves = Moves(system.service)
    await system.stores.registrations.update_one(
        {"_id": rid},
        {"$set": {"moving": {"to": target, "by": "coord-1"}, "moving_since": NOW}},
    )
    entry = (await system.stores.cohort(source))["entries"][rid]
    await moves._copy(rid, Entry.from_doc(entry), target, NOW, "coord-1")  # then a crash
    assert await moves.unfinished(NOW + timedelta(minutes=1)) == [rid]
    await moves.finish(rid)
    assert await moves.unfinished(NOW + timedelta(minutes=1)) == []
    assert rid not in (await system.stores.cohort(source))["entries"]
    assert await system.status(target, rid) == Status.confirmed
    assert len(system.bus.take("registration.moved")) == 1


async def test_a_refused_move_leaves_everything_where_it_was() -> None:
    system = System()
    source = await system.cohort()
    full = await second_cohort(system, source, capacity=1)
    await confirmed(system, full, "ann@example.org")
    rid = await confirmed(system, source, "lin@example.org")
    moves = Moves(system.service)
    with pytest.raises(LedgerError, match="no free place"):
        await moves.move(rid, full, NOW, "coord-1")
    doc = await system.stores.registrations.find_one({"_id": rid})
    assert doc["cohort_id"] == source and "moving" not in doc
    assert await system.status(source, rid) == Status.confirmed
    assert system.bus.take("registration.moved") == []
    other_program = await system.cohort()  # a cohort of another program: as if none
    with pytest.raises(NotFound):
        await moves.move(rid, other_program, NOW, "coord-1")


async def test_a_replica_that_remembers_the_old_cohort_finds_the_registration_moved() -> None:
    system = System()
    source = await system.cohort()
    target = await second_cohort(system, source)
    rid = await confirmed(system, source, "lin@example.org")
    other = RegistrationService(system.stores, system.sealer)  # a second replica
    assert await other.placement(rid) == (
        source,
        (await system.stores.cohort(source))["program_id"],
    )
    await Moves(system.service).move(rid, target, NOW, "coord-1")
    assert await other.change(rid, "withdraw", NOW, by="applicant") == Status.withdrawn
    assert await system.status(target, rid) == Status.withdrawn
