"""A participant's space between sessions, and every change to it (pure).

A space is opened when an enrollment is confirmed and closed when it ends. What the
participant writes or answers is their ``record`` (sealed as a whole at rest by the
store); the document around it holds only ids, times and what they chose to share.
Nothing is shared by default; sharing stops the moment they say so, or the space closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from progress.domain.plans import Plan
from progress.domain.scoring import score
from shared import events as ev
from shared.errors import Conflict, Invalid, NotFound

MAX_RESPONSES = 200
INVITE_TTL = timedelta(days=7)
SHAREABLE = ("scores", "homework", "milestones")
NOTHING_SHARED = {k: False for k in SHAREABLE}


@dataclass
class Decision:
    """What a change does: fields of the document to set, the record as it now is
    (None: unchanged), events, and what the caller is answered."""

    fields: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    emit: list[ev.EventData] = field(default_factory=list)
    result: Any = None


def empty_record() -> dict[str, Any]:
    return {"responses": [], "homework_done": {}, "journal": {}, "milestones": {}}


def new_space(rid: str, cohort_id: str, program_id: str, now: datetime) -> dict[str, Any]:
    return {
        "_id": rid,
        "cohort_id": cohort_id,
        "program_id": program_id,
        "status": "open",
        "opened_at": now,
        "closed_at": None,
        "sharing": dict(NOTHING_SHARED),
        "with_facilitator": False,
        "peer_id": None,
        "peer_invite_hash": None,
        "peer_invite_expires_at": None,
    }


def reopened(doc: dict[str, Any], cohort_id: str, program_id: str) -> Decision | None:
    """enrollment.confirmed again (a move to another cohort): the space follows it."""
    if doc["status"] == "open" and doc["cohort_id"] == cohort_id:
        return None
    return Decision(
        fields={
            "status": "open",
            "cohort_id": cohort_id,
            "program_id": program_id,
            "closed_at": None,
        }
    )


def closed(doc: dict[str, Any], cohort_id: str | None, now: datetime) -> Decision | None:
    """The enrollment ended (``cohort_id``: only if the space is still in that cohort)."""
    if doc["status"] == "closed" or (cohort_id and doc["cohort_id"] != cohort_id):
        return None
    return Decision(fields={"status": "closed", "closed_at": now, **_nothing_shared()})


def _nothing_shared() -> dict[str, Any]:
    return {
        "sharing": dict(NOTHING_SHARED),
        "with_facilitator": False,
        "peer_id": None,
        "peer_invite_hash": None,
        "peer_invite_expires_at": None,
    }


def _must_be_open(doc: dict[str, Any]) -> None:
    if doc["status"] != "open":
        raise Conflict("registration_id", "this space is closed: the enrollment ended")


def answered(
    doc: dict[str, Any],
    record: dict[str, Any],
    plan: Plan,
    questionnaire_id: str,
    answers: dict[str, int],
    response_id: str,
    now: datetime,
) -> Decision:
    _must_be_open(doc)
    questionnaire = plan.questionnaire(questionnaire_id)
    if questionnaire is None:
        raise NotFound("questionnaire_id", "the program has no such questionnaire")
    if any(r["id"] == response_id for r in record["responses"]):
        return Decision(result=response_id)  # the same submission again
    if len(record["responses"]) >= MAX_RESPONSES:
        raise Conflict("questionnaire_id", "this space holds as many answers as it can")
    scored = score(questionnaire, answers)
    response = {
        "id": response_id,
        "questionnaire_id": questionnaire_id,
        "at": now.isoformat(),
        "answers": dict(answers),
        "score": scored.score,
        "band": scored.band,
    }
    emit: list[ev.EventData] = []
    if scored.safety:
        emit.append(
            ev.ProgressSafetyAnswered(
                registration_id=doc["_id"],
                cohort_id=doc["cohort_id"],
                program_id=doc["program_id"],
                answered_at=now,
            )
        )
    new = {**record, "responses": [*record["responses"], response]}
    return Decision(record=new, emit=emit, result=response_id)


def homework_marked(
    doc: dict[str, Any],
    record: dict[str, Any],
    plan: Plan,
    session: int,
    done: bool,
    journal: str | None,
    now: datetime,
) -> Decision:
    _must_be_open(doc)
    if plan.homework_for(session) is None and journal is None:
        raise NotFound("session", "the program sets no homework for this session")
    key = str(session)
    marks = dict(record["homework_done"])
    if done:
        marks.setdefault(key, now.isoformat())
    else:
        marks.pop(key, None)
    notes = dict(record["journal"])
    if journal is not None:
        if journal:
            notes[key] = journal
        else:
            notes.pop(key, None)
    return Decision(record={**record, "homework_done": marks, "journal": notes})


def milestone_marked(
    doc: dict[str, Any],
    record: dict[str, Any],
    plan: Plan,
    milestone_id: str,
    reached: bool,
    now: datetime,
) -> Decision:
    """Ticking a milestone sends a word of encouragement, once; unticking sends nothing."""
    _must_be_open(doc)
    milestone = plan.milestone(milestone_id)
    if milestone is None:
        raise NotFound("milestone_id", "the program has no such milestone")
    marks = dict(record["milestones"])
    if reached == (milestone_id in marks):
        return Decision()
    if not reached:
        del marks[milestone_id]
        return Decision(record={**record, "milestones": marks})
    marks[milestone_id] = now.isoformat()
    word = ev.ProgressMilestoneReached(
        registration_id=doc["_id"],
        cohort_id=doc["cohort_id"],
        title=milestone.title.model_dump(exclude_none=True),
        reached=len(marks),
        of=len(plan.milestones),
    )
    return Decision(record={**record, "milestones": marks}, emit=[word])


def sharing_set(doc: dict[str, Any], sharing: dict[str, bool], with_facilitator: bool) -> Decision:
    """What the participant shows (each kind off unless they say), and whether their
    facilitator sees it; the member they invited, if any, sees the same."""
    _must_be_open(doc)
    unknown = sorted(set(sharing) - set(SHAREABLE))
    if unknown:
        raise Invalid(f"sharing.{unknown[0]}", f"one of {', '.join(SHAREABLE)}")
    kinds = {k: bool(sharing.get(k)) for k in SHAREABLE}
    return Decision(fields={"sharing": kinds, "with_facilitator": with_facilitator})


def peer_invited(doc: dict[str, Any], code_hash: str, now: datetime) -> Decision:
    """A new invitation replaces an unused one; the person shared with so far stays
    until the new code is accepted."""
    _must_be_open(doc)
    return Decision(
        fields={"peer_invite_hash": code_hash, "peer_invite_expires_at": now + INVITE_TTL}
    )


def peer_accepted(doc: dict[str, Any], peer: dict[str, Any], now: datetime) -> Decision:
    """``peer`` (a space of the same cohort) accepted the invitation of ``doc``."""
    _must_be_open(doc)
    if peer["_id"] == doc["_id"]:
        raise Invalid("code", "this is your own invitation: give it to the person you choose")
    if peer["status"] != "open" or peer["cohort_id"] != doc["cohort_id"]:
        raise NotFound("code", "no such invitation, or it was used or has expired")
    expires = doc.get("peer_invite_expires_at")
    if expires is None or expires <= now:
        raise NotFound("code", "no such invitation, or it was used or has expired")
    return Decision(
        fields={"peer_id": peer["_id"], "peer_invite_hash": None, "peer_invite_expires_at": None}
    )


def peer_stopped(doc: dict[str, Any], by: str) -> Decision | None:
    """Either of the two may end it: the one who shares, or the one who sees."""
    if by not in (doc["_id"], doc.get("peer_id")):
        raise NotFound("registration_id", "nothing is shared between you")
    if doc.get("peer_id") is None and doc.get("peer_invite_hash") is None:
        return None
    return Decision(
        fields={"peer_id": None, "peer_invite_hash": None, "peer_invite_expires_at": None}
    )


WEEK = timedelta(days=6)  # a weekly check-in is due again six days after the last one


def due(when: list[str], answered_at: list[datetime], now: datetime) -> bool:
    """Whether a questionnaire is waiting for the participant: taken at sign-up or the
    first session, until answered once; weekly, six days after the last answer; at
    the last session, whenever they come to it (it stays open)."""
    if not answered_at:
        return True
    if "weekly" in when:
        return now - max(answered_at) >= WEEK
    return "last_session" in when and len(answered_at) < 2


def shared_part(doc: dict[str, Any], record: dict[str, Any], sharing: dict[str, bool]) -> dict:
    """What one who was shared with sees: only the kinds shared, nothing else."""
    out: dict[str, Any] = {}
    if sharing.get("scores"):
        out["scores"] = [
            {
                "questionnaire_id": r["questionnaire_id"],
                "at": r["at"],
                "score": r["score"],
                "band": r["band"],
            }
            for r in record["responses"]
        ]
    if sharing.get("homework"):
        out["homework_done"] = sorted(int(s) for s in record["homework_done"])
    if sharing.get("milestones"):
        out["milestones"] = sorted(record["milestones"])
    return out
