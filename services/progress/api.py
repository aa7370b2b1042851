"""Progress's HTTP API: the participant's space (through the web pages, for the one
registration whose token registration accepted) and the coordinators' plans, shared
progress and aggregate feedback."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from progress.domain.feedback import FeedbackIn
from progress.domain.plans import Plan
from progress.service import ProgressService
from progress.views import ProgressViews
from shared.app import provided
from shared.errors import NotFound
from shared.security import Principal, Role, require_role

pages = APIRouter(tags=["participants (through the pages)"])
coordinator = APIRouter(tags=["coordinators"])
Pages = Annotated[Principal, Depends(require_role(Role.pages))]
Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]
Service = Annotated[ProgressService, Depends(provided(ProgressService))]
Views = Annotated[ProgressViews, Depends(provided(ProgressViews))]

Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Slug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
Session = Annotated[int, Path(ge=1, le=100)]
Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


def the_participant(registration_id: Id, who: Pages) -> str:
    """The pages speak for one applicant at a time: their token names the registration."""
    if who.subject != f"applicant:{registration_id}":
        raise NotFound("registration_id", "no space for this registration")
    return registration_id


Participant = Annotated[str, Depends(the_participant)]


class ResponseIn(BaseModel):
    model_config = Strict
    questionnaire_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    answers: dict[str, int] = Field(max_length=40, description="item id -> chosen value")
    response_id: uuid.UUID = Field(
        default_factory=uuid.uuid4, description="the same id again records the answers once"
    )


class HomeworkIn(BaseModel):
    model_config = Strict
    done: bool
    journal: str | None = Field(None, max_length=10_000, description="private notes; '' clears")


class MilestoneIn(BaseModel):
    model_config = Strict
    reached: bool


class SharingIn(BaseModel):
    model_config = Strict
    scores: bool = False
    homework: bool = False
    milestones: bool = False
    with_facilitator: bool = False


class CodeIn(BaseModel):
    model_config = Strict
    code: str = Field(min_length=10, max_length=20, pattern=r"^[A-Za-z0-9 -]+$")


# --- the participant -------------------------------------------------------------------


@pages.get("/spaces/{registration_id}", summary="The participant's space between sessions")
async def my_space(rid: Participant, views: Views) -> dict[str, Any]:
    return await views.for_participant(rid)


@pages.post(
    "/spaces/{registration_id}/responses",
    status_code=201,
    summary="Answer a questionnaire (a safety item answered at its threshold reaches a person)",
    responses={404: {"description": "no such questionnaire"}, 409: {"description": "closed"}},
)
async def respond(rid: Participant, body: ResponseIn, service: Service, views: Views) -> dict:
    await service.answer(rid, body.questionnaire_id, body.answers, str(body.response_id))
    return await views.for_participant(rid)


@pages.put("/spaces/{registration_id}/homework/{session}", summary="Mark homework, keep notes")
async def homework(
    rid: Participant, session: Session, body: HomeworkIn, service: Service, views: Views
) -> dict[str, Any]:
    await service.mark_homework(rid, session, body.done, body.journal)
    return await views.for_participant(rid)


@pages.put(
    "/spaces/{registration_id}/milestones/{milestone_id}",
    summary="Tick or untick a milestone (ticking sends a short word of encouragement)",
)
async def milestone(
    rid: Participant, milestone_id: Slug, body: MilestoneIn, service: Service, views: Views
) -> dict[str, Any]:
    await service.mark_milestone(rid, milestone_id, body.reached)
    return await views.for_participant(rid)


@pages.put("/spaces/{registration_id}/sharing", summary="What to share, and with the facilitator")
async def sharing(rid: Participant, body: SharingIn, service: Service, views: Views) -> dict:
    kinds = body.model_dump(exclude={"with_facilitator"})
    await service.share(rid, kinds, body.with_facilitator)
    return await views.for_participant(rid)


@pages.post(
    "/spaces/{registration_id}/peer-invitation",
    summary="A code for one member of the cohort to see what you share (shown once, 7 days)",
)
async def invite_peer(rid: Participant, service: Service) -> dict[str, Any]:
    return await service.invite_peer(rid)


@pages.post(
    "/spaces/{registration_id}/peer-invitation/accept",
    summary="Accept a member's code: see what they share with you",
    responses={404: {"description": "no such code, used, expired or of another cohort"}},
)
async def accept_peer(rid: Participant, body: CodeIn, service: Service) -> dict[str, str]:
    await service.accept_peer(rid, body.code)
    return {"status": "accepted"}


@pages.delete("/spaces/{registration_id}/peer", status_code=204, summary="Stop sharing with them")
async def stop_peer(rid: Participant, service: Service) -> None:
    await service.stop_peer(rid)


@pages.delete(
    "/spaces/{registration_id}/shared-with-me",
    status_code=204,
    summary="Stop seeing what members share with you (they are not told who stopped)",
)
async def stop_seeing(rid: Participant, service: Service) -> None:
    await service.stop_seeing(rid)


@pages.get("/spaces/{registration_id}/shared-with-me", summary="What members share with you")
async def shared_with_me(rid: Participant, views: Views) -> list[dict[str, Any]]:
    return await views.shared_with(rid)


@pages.post(
    "/spaces/{registration_id}/feedback/{session}",
    status_code=201,
    summary="Feedback on a session (the facilitator sees it only in aggregate)",
    responses={409: {"description": "already given for this session"}},
)
async def give_feedback(
    rid: Participant, session: Session, body: FeedbackIn, service: Service
) -> dict[str, str]:
    await service.give_feedback(rid, session, body)
    return {"status": "thank you"}


@pages.get("/registrations/{registration_id}/export", summary="Everything progress holds")
async def export(rid: Participant, views: Views) -> dict[str, Any]:
    return await views.export(rid)


# --- coordinators ------------------------------------------------------------------------


def _their_program(program_id: str, who: Principal) -> None:
    if not who.sees(program_id):
        raise NotFound("program_id", "no such program")


@coordinator.get("/programs/{program_id}/plan", summary="A program's work between sessions")
async def get_plan(program_id: Id, views: Views, who: Coordinator) -> dict[str, Any]:
    _their_program(program_id, who)
    return await views.plan(program_id)


@coordinator.put(
    "/programs/{program_id}/plan",
    summary="Set a program's questionnaires, homework and milestones",
    responses={
        200: {
            "description": "The plan as it now stands",
            # An explicit link: what was set is what GET reads (stateful tests follow it).
            "links": {
                "ThePlanSet": {
                    "operationRef": "#/paths/~1programs~1{program_id}~1plan/get",
                    "parameters": {"program_id": "$request.path.program_id"},
                }
            },
        },
        422: {"description": "a band naming a condition, bands not reaching the top"},
    },
)
async def put_plan(program_id: Id, plan: Plan, service: Service, views: Views, who: Coordinator):
    _their_program(program_id, who)
    await service.set_plan(program_id, plan)
    return await views.plan(program_id)


@coordinator.get(
    "/cohorts/{cohort_id}/feedback",
    summary="Feedback per session, in aggregate, once enough people answered",
)
async def cohort_feedback(cohort_id: Id, views: Views, who: Coordinator) -> list[dict]:
    return await views.feedback(cohort_id, who)


@coordinator.get("/cohorts/{cohort_id}/shared", summary="What participants chose to share with you")
async def cohort_shared(cohort_id: Id, views: Views, who: Coordinator) -> list[dict]:
    return await views.shared_with_facilitator(cohort_id, who)
