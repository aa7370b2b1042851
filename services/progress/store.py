"""Progress's MongoDB collections and how everything personal is sealed in them.

- ``plans``: one document per program (``_id`` = program id): its questionnaires,
  homework and milestones (domain/plans.py). The program's words, not personal.
- ``spaces``: an aggregate per registration (``_id`` = registration id): ids, times
  and what the participant chose to share in clear; everything they answered, ticked
  or wrote in ``record``, sealed as one value bound to the space. Its outbox carries
  progress.milestone_reached (a title: sealed) and progress.safety_answered.
- ``feedback``: one document per (cohort, session, registration): the answers sealed,
  so only the aggregate (domain/feedback.py) ever leaves this service.
- ``erasures``: who was erased, and the progress.erased report in its outbox.
"""

from __future__ import annotations

import json
from typing import Any

from pymongo import ASCENDING, IndexModel

from progress.domain.plans import Plan
from progress.domain.space import empty_record
from shared import events as ev
from shared.aggregates import AggregateStore, StoreFactory
from shared.erasure import erasures_store
from shared.errors import NotFound
from shared.reseal import SealedIn
from shared.security import FieldCipher

SOURCE = "holdspace/progress"

INDEXES = {
    "plans": [],
    "spaces": [
        IndexModel([("cohort_id", ASCENDING)], name="by_cohort"),
        IndexModel([("peer_invite_hash", ASCENDING)], name="by_invitation"),
        IndexModel([("peer_id", ASCENDING)], name="by_peer"),
    ],
    "feedback": [
        IndexModel([("cohort_id", ASCENDING), ("session", ASCENDING)], name="by_session"),
        IndexModel([("registration_id", ASCENDING)], name="by_registration"),
    ],
}


def record_context(rid: str) -> str:
    return f"progress:space:{rid}:record"


def feedback_context(feedback_id: str) -> str:
    return f"progress:feedback:{feedback_id}"


# Where the sealed values are, for ``python -m progress reseal``.
SEALED: dict[str, SealedIn] = {
    "spaces": lambda doc: [("record", record_context(doc["_id"]))] if doc.get("record") else [],
    "feedback": lambda doc: [("answers", feedback_context(doc["_id"]))],
}


class Sealer:
    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    def seal_record(self, rid: str, record: dict[str, Any]) -> str:
        return self.cipher.encrypt_json(record, context=record_context(rid))

    def open_record(self, doc: dict[str, Any]) -> dict[str, Any]:
        if not doc.get("record"):
            return empty_record()
        text = self.cipher.decrypt(doc["record"], context=record_context(doc["_id"]))
        return {**empty_record(), **json.loads(text)}

    def seal_feedback(self, feedback_id: str, answers: dict[str, Any]) -> str:
        return self.cipher.encrypt_json(answers, context=feedback_context(feedback_id))

    def open_feedback(self, doc: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self.cipher.decrypt(doc["answers"], context=feedback_context(doc["_id"])))


def _about_the_program(data: ev.EventData, causation_id: str | None) -> ev.Envelope:
    program_id = data.program_id  # type: ignore[attr-defined]
    return ev.about_registration(data, program_id, causation_id, source=SOURCE)


class ProgressStores:
    @classmethod
    def open(cls, store: StoreFactory, db: Any, cipher: FieldCipher) -> ProgressStores:
        """The stores as every process of the service opens them (``store``: the app's
        Runtime.store, or tests' in-memory one)."""
        plans = store("plans", enveloper=_about_the_program)
        # Sealed outbox: progress.milestone_reached names what the participant works on.
        spaces = store("spaces", cipher=cipher, enveloper=ev.registration_enveloper(SOURCE))
        return cls(plans, spaces, db["feedback"], erasures_store(store, SOURCE))

    def __init__(
        self, plans: AggregateStore, spaces: AggregateStore, feedback: Any, erasures: AggregateStore
    ) -> None:
        self.plans = plans
        self.spaces = spaces
        self.feedback = feedback
        self.erasures = erasures

    async def plan(self, program_id: str) -> Plan:
        doc = await self.plans.get(program_id)
        if doc is None:
            return Plan(based_on="nothing yet: the program has set no work between sessions")
        return Plan.model_validate(doc["plan"])

    async def space(self, rid: str) -> dict[str, Any]:
        doc = await self.spaces.get(rid)
        if doc is None:
            raise NotFound(
                "registration_id", "no space for this registration: it opens once enrolled"
            )
        return doc

    async def erased(self, rid: str) -> bool:
        return await self.erasures.get(rid) is not None
