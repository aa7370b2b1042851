"""Payments' HTTP API: provider webhooks (verified by signature, no bearer token) and the
coordinators' payments, flags, manual confirmations (maker-checker), refunds and scholarships.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from payments.access import NO_PAYMENT, PaymentAccess
from payments.manual import ManualConfirmations
from payments.scholarships import Scholarships
from payments.service import PaymentService
from payments.views import PaymentViews
from shared.app import provided
from shared.logs import get_logger
from shared.security import Principal, Role, require_role

log = get_logger(__name__)
coordinator = APIRouter(tags=["coordinators"])
Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]
# The web pages, for an applicant whose registration token registration accepted.
pages = APIRouter(tags=["applicants (through the pages)"])
Pages = Annotated[Principal, Depends(require_role(Role.pages))]


Service = Annotated[PaymentService, Depends(provided(PaymentService))]
Views = Annotated[PaymentViews, Depends(provided(PaymentViews))]
Access = Annotated[PaymentAccess, Depends(provided(PaymentAccess))]
Manual = Annotated[ManualConfirmations, Depends(provided(ManualConfirmations))]
ScholarshipDecisions = Annotated[Scholarships, Depends(provided(Scholarships))]


Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
AmountMinor = Annotated[int, Field(ge=0, le=100_000_000, description="minor units")]
# Ids and references are printable ASCII: nothing that cannot be stored (NUL) or shown.
PRINTABLE = r"^[\x20-\x7e]+$"


# Path ids (uuids, hex flag ids, cohort ids): refused early when they could not be ours.
Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


def printable(*values: str) -> bool:
    return all(v and len(v) <= 128 and re.fullmatch(PRINTABLE, v) for v in values)


# --- applicants, through the pages ---------------------------------------------------------


@pages.get("/registrations/{registration_id}/payment", summary="What the applicant pays")
async def applicant_payment(registration_id: Id, views: Views, _: Pages) -> dict:
    return await views.for_applicant(registration_id)


@pages.post(
    "/registrations/{registration_id}/payment/said-paid",
    summary="The applicant says they transferred the money (two coordinators confirm it)",
    responses={409: {"description": "no payment is requested now"}},
)
async def said_paid(registration_id: Id, service: Service, views: Views, _: Pages) -> dict:
    await service.applicant_says_paid(registration_id)
    return await views.for_applicant(registration_id)


@pages.get(
    "/registrations/{registration_id}/export",
    summary="Everything payments holds about the applicant's registration (their data export)",
)
async def export(registration_id: Id, views: Views, _: Pages) -> dict:
    return await views.export(registration_id)


# --- coordinators: payments ------------------------------------------------------------------


@coordinator.get("/payments", summary="Payments, optionally by status")
async def list_payments(
    views: Views,
    who: Coordinator,
    status: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict]:
    return await views.payments(status, limit, PaymentAccess.query(who))


@coordinator.get("/payments/{payment_id}", summary="One payment")
async def get_payment(payment_id: Id, views: Views, access: Access, who: Coordinator) -> dict:
    await access.payment(who, payment_id)
    return await views.payment(payment_id)


@coordinator.get(
    "/registrations/{registration_id}/payment/record", summary="A registration's payment"
)
async def registration_payment(
    registration_id: Id, views: Views, access: Access, who: Coordinator
) -> dict:
    await access.registration(who, registration_id, "registration_id", NO_PAYMENT)
    return await views.case(registration_id)


class FailBody(BaseModel):
    model_config = Strict
    reason_code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")


@coordinator.post("/payments/{payment_id}/fail", summary="End an unpaid request as failed")
async def fail_payment(
    payment_id: Id, body: FailBody, service: Service, access: Access, who: Coordinator
) -> dict:
    await access.payment(who, payment_id)
    return await service.fail(payment_id, body.reason_code, who.subject)


@coordinator.get("/refunds", summary="Refunds the refund policy calls for")
async def list_refunds(
    views: Views,
    who: Coordinator,
    status: Annotated[Literal["to_be_made", "made", "none"], Query()] = "to_be_made",
) -> list[dict]:
    return await views.refunds(status, PaymentAccess.query(who))


@coordinator.post("/payments/{payment_id}/refund-made", summary="Record a refund as made")
async def refund_made(payment_id: Id, service: Service, access: Access, who: Coordinator) -> dict:
    await access.payment(who, payment_id)
    return await service.refund_made(payment_id, who.subject)


# --- coordinators: flags -----------------------------------------------------------------------


@coordinator.get("/flags", summary="Notifications flagged for a coordinator")
async def list_flags(
    views: Views,
    who: Coordinator,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = "open",
) -> list[dict]:
    return await views.flags(status, PaymentAccess.query(who))


class ResolveBody(BaseModel):
    model_config = Strict
    note: str | None = Field(None, max_length=1000)


@coordinator.post("/flags/{flag_id}/resolve", summary="Mark a flag as handled")
async def resolve_flag(
    flag_id: Id, body: ResolveBody, service: Service, access: Access, who: Coordinator
) -> dict:
    await access.flag(who, flag_id)
    return await service.resolve_flag(flag_id, body.note, who.subject)


# --- coordinators: manual confirmation (maker-checker) -----------------------------------------


class ManualMark(BaseModel):
    model_config = Strict
    reference: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    amount_minor: AmountMinor
    currency: Currency
    evidence: str | None = Field(
        None, max_length=500, description="where the transfer was seen (sealed at rest)"
    )


@coordinator.post(
    "/manual-confirmations",
    status_code=201,
    summary="Mark a transfer as received (counts once another coordinator approves)",
    responses={
        404: {"description": "unknown reference (flagged)"},
        409: {"description": "a mismatch (flagged) or a confirmation already waiting"},
    },
)
async def mark_manual(
    body: ManualMark,
    manual: Manual,
    access: Access,
    who: Coordinator,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=8, max_length=200),
        # Optional, so absent, never null: a header has no null to send.
        WithJsonSchema({"type": "string", "minLength": 8, "maxLength": 200}),
    ] = None,
) -> dict:
    await access.reference(who, body.reference)
    return await manual.mark_manual(
        reference=body.reference,
        amount_minor=body.amount_minor,
        currency=body.currency,
        evidence=body.evidence,
        by=who.subject,
        idempotency_key=idempotency_key,
    )


@coordinator.get("/manual-confirmations", summary="Payments with a confirmation to approve")
async def pending_manual(views: Views, who: Coordinator) -> list[dict]:
    return await views.awaiting_approval(PaymentAccess.query(who))


class Why(BaseModel):
    model_config = Strict
    reason: str | None = Field(
        None,
        max_length=1000,
        description="why, in the coordinator's words: sealed, kept beside who decided",
    )


def _reason(why: Why | None) -> str | None:
    return why.reason if why else None


@coordinator.post(
    "/manual-confirmations/{confirmation_id}/approve",
    summary="Approve another coordinator's manual confirmation",
    responses={403: {"description": "the maker cannot approve their own"}},
)
async def approve_manual(
    confirmation_id: Id, manual: Manual, access: Access, who: Coordinator, why: Why | None = None
) -> dict:
    await access.confirmation(who, confirmation_id)
    return await manual.decide_manual(
        confirmation_id, approve=True, by=who.subject, reason=_reason(why)
    )


@coordinator.post(
    "/manual-confirmations/{confirmation_id}/reject", summary="Reject a manual confirmation"
)
async def reject_manual(
    confirmation_id: Id, manual: Manual, access: Access, who: Coordinator, why: Why | None = None
) -> dict:
    await access.confirmation(who, confirmation_id)
    return await manual.decide_manual(
        confirmation_id, approve=False, by=who.subject, reason=_reason(why)
    )


# --- coordinators: scholarships --------------------------------------------------------------


class Budget(BaseModel):
    model_config = Strict
    amount_minor: AmountMinor
    currency: Currency
    program_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the cohort's program; a coordinator of some programs must give it",
    )


@coordinator.put("/cohorts/{cohort_id}/scholarship-budget", summary="Set a cohort's budget")
async def set_budget(
    cohort_id: Id,
    body: Budget,
    scholarships: ScholarshipDecisions,
    access: Access,
    who: Coordinator,
) -> dict:
    await access.budget(who, cohort_id, body.program_id, setting=True)
    return await scholarships.set_budget(
        cohort_id, body.amount_minor, body.currency, body.program_id
    )


@coordinator.get("/cohorts/{cohort_id}/scholarship-budget", summary="A cohort's budget")
async def get_budget(cohort_id: Id, views: Views, access: Access, who: Coordinator) -> dict:
    await access.budget(who, cohort_id, None, setting=False)
    return await views.budget(cohort_id)


@coordinator.get("/scholarships", summary="Scholarship requests")
async def list_scholarships(
    views: Views,
    who: Coordinator,
    status: Annotated[Literal["requested", "granted", "declined"], Query()] = "requested",
) -> list[dict]:
    return await views.scholarships(status, PaymentAccess.query(who))


class Grant(BaseModel):
    model_config = Strict
    amount_due_minor: AmountMinor = Field(description="what the applicant pays; 0 waives it")
    reason: str | None = Field(
        None, max_length=1000, description="why (sealed, kept beside who decided)"
    )


@coordinator.post("/scholarships/{registration_id}/grant", summary="Grant a reduced amount")
async def grant(
    registration_id: Id,
    body: Grant,
    scholarships: ScholarshipDecisions,
    access: Access,
    who: Coordinator,
) -> dict:
    await access.registration(who, registration_id, "registration_id", NO_PAYMENT)
    return await scholarships.grant(
        registration_id, body.amount_due_minor, who.subject, body.reason
    )


@coordinator.post("/scholarships/{registration_id}/decline", summary="Decline a request")
async def decline(
    registration_id: Id,
    scholarships: ScholarshipDecisions,
    access: Access,
    who: Coordinator,
    why: Why | None = None,
) -> dict:
    await access.registration(who, registration_id, "registration_id", NO_PAYMENT)
    return await scholarships.decline(registration_id, who.subject, _reason(why))
