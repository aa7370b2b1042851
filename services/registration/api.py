"""Registration's HTTP API: public cohort listings and sign-up, the applicant's own
registration (by its access token), and the coordinator's programs, cohorts and review.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from registration.access import (
    CohortCoordinator,
    RegistrationCoordinator,
)
from registration.answers import (
    CohortView,
    ErasureView,
    RegistrationView,
    SignUpAnswer,
    VerifiedAnswer,
    cohort_view,
)
from registration.domain.ledger import Status
from registration.domain.programs import (
    QR_TYPES,
    Application,
)
from registration.erasure import Erasures, erasure_state
from registration.limits import SignUpLimits
from registration.moves import Moves
from registration.programs import ProgramAdmin
from registration.service import RegistrationService
from registration.signups import SignUps
from registration.views import RegistrationViews
from shared.app import json_file, provided
from shared.events import utcnow

public = APIRouter(tags=["applicants"])
coordinator = APIRouter(tags=["coordinators"])


Service = Annotated[RegistrationService, Depends(provided(RegistrationService))]
Views = Annotated[RegistrationViews, Depends(provided(RegistrationViews))]
Admin = Annotated[ProgramAdmin, Depends(provided(ProgramAdmin))]
Limits = Annotated[SignUpLimits, Depends(provided(SignUpLimits))]
SignUpsDep = Annotated[SignUps, Depends(provided(SignUps))]
ErasuresDep = Annotated[Erasures, Depends(provided(Erasures))]
MovesDep = Annotated[Moves, Depends(provided(Moves))]


# --- public ----------------------------------------------------------------------


@public.get("/cohorts", response_model=list[CohortView], summary="Open cohorts")
async def list_cohorts(views: Views) -> list[CohortView]:
    return [cohort_view(c, p) for c, p in await views.open_cohorts(utcnow())]


@public.get("/cohorts/{cohort_id}", response_model=CohortView, summary="One cohort")
async def get_cohort(cohort_id: str, service: Service) -> CohortView:
    cohort = await service.cohort_settings(cohort_id, fresh=True)
    program = await service.program_cached(cohort["program_id"])
    return cohort_view(cohort, program)


@public.get("/programs/{program_id}/payment-instructions", summary="How to pay, per language")
async def how_to_pay(program_id: str, views: Views) -> dict:
    return await views.how_to_pay(program_id)


@public.get(
    "/programs/{program_id}/payment-qr",
    summary="The organisation's payment QR code",
    response_class=Response,
    responses={200: {"content": {t: {} for t in QR_TYPES.values()}}, 404: {}},
)
async def payment_qr(program_id: str, views: Views) -> Response:
    data, content_type = await views.payment_qr(program_id)
    return Response(data, media_type=content_type, headers={"Cache-Control": "no-cache"})


@public.post(
    "/cohorts/{cohort_id}/registrations",
    status_code=202,
    response_model=SignUpAnswer,
    summary="Sign up for a cohort",
    description=(
        "Stores the sign-up and emails a link to verify the address; nothing is held "
        "until the link is followed (`POST /registrations/{id}/verify-email` with the "
        "link's token). An address already registered for the cohort gets the same "
        "answer, and its owner an email saying so. A retry with the same "
        "Idempotency-Key sends nothing twice."
    ),
    responses={
        409: {"description": "the cohort is not open, or the key was used for another request"},
        429: {"description": "too many sign-ups from this client or for this cohort just now"},
    },
)
async def sign_up(
    cohort_id: str,
    application: Application,
    signups: SignUpsDep,
    limits: Limits,
    request: Request,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=200)],
) -> SignUpAnswer:
    await limits.sign_up(request, cohort_id)
    result = await signups.sign_up(cohort_id, application, idempotency_key, utcnow())
    return SignUpAnswer(verify_by=result.verify_by, crisis_resources=result.crisis_resources)


def applicant_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            401, "the registration's access token is required", {"WWW-Authenticate": "Bearer"}
        )
    return authorization[7:].strip()


ApplicantToken = Annotated[str, Depends(applicant_token)]


@public.get("/registrations/{registration_id}", response_model=RegistrationView)
async def get_registration(
    registration_id: str, token: ApplicantToken, views: Views
) -> RegistrationView:
    doc = await views.own_registration(registration_id, token)
    state = await views.standing(doc)
    return RegistrationView(
        registration_id=doc["_id"],
        cohort_id=doc["cohort_id"],
        status=state["status"],
        waitlist_position=state["position"],
        expires_at=state["expires_at"],
        composition_notice=state.get("composition_notice"),
        cohort_cancelled=state.get("cohort_cancelled", False),
        erasure=erasure_state(doc["_id"], doc["erasure"]) if doc.get("erasure") else None,
    )


async def _step(
    service: RegistrationService,
    registration_id: str,
    step: str,
    *,
    by: str,
    reason: str | None = None,
) -> dict[str, Any]:
    status = await service.change(registration_id, step, utcnow(), reason=reason, by=by)
    return {"registration_id": registration_id, "status": status}


@public.post(
    "/registrations/{registration_id}/verify-email",
    response_model=VerifiedAnswer,
    summary="Verify the email address (the emailed link's token)",
    responses={409: {"description": "the link expired, or the address is already registered"}},
)
async def verify_email(
    registration_id: str, token: ApplicantToken, signups: SignUpsDep, views: Views
) -> VerifiedAnswer:
    doc = await views.own_registration(registration_id, token)
    done = await signups.verify_email(doc, token, utcnow())
    return VerifiedAnswer(
        registration_id=done.registration_id,
        status=done.status,
        waitlist_position=done.position,
        hold_expires_at=done.expires_at,
    )


@public.post("/registrations/{registration_id}/withdraw", summary="Withdraw (applicant)")
async def withdraw(
    registration_id: str, token: ApplicantToken, service: Service, views: Views
) -> dict:
    await views.own_registration(registration_id, token)
    return await _step(service, registration_id, "withdraw", by="applicant")


@public.post("/registrations/{registration_id}/accept-offer", summary="Take an offered seat")
async def accept_offer(
    registration_id: str, token: ApplicantToken, service: Service, views: Views
) -> dict:
    await views.own_registration(registration_id, token)
    return await _step(service, registration_id, "accept_offer", by="applicant")


@public.post(
    "/registrations/{registration_id}/erasure",
    response_model=ErasureView,
    status_code=202,
    summary="Erase my data (applicant)",
    description=(
        "Leaves the group first (a withdrawal: the program's refund policy applies), then "
        "every service erases what it holds. Cannot be undone. `GET` shows which services "
        "have finished; asking again changes nothing."
    ),
)
async def erase_mine(
    registration_id: str, token: ApplicantToken, erasures: ErasuresDep, views: Views
) -> dict:
    doc = await views.own_registration(registration_id, token)
    return await erasures.request(doc, "applicant", utcnow())


@public.get(
    "/registrations/{registration_id}/erasure",
    response_model=ErasureView,
    summary="How far the erasure of my data is",
)
async def my_erasure(
    registration_id: str, token: ApplicantToken, erasures: ErasuresDep, views: Views
) -> dict:
    await views.own_registration(registration_id, token)
    return await erasures.state(registration_id)


@public.get(
    "/registrations/{registration_id}/export",
    summary="Everything registration holds about my registration",
    description="Opened, as a JSON file to keep: the personal fields, the answers, the history.",
)
async def export_mine(registration_id: str, token: ApplicantToken, views: Views) -> Response:
    doc = await views.own_registration(registration_id, token)
    return json_file(await views.export(doc), "holdspace-registration.json")


@public.get("/registrations/{registration_id}/joining", summary="How to join (confirmed only)")
async def own_joining(registration_id: str, token: ApplicantToken, views: Views) -> dict:
    return await views.own_joining(await views.own_registration(registration_id, token))


# --- coordinators ----------------------------------------------------------------
# A coordinator acts on the programs their token names (shared/tokens.py): a program,
# cohort or registration of another program answers 404, as one that does not exist.


@coordinator.get("/cohorts/{cohort_id}/registrations", summary="A cohort's registrations")
async def list_registrations(
    cohort_id: str,
    views: Views,
    _: CohortCoordinator,
    status: Annotated[list[Status] | None, Query()] = None,
    flagged: bool | None = None,
) -> list[dict]:
    return await views.registrations(cohort_id, status, flagged)


@coordinator.get(
    "/registrations/{registration_id}/record", summary="One registration and its history"
)
async def record(registration_id: str, views: Views, _: RegistrationCoordinator) -> dict:
    return await views.record(registration_id)


@coordinator.get("/cohorts/{cohort_id}/roster", summary="Who holds a seat")
async def roster(cohort_id: str, views: Views, _: CohortCoordinator) -> dict:
    return await views.roster(cohort_id)


@coordinator.get("/cohorts/{cohort_id}/waitlist", summary="The waitlist in order")
async def waitlist(cohort_id: str, views: Views, _: CohortCoordinator) -> dict:
    return await views.waitlist(cohort_id)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(
        None,
        max_length=2000,
        description="why, in the coordinator's words: sealed, kept in the history with who",
    )


@coordinator.post(
    "/registrations/{registration_id}/erase",
    response_model=ErasureView,
    status_code=202,
    summary="Erase an applicant's data, at their request",
)
async def erase_for_applicant(
    registration_id: str, erasures: ErasuresDep, views: Views, who: RegistrationCoordinator
) -> dict:
    doc = await views.registration_doc(registration_id)
    return await erasures.request(doc, who.subject, utcnow())


@coordinator.post("/registrations/{registration_id}/approve", summary="Approve, saying why")
async def approve(
    registration_id: str,
    service: Service,
    who: RegistrationCoordinator,
    decision: Decision | None = None,
) -> dict:
    reason = decision.reason if decision else None
    return await _step(service, registration_id, "approve", by=who.subject, reason=reason)


@coordinator.post("/registrations/{registration_id}/reject", summary="Reject with a reason")
async def reject(
    registration_id: str, decision: Decision, service: Service, who: RegistrationCoordinator
) -> dict:
    return await _step(service, registration_id, "reject", by=who.subject, reason=decision.reason)


class MoveTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cohort_id: str = Field(min_length=1, max_length=64, description="a cohort of the same program")


@coordinator.post(
    "/registrations/{registration_id}/move", summary="Move to another cohort of the program"
)
async def move(
    registration_id: str, to: MoveTo, moves: MovesDep, who: RegistrationCoordinator
) -> dict:
    """The registration keeps its status in the other cohort: a place held takes a free
    place there (none free: 409), a place on the waitlist goes to its end. The person is
    emailed the new group's sessions; a confirmed place ends in one cohort and begins in
    the other for subscribers. Asking again changes nothing."""
    return await moves.move(registration_id, to.cohort_id, utcnow(), who.subject)
