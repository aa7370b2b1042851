"""Progress's handlers and use cases on in-memory collections: no broker, no database.

A space opens once however often enrollment.confirmed is delivered, follows a move,
closes with the enrollment; what the participant writes is sealed at rest; the
facilitator sees only what was shared; erasure leaves nothing behind.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from progress.domain.feedback import FeedbackIn
from progress.handlers import subscriptions
from progress.service import ProgressService
from progress.settings import ProgressSettings
from progress.store import ProgressStores, Sealer
from progress.views import ProgressViews

from shared import events as ev
from shared.errors import Conflict, NotFound
from shared.security import FieldCipher, Principal, Role
from tests.fakes import MemoryBus, MemoryConsumer, MemoryDatabase
from tests.unit.test_progress_domain import plan

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def coordinator_of(program: str) -> Principal:
    return Principal(
        subject=f"coordinator:{program}",
        role=Role.coordinator,
        token_id="t",
        expires_at=NOW,
        programs=frozenset({program}),
    )


COORDINATOR, OTHER_PROGRAM = coordinator_of("p1"), coordinator_of("p9")


class System:
    def __init__(self) -> None:
        settings = ProgressSettings()
        self.db = MemoryDatabase()
        cipher = FieldCipher.from_settings(settings)
        self.stores = ProgressStores.open(self.db.store, self.db, cipher)
        sealer = Sealer(cipher)
        self.service = ProgressService(self.stores, sealer, settings, clock=lambda: NOW)
        self.views = ProgressViews(self.stores, sealer, settings.feedback_minimum)
        self.consumer = MemoryConsumer(subscriptions.bind(self.service))
        self.bus = MemoryBus(self.stores.spaces, self.stores.erasures, self.stores.plans)

    async def enrolled(self, *rids: str, cohort: str = "c1") -> None:
        await self.service.set_plan("p1", plan())
        for rid in rids:
            await self.consumer.send(confirmed(rid, cohort))


def confirmed(rid: str, cohort: str = "c1") -> ev.EnrollmentConfirmed:
    return ev.EnrollmentConfirmed(
        registration_id=rid, cohort_id=cohort, program_id="p1", occurred_at=NOW
    )


def check_in(harm: int = 0, urges: int = 3) -> dict[str, int]:
    return {"urges": urges, "sleep": 1, "harm": harm}


async def test_a_space_opens_once_however_often_the_confirmation_is_delivered() -> None:
    system = System()
    await system.service.set_plan("p1", plan())
    envelope = await system.consumer.send(confirmed("r1"))
    await system.consumer.deliver(envelope)
    assert (await system.views.for_participant("r1"))["due"] == ["check-in"]
    await system.service.answer("r1", "check-in", check_in(), "a1")
    await system.consumer.deliver(envelope)  # redelivered after an answer: nothing reset
    mine = await system.views.for_participant("r1")
    assert mine["status"] == "open" and [r["id"] for r in mine["responses"]] == ["a1"]
    assert mine["due"] == []  # weekly: answered today
    with pytest.raises(NotFound):
        await system.views.for_participant("never-enrolled")


async def test_two_answers_show_the_change_and_are_sealed_at_rest() -> None:
    system = System()
    await system.enrolled("r1")
    await system.service.answer("r1", "check-in", check_in(urges=3), "a1")
    await system.service.answer("r1", "check-in", check_in(urges=0), "a2")
    await system.service.answer("r1", "check-in", check_in(urges=0), "a2")  # a retry
    mine = await system.views.for_participant("r1")
    assert [(r["score"], r["band"]) for r in mine["responses"]] == [
        (4, {"en": "some strain"}),
        (1, {"en": "a steady week"}),
    ]
    await system.service.mark_homework("r1", 1, True, "I wrote about my father")
    raw = json.dumps(system.db["spaces"].docs["r1"], default=str)
    assert "father" not in raw and "urges" not in raw and '"score"' not in raw


async def test_a_safety_answer_becomes_an_event_without_the_answer() -> None:
    system = System()
    await system.enrolled("r1")
    system.bus.take()
    await system.service.answer("r1", "check-in", check_in(harm=0), "a1")
    assert system.bus.take("progress.safety_answered") == []
    await system.service.answer("r1", "check-in", check_in(harm=2), "a2")
    [flag] = system.bus.take("progress.safety_answered")
    assert flag.payload().registration_id == "r1" and "harm" not in json.dumps(flag.data)


async def test_a_milestone_sends_one_word_and_its_event_travels_sealed() -> None:
    system = System()
    await system.enrolled("r1")
    system.bus.take()
    await system.service.mark_milestone("r1", "first-page", True)
    await system.service.mark_milestone("r1", "first-page", True)
    [word] = system.bus.take("progress.milestone_reached")
    assert word.payload().title == {"en": "First page written"}
    outbox = json.dumps(system.db["spaces"].docs["r1"].get("outbox", []), default=str)
    assert "First page" not in outbox


async def test_the_facilitator_sees_only_what_was_shared_until_it_stops() -> None:
    system = System()
    await system.enrolled("r1", "r2")
    await system.service.answer("r1", "check-in", check_in(), "a1")
    await system.service.mark_milestone("r1", "first-page", True)
    assert await system.views.shared_with_facilitator("c1", COORDINATOR) == []
    await system.service.share("r1", {"milestones": True}, with_facilitator=True)
    [shown] = await system.views.shared_with_facilitator("c1", COORDINATOR)
    assert shown["registration_id"] == "r1" and "scores" not in shown
    assert shown["milestones"] == [{"id": "first-page", "title": {"en": "First page written"}}]
    await system.service.share("r1", {}, with_facilitator=False)
    assert await system.views.shared_with_facilitator("c1", COORDINATOR) == []
    with pytest.raises(NotFound):
        await system.views.shared_with_facilitator("c1", OTHER_PROGRAM)


async def test_one_member_shares_with_another_who_accepts_and_either_may_stop() -> None:
    system = System()
    await system.enrolled("r1", "r2")
    await system.enrolled("r3", cohort="c2")
    await system.service.share("r1", {"scores": True}, with_facilitator=False)
    await system.service.answer("r1", "check-in", check_in(), "a1")
    invitation = await system.service.invite_peer("r1")
    with pytest.raises(NotFound):
        await system.service.accept_peer("r3", invitation["code"])  # another cohort
    await system.service.accept_peer("r2", invitation["code"].lower())
    [seen] = await system.views.shared_with("r2")
    assert [s["score"] for s in seen["scores"]] == [4]
    assert await system.views.shared_with("r1") == []  # sharing is one way
    with pytest.raises(NotFound):
        await system.service.accept_peer("r3", invitation["code"])  # used once
    await system.service.stop_peer("r1")
    assert await system.views.shared_with("r2") == []
    second = await system.service.invite_peer("r1")
    await system.service.accept_peer("r2", second["code"])
    assert len(await system.views.shared_with("r2")) == 1
    assert await system.service.stop_seeing("r2") == 1  # the one who sees ends it too
    assert await system.views.shared_with("r2") == []
    assert "code" not in json.dumps(system.db["spaces"].docs["r1"], default=str).lower()


async def test_feedback_reaches_the_facilitator_only_in_aggregate_past_three() -> None:
    system = System()
    await system.enrolled("r1", "r2", "r3")
    await system.service.give_feedback("r1", 1, FeedbackIn(helpful=5, safe=5, comment="kind"))
    await system.service.give_feedback("r2", 1, FeedbackIn(helpful=3, safe=4))
    with pytest.raises(Conflict):
        await system.service.give_feedback("r2", 1, FeedbackIn(helpful=1, safe=1))
    [session] = await system.views.feedback("c1", COORDINATOR)
    assert session == {"session": 1, "answers": 2, "enough": False, "needed": 3}
    await system.service.give_feedback("r3", 1, FeedbackIn(helpful=1, safe=3))
    [session] = await system.views.feedback("c1", COORDINATOR)
    assert session["enough"] and session["helpful"]["mean"] == 3.0
    assert session["comments"] == ["kind"] and "r1" not in json.dumps(session)
    assert "kind" not in json.dumps(system.db["feedback"].docs, default=str)  # sealed


async def test_a_move_follows_the_participant_and_the_old_cohorts_end_does_not_close_it() -> None:
    system = System()
    await system.enrolled("r1")
    await system.consumer.send(confirmed("r1", "c2"))
    await system.consumer.send(
        ev.EnrollmentCancelled(
            registration_id="r1", cohort_id="c1", program_id="p1", occurred_at=NOW
        )
    )
    mine = await system.views.for_participant("r1")
    assert (mine["status"], mine["cohort_id"]) == ("open", "c2")
    await system.consumer.send(
        ev.RegistrationWithdrawn(
            registration_id="r1", cohort_id="c2", previous_status="confirmed", refundable=False
        )
    )
    assert (await system.views.for_participant("r1"))["status"] == "closed"
    with pytest.raises(Conflict):
        await system.service.mark_milestone("r1", "first-page", True)


async def test_erasure_leaves_nothing_and_reports_once() -> None:
    system = System()
    await system.enrolled("r1", "r2")
    await system.service.answer("r1", "check-in", check_in(), "a1")
    await system.service.give_feedback("r1", 1, FeedbackIn(helpful=4, safe=4, comment="ok"))
    invitation = await system.service.invite_peer("r2")
    await system.service.share("r2", {"scores": True}, with_facilitator=False)
    await system.service.accept_peer("r1", invitation["code"])
    system.bus.take()
    erase = ev.RegistrationErasureRequested(registration_id="r1", cohort_id="c1", requested_at=NOW)
    envelope = await system.consumer.send(erase)
    await system.consumer.deliver(envelope)
    assert "r1" not in system.db["spaces"].docs
    assert not [d for d in system.db["feedback"].docs.values() if d["registration_id"] == "r1"]
    assert system.db["spaces"].docs["r2"]["peer_id"] is None
    assert len(system.bus.take("progress.erased")) == 1
    await system.consumer.send(confirmed("r1"))  # a late confirmation opens nothing
    assert "r1" not in system.db["spaces"].docs
    assert await system.views.export("r1") == {"space": None, "feedback": []}


async def test_a_plan_set_tells_which_sessions_set_homework_and_nothing_about_anyone() -> None:
    system = System()
    await system.service.set_plan("p1", plan())
    await system.service.set_plan("p1", plan())  # set again: told again, the later wins
    told = system.bus.take("progress.plan_set")
    assert [e.payload().homework_sessions for e in told] == [[1], [1]]
    assert set(told[0].data) == {"program_id", "homework_sessions", "set_at"}


async def test_a_note_kept_on_a_session_the_plan_later_drops_is_still_shown() -> None:
    system = System()
    await system.enrolled("r1")
    await system.service.mark_homework("r1", 1, True, "my note")
    await system.service.set_plan("p1", plan().model_copy(update={"homework": []}))
    [kept] = (await system.views.for_participant("r1"))["homework"]
    assert kept["session"] == 1 and kept["journal"] == "my note" and kept["text"] is None
