"""What progress shows: the participant their own space; whoever they shared with only
what they shared; the facilitator feedback only in aggregate, past the threshold.

Reads only: nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from progress.domain import feedback, space
from progress.domain.plans import Plan
from progress.store import ProgressStores, Sealer
from shared.errors import NotFound
from shared.events import utcnow
from shared.security import Principal


class ProgressViews:
    def __init__(self, stores: ProgressStores, sealer: Sealer, minimum: int) -> None:
        self.stores = stores
        self.sealer = sealer
        self.minimum = minimum

    async def for_participant(self, rid: str) -> dict[str, Any]:
        doc = await self.stores.space(rid)
        record = self.sealer.open_record(doc)
        plan = await self.stores.plan(doc["program_id"])
        given = self.stores.feedback.find({"registration_id": rid}, {"session": 1})
        return {
            "registration_id": rid,
            "cohort_id": doc["cohort_id"],
            "program_id": doc["program_id"],
            "status": doc["status"],
            "plan": plan.model_dump(mode="json"),
            "due": _due(plan, record, utcnow()),
            "responses": [_response_out(plan, r) for r in record["responses"]],
            "homework": _homework_out(plan, record),
            "milestones": [
                {
                    "id": m.id,
                    "title": m.title.model_dump(exclude_none=True),
                    "reached_at": record["milestones"].get(m.id),
                }
                for m in plan.milestones
            ],
            "sharing": doc["sharing"],
            "with_facilitator": doc.get("with_facilitator", False),
            "peer": {
                "shared_with_someone": doc.get("peer_id") is not None,
                "invitation_expires_at": doc.get("peer_invite_expires_at"),
            },
            "feedback_given": sorted([f["session"] async for f in given]),
        }

    async def shared_with(self, rid: str) -> list[dict[str, Any]]:
        """What members who invited ``rid`` share with them (not who they are: the
        person who gave them the code knows that)."""
        await self.stores.space(rid)
        cursor = self.stores.spaces.collection.find({"peer_id": rid, "status": "open"})
        shown = []
        async for doc in cursor:
            plan = await self.stores.plan(doc["program_id"])
            part = space.shared_part(doc, self.sealer.open_record(doc), doc["sharing"])
            shown.append(_labelled(plan, part))
        return shown

    async def shared_with_facilitator(self, cohort_id: str, who: Principal) -> list[dict]:
        docs = await self._cohort_docs(self.stores.spaces.collection, cohort_id, who)
        out = []
        for doc in docs:
            if doc["status"] != "open" or not doc.get("with_facilitator"):
                continue
            plan = await self.stores.plan(doc["program_id"])
            part = space.shared_part(doc, self.sealer.open_record(doc), doc["sharing"])
            out.append({"registration_id": doc["_id"], **_labelled(plan, part)})
        return out

    async def feedback(self, cohort_id: str, who: Principal) -> list[dict[str, Any]]:
        docs = await self._cohort_docs(self.stores.feedback, cohort_id, who)
        by_session: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for doc in docs:
            by_session[doc["session"]].append(self.sealer.open_feedback(doc))
        return [
            {"session": s, **feedback.aggregate(by_session[s], self.minimum)}
            for s in sorted(by_session)
        ]

    async def plan(self, program_id: str) -> dict[str, Any]:
        return (await self.stores.plan(program_id)).model_dump(mode="json")

    async def export(self, rid: str) -> dict[str, Any]:
        """Everything progress holds about the registration, for the person's export."""
        doc = await self.stores.spaces.get(rid)
        if doc is None:
            return {"space": None, "feedback": []}
        found = self.stores.feedback.find({"registration_id": rid})
        return {
            "space": {
                "status": doc["status"],
                "opened_at": doc["opened_at"],
                "sharing": doc["sharing"],
                "with_facilitator": doc.get("with_facilitator", False),
                "record": self.sealer.open_record(doc),
            },
            "feedback": [
                {"session": f["session"], **self.sealer.open_feedback(f)} async for f in found
            ],
        }

    async def _cohort_docs(self, collection: Any, cohort_id: str, who: Principal) -> list[dict]:
        """A cohort's documents, or NotFound for a coordinator of another program."""
        docs = [d async for d in collection.find({"cohort_id": cohort_id})]
        if any(not who.sees(d["program_id"]) for d in docs):
            raise NotFound("cohort_id", "no such cohort")
        return docs


def _due(plan: Plan, record: dict[str, Any], now: datetime) -> list[str]:
    """The questionnaires waiting for the participant now (domain/space.py ``due``)."""
    out = []
    for q in plan.questionnaires:
        at = [
            datetime.fromisoformat(r["at"])
            for r in record["responses"]
            if r["questionnaire_id"] == q.id
        ]
        if space.due(list(q.when), at, now):
            out.append(q.id)
    return out


def _homework_out(plan: Plan, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each session the plan sets homework for, and any other the participant kept a
    note on (a plan changed later never hides what they wrote)."""
    sessions = {h.session for h in plan.homework}
    sessions |= {int(s) for s in (*record["journal"], *record["homework_done"])}
    out = []
    for session in sorted(sessions):
        homework = plan.homework_for(session)
        out.append(
            {
                "session": session,
                "text": homework.text.model_dump(exclude_none=True) if homework else None,
                "done_at": record["homework_done"].get(str(session)),
                "journal": record["journal"].get(str(session)),
            }
        )
    return out


def _response_out(plan: Plan, response: dict[str, Any]) -> dict[str, Any]:
    questionnaire = plan.questionnaire(response["questionnaire_id"])
    band = None
    if questionnaire is not None and response["band"] < len(questionnaire.bands):
        band = questionnaire.bands[response["band"]].label.model_dump(exclude_none=True)
    return {
        "id": response["id"],
        "questionnaire_id": response["questionnaire_id"],
        "at": response["at"],
        "score": response["score"],
        "band": band,
        "answers": response["answers"],
    }


def _labelled(plan: Plan, part: dict[str, Any]) -> dict[str, Any]:
    """A shared part with the program's words for its scores' bands and milestones."""
    out = dict(part)
    if "scores" in part:
        shown = [_response_out(plan, {**r, "id": "", "answers": {}}) for r in part["scores"]]
        out["scores"] = [{k: v for k, v in r.items() if k not in ("id", "answers")} for r in shown]
    if "milestones" in part:
        titles = {m.id: m.title.model_dump(exclude_none=True) for m in plan.milestones}
        out["milestones"] = [{"id": m, "title": titles.get(m)} for m in part["milestones"]]
    return out
