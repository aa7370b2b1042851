"""Registration's HTTP API for setting up: coordinators' programs, cohorts, how to pay
and how to join (the rest of the API is in api.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from registration.access import CohortCoordinator, Coordinator, ProgramCoordinator, Service
from registration.cohorts import CohortControls
from registration.domain.composition import Composition
from registration.domain.programs import (
    QR_MAX_BYTES,
    QR_TYPES,
    Joining,
    PaymentInstructions,
    ProgramSpec,
)
from registration.domain.schedule import CohortEdit, CohortSpec, SessionSpec
from registration.programs import ProgramAdmin
from registration.views import RegistrationViews, cohort_out, program_out
from shared.app import provided
from shared.errors import Forbidden, Invalid
from shared.events import utcnow

setup = APIRouter(tags=["coordinators"])

Views = Annotated[RegistrationViews, Depends(provided(RegistrationViews))]
Admin = Annotated[ProgramAdmin, Depends(provided(ProgramAdmin))]
Controls = Annotated[CohortControls, Depends(provided(CohortControls))]


@setup.post("/programs", status_code=201, summary="Create a program")
async def create_program(spec: ProgramSpec, admin: Admin, who: Coordinator) -> dict:
    if who.programs is not None:
        raise Forbidden("programs", "only a coordinator of every program creates programs")
    return program_out(await admin.create_program(spec))


@setup.get("/programs", summary="All programs")
async def list_programs(views: Views, who: Coordinator) -> list[dict]:
    return [p for p in await views.programs() if who.sees(p["program_id"])]


@setup.get("/programs/{program_id}", summary="One program")
async def get_program(program_id: str, views: Views, _: ProgramCoordinator) -> dict:
    return await views.program(program_id)


@setup.put("/programs/{program_id}", summary="Edit a program")
async def edit_program(
    program_id: str, spec: ProgramSpec, admin: Admin, _: ProgramCoordinator
) -> dict:
    return program_out(await admin.edit_program(program_id, spec))


@setup.put("/programs/{program_id}/payment-instructions", summary="Set how to pay")
async def set_how_to_pay(
    program_id: str, instructions: PaymentInstructions, admin: Admin, _: ProgramCoordinator
) -> dict:
    return await admin.set_payment_instructions(program_id, instructions)


@setup.put(
    "/programs/{program_id}/payment-qr",
    status_code=204,
    summary="Set the payment QR code (the image as the body)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}} for t in QR_TYPES.values()
            },
        }
    },
)
async def set_payment_qr(
    program_id: str, request: Request, admin: Admin, _: ProgramCoordinator
) -> None:
    image = bytearray()
    async for chunk in request.stream():  # read no further than the limit allows
        image += chunk
        if len(image) > QR_MAX_BYTES:
            raise Invalid("qr", f"the image is larger than {QR_MAX_BYTES // 1024} KiB")
    await admin.set_payment_qr(program_id, bytes(image))


@setup.delete("/programs/{program_id}/payment-qr", status_code=204, summary="Remove the QR code")
async def remove_payment_qr(program_id: str, admin: Admin, _: ProgramCoordinator) -> None:
    await admin.set_payment_qr(program_id, None)


@setup.post("/programs/{program_id}/cohorts", status_code=201, summary="Create a cohort")
async def create_cohort(
    program_id: str, spec: CohortSpec, admin: Admin, _: ProgramCoordinator
) -> dict:
    """Sessions one by one, or as a `recurrence` (an RFC 5545 rule at a local time in a
    time zone). For a program signed up for per session (`sign_up_for: session`), each
    session becomes a cohort of its own: the answer is the first, and `cohort_ids`
    lists them all."""
    created = await admin.create_cohort(program_id, spec)
    return {**cohort_out(created[0]), "cohort_ids": [c["_id"] for c in created]}


@setup.patch("/cohorts/{cohort_id}", summary="Edit a cohort's window or durations")
async def edit_cohort(cohort_id: str, edit: CohortEdit, admin: Admin, _: CohortCoordinator) -> dict:
    changes = edit.model_dump(exclude_none=True)
    return cohort_out(await admin.edit_cohort(cohort_id, changes))


@setup.put("/cohorts/{cohort_id}/joining", summary="Set how participants join")
async def set_joining(cohort_id: str, joining: Joining, admin: Admin, _: CohortCoordinator) -> dict:
    """Every confirmed participant is emailed the details with a calendar file that
    updates their entries; later confirmations and reminders carry them too."""
    return await admin.set_joining(cohort_id, joining, utcnow())


@setup.get("/cohorts/{cohort_id}/joining", summary="How participants join")
async def get_joining(cohort_id: str, views: Views, _: CohortCoordinator) -> dict:
    return await views.joining(cohort_id)


class CompositionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    composition: Composition = Field(
        description="mixed, or a single-gender group (women, men), once it is known"
    )


@setup.put("/cohorts/{cohort_id}/composition", summary="Set the cohort's gender make-up")
async def set_composition(
    cohort_id: str, body: CompositionSet, admin: Admin, who: CohortCoordinator
) -> dict:
    """Everyone still in the cohort who asked for a single-gender group it does not give
    is told, and may withdraw until the program's window ends with its refund for that
    case. Setting the same make-up again tells nobody twice."""
    return await admin.set_composition(cohort_id, body.composition, utcnow(), who.subject)


# --- a running cohort: each change is an event, and reaches the people it concerns ---


@setup.post("/cohorts/{cohort_id}/cancel", summary="Cancel the cohort")
async def cancel_cohort(
    cohort_id: str, controls: Controls, service: Service, who: CohortCoordinator
) -> dict:
    """Everyone still in it (confirmed, holding a seat or waiting) is withdrawn and told;
    money paid goes back as the program's `cancellation_refund` says. Registration
    closes. Cancelling again changes nothing; nothing else can change afterwards."""
    done = await controls.cancel(cohort_id, utcnow(), who.subject)
    await service.cohort_settings(cohort_id, fresh=True)
    return done


class CapacitySet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity: int = Field(ge=1, le=200)


@setup.put("/cohorts/{cohort_id}/capacity", summary="Change the cohort's capacity")
async def set_capacity(
    cohort_id: str, body: CapacitySet, controls: Controls, who: CohortCoordinator
) -> dict:
    """New seats are offered down the waitlist in order. Never below the seats already
    held or offered (409)."""
    return await controls.set_capacity(cohort_id, body.capacity, utcnow(), who.subject)


class RegistrationState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    open: bool = Field(description="false closes sign-ups before the window ends")


@setup.put("/cohorts/{cohort_id}/registration", summary="Close or reopen registration")
async def set_registration_open(
    cohort_id: str,
    body: RegistrationState,
    controls: Controls,
    service: Service,
    who: CohortCoordinator,
) -> dict:
    """Closed, the cohort takes no new sign-ups (within seconds on every replica);
    everyone already in it goes on. Reopened, it takes them again within its window."""
    done = await controls.set_registration_open(cohort_id, body.open, utcnow(), who.subject)
    await service.cohort_settings(cohort_id, fresh=True)
    return done


class SessionsSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sessions: list[SessionSpec] = Field(min_length=1, max_length=100)


@setup.put("/cohorts/{cohort_id}/sessions", summary="Change the cohort's sessions")
async def set_sessions(
    cohort_id: str,
    body: SessionsSet,
    controls: Controls,
    service: Service,
    who: CohortCoordinator,
) -> dict:
    """Every confirmed participant is sent the new sessions with a calendar entry that
    replaces the one they have (same UIDs, a higher SEQUENCE)."""
    sessions = [s.model_dump(mode="python") for s in body.sessions]
    done = await controls.set_sessions(cohort_id, sessions, utcnow(), who.subject)
    await service.cohort_settings(cohort_id, fresh=True)
    return done
