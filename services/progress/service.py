"""Progress's use cases: a space opened and closed by enrollment events, and what the
participant does in it; a program's plan set by its coordinators.

Every change to a space is one conditional write (shared/aggregates.py): the pure
decision (domain/space.py) is applied to the opened record, which is sealed again
before it is written, with its events in the same write.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from progress import erasure
from progress.domain import space
from progress.domain.feedback import FeedbackIn
from progress.domain.plans import Plan
from progress.settings import ProgressSettings
from progress.store import ProgressStores, Sealer
from shared import events as ev
from shared.aggregates import Change
from shared.errors import Conflict, Invalid, NotFound
from shared.events import utcnow
from shared.logs import get_logger

log = get_logger(__name__)

Decide = Callable[[dict[str, Any], dict[str, Any]], "space.Decision | None"]
# Invitation codes: 10 characters a person can read out or type on a phone.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def code_hash(code: str) -> str:
    normal = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(f"progress-peer:{normal}".encode()).hexdigest()


class ProgressService:
    def __init__(
        self,
        stores: ProgressStores,
        sealer: Sealer,
        settings: ProgressSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.stores = stores
        self.sealer = sealer
        self.settings = settings
        self.clock = clock

    # --- events ------------------------------------------------------------------------

    async def on_confirmed(self, event: ev.EnrollmentConfirmed, event_id: str) -> None:
        """Open the participant's space (once), or move it with a moved enrollment."""
        rid = event.registration_id
        if await self.stores.erased(rid):
            return
        doc = space.new_space(rid, event.cohort_id, event.program_id, self.clock())
        try:
            await self.stores.spaces.create(doc)
            log.info("space opened", registration_id=rid)
            return
        except DuplicateKeyError:
            pass
        await self._change(
            rid, lambda d, _r: space.reopened(d, event.cohort_id, event.program_id), event_id
        )

    async def on_ended(self, rid: str, cohort_id: str | None, event_id: str) -> None:
        """The enrollment ended: the space closes and stops sharing; nothing is deleted
        (erasure does that)."""
        if await self.stores.spaces.get(rid) is None:
            return
        now = self.clock()
        await self._change(rid, lambda d, _r: space.closed(d, cohort_id, now), event_id)

    async def on_erasure(self, rid: str) -> None:
        await erasure.erase(self.stores, rid, self.clock())

    # --- the participant ---------------------------------------------------------------

    async def answer(
        self, rid: str, questionnaire_id: str, answers: dict[str, int], response_id: str
    ) -> str:
        doc = await self.stores.space(rid)
        plan = await self.stores.plan(doc["program_id"])
        now = self.clock()
        return await self._change(
            rid,
            lambda d, r: space.answered(d, r, plan, questionnaire_id, answers, response_id, now),
        )

    async def mark_homework(self, rid: str, session: int, done: bool, journal: str | None) -> None:
        plan = await self._plan_of(rid)
        now = self.clock()
        await self._change(
            rid, lambda d, r: space.homework_marked(d, r, plan, session, done, journal, now)
        )

    async def mark_milestone(self, rid: str, milestone_id: str, reached: bool) -> None:
        plan = await self._plan_of(rid)
        now = self.clock()
        await self._change(
            rid, lambda d, r: space.milestone_marked(d, r, plan, milestone_id, reached, now)
        )

    async def share(self, rid: str, kinds: dict[str, bool], with_facilitator: bool) -> None:
        await self._change(rid, lambda d, _r: space.sharing_set(d, kinds, with_facilitator))

    async def invite_peer(self, rid: str) -> dict[str, Any]:
        """A new code for one member of the cohort to accept; shown once, kept hashed."""
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))
        now = self.clock()
        await self._change(rid, lambda d, _r: space.peer_invited(d, code_hash(code), now))
        doc = await self.stores.space(rid)
        return {"code": f"{code[:5]}-{code[5:]}", "expires_at": doc["peer_invite_expires_at"]}

    async def accept_peer(self, rid: str, code: str) -> None:
        mine = await self.stores.space(rid)
        found = await self.stores.spaces.collection.find_one(
            {"peer_invite_hash": code_hash(code)}, {"_id": 1}
        )
        if found is None:
            raise NotFound("code", "no such invitation, or it was used or has expired")
        now = self.clock()
        await self._change(found["_id"], lambda d, _r: space.peer_accepted(d, mine, now))

    async def stop_peer(self, rid: str) -> None:
        await self._change(rid, lambda d, _r: space.peer_stopped(d, rid))

    async def stop_seeing(self, rid: str) -> int:
        """The one who accepted ends it: every member sharing with ``rid`` stops."""
        await self.stores.space(rid)
        cursor = self.stores.spaces.collection.find({"peer_id": rid}, {"_id": 1})
        sharing = [d["_id"] async for d in cursor]
        for other in sharing:
            await self._change(other, lambda d, _r: space.peer_stopped(d, rid))
        return len(sharing)

    async def give_feedback(self, rid: str, session: int, answers: FeedbackIn) -> None:
        doc = await self.stores.space(rid)
        if doc["status"] != "open":
            raise Conflict("registration_id", "this space is closed: the enrollment ended")
        if not 1 <= session <= 100:
            raise Invalid("session", "a session number from 1")
        feedback_id = f"{doc['cohort_id']}:{session}:{rid}"
        try:
            await self.stores.feedback.insert_one(
                {
                    "_id": feedback_id,
                    "cohort_id": doc["cohort_id"],
                    "program_id": doc["program_id"],
                    "session": session,
                    "registration_id": rid,
                    "answers": self.sealer.seal_feedback(feedback_id, answers.model_dump()),
                    "at": self.clock(),
                }
            )
        except DuplicateKeyError:
            raise Conflict("session", "you already gave feedback on this session") from None

    # --- coordinators ------------------------------------------------------------------

    async def set_plan(self, program_id: str, plan: Plan) -> None:
        """Store the plan; progress.plan_set tells notifications which sessions set homework."""
        body = plan.model_dump(mode="json")
        told = ev.ProgressPlanSet(
            program_id=program_id,
            homework_sessions=sorted(h.session for h in plan.homework),
            set_at=self.clock(),
        )
        try:
            await self.stores.plans.create({"_id": program_id, "plan": body}, emit=[told])
            return
        except DuplicateKeyError:
            pass
        await self.stores.plans.mutate(
            program_id, lambda _d, _s: Change(set={"plan": body}, emit=[told])
        )

    # --- helpers -------------------------------------------------------------------------

    async def _plan_of(self, rid: str) -> Plan:
        return await self.stores.plan((await self.stores.space(rid))["program_id"])

    async def _change(self, rid: str, decide: Decide, event_id: str | None = None) -> Any:
        """Apply ``decide`` to the space's document and its opened record."""

        def change(doc: dict[str, Any], _state: Any) -> Change | None:
            decision = decide(doc, self.sealer.open_record(doc))
            if decision is None:
                return None
            fields = dict(decision.fields)
            if decision.record is not None:
                fields["record"] = self.sealer.seal_record(doc["_id"], decision.record)
            if not fields and not decision.emit:
                return Change(result=decision.result) if decision.result is not None else None
            return Change(set=fields, emit=list(decision.emit), result=decision.result)

        await self.stores.space(rid)  # NotFound before enrolment
        outcome = await self.stores.spaces.mutate(rid, change, event_id=event_id)
        return outcome.result
