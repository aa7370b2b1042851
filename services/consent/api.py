"""Consent's HTTP API: the applicant's signing link, and coordinators' forms and evidence."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from consent.domain.forms import FormContent, FormSpec
from consent.domain.signing import SignatureIn
from consent.forms_admin import FormAdmin
from consent.service import ConsentService
from consent.views import ConsentViews, form_out
from shared.app import provided
from shared.errors import Gone
from shared.events import utcnow
from shared.problems import refusals
from shared.security import Principal, Role, require_role

public = APIRouter(tags=["applicants"])
coordinator = APIRouter(tags=["coordinators"])
Coordinator = Annotated[Principal, Depends(require_role(Role.coordinator))]
# The web pages, for an applicant whose registration token registration accepted.
pages = APIRouter(tags=["applicants (through the pages)"])
Pages = Annotated[Principal, Depends(require_role(Role.pages))]

# A signing link is a credential: never cached, never sent on as a Referer.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


Service = Annotated[ConsentService, Depends(provided(ConsentService))]
Views = Annotated[ConsentViews, Depends(provided(ConsentViews))]
Admin = Annotated[FormAdmin, Depends(provided(FormAdmin))]


# --- applicants ----------------------------------------------------------------------


@pages.get(
    "/registrations/{registration_id}/export",
    summary="Everything consent holds about the applicant's registration (their data export)",
)
async def export(registration_id: str, views: Views, _: Pages) -> dict[str, Any]:
    return await views.export(registration_id)


class SignAnswer(BaseModel):
    consent_id: str
    status: str
    signature_id: str
    form_id: str
    form_version: int
    text_sha256: str
    signed_at: datetime
    withdrawal_token: str = Field(
        description="shown once: send it as a bearer token to POST /consents/{id}/withdraw"
    )


@public.get(
    "/consents/{token}",
    summary="The consent form to sign (by the signing link)",
    responses=refusals(Gone),
)
async def form_to_sign(
    token: str,
    service: Service,
    response: Response,
    language: Annotated[str | None, Query(pattern=r"^[a-z]{2}$")] = None,
    accept_language: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    response.headers.update(PRIVATE)
    return await service.to_sign(token, language, accept_language, utcnow())


@public.post(
    "/consents/{token}/sign",
    response_model=SignAnswer,
    summary="Sign the form that was shown",
    responses={
        404: {"description": "unknown link"},
        409: {"description": "link already used, or not the current text"},
        410: {"description": "link expired or replaced"},
        422: {"description": "a clause not acknowledged, no agreement to sign electronically"},
    },
)
async def sign(
    token: str,
    signature: SignatureIn,
    request: Request,
    response: Response,
    service: Service,
    user_agent: Annotated[str | None, Header(max_length=1000)] = None,
) -> SignAnswer:
    response.headers.update(PRIVATE)
    ip = request.client.host if request.client else None
    result = await service.sign(token, signature, ip=ip, user_agent=user_agent, now=utcnow())
    return SignAnswer(**result)


@public.post(
    "/consents/{token}/decline",
    summary="Decline to sign (ends the registration)",
    responses=refusals(Gone),
)
async def decline(token: str, response: Response, service: Service) -> dict[str, Any]:
    response.headers.update(PRIVATE)
    return await service.decline(token, utcnow())


def withdrawal_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            401,
            "the withdrawal token given at signing is required",
            {"WWW-Authenticate": "Bearer"},
        )
    return authorization[7:].strip()


@public.post("/consents/{consent_id}/withdraw", summary="Withdraw a signed consent")
async def withdraw(
    consent_id: str,
    token: Annotated[str, Depends(withdrawal_token)],
    service: Service,
) -> dict[str, Any]:
    return await service.withdraw(consent_id, token)


# --- coordinators: forms ---------------------------------------------------------------


@coordinator.post("/forms", status_code=201, summary="Create a consent form (draft)")
async def create_form(spec: FormSpec, admin: Admin, _: Coordinator) -> dict[str, Any]:
    return form_out(await admin.create_form(spec, utcnow()))


@coordinator.get("/forms", summary="Consent forms")
async def list_forms(
    views: Views,
    _: Coordinator,
    ref: str | None = None,
    program_id: str | None = None,
) -> list[dict[str, Any]]:
    return await views.forms(ref, program_id)


@coordinator.get("/forms/{form_id}", summary="One consent form")
async def get_form(form_id: str, views: Views, _: Coordinator) -> dict[str, Any]:
    return await views.form(form_id)


@coordinator.put("/forms/{form_id}/draft", summary="Replace the draft (versions never change)")
async def edit_draft(
    form_id: str, content: FormContent, admin: Admin, _: Coordinator
) -> dict[str, Any]:
    return form_out(await admin.edit_draft(form_id, content))


@coordinator.post(
    "/forms/{form_id}/publish",
    summary="Freeze the draft as the next version",
    description="Signers of older versions whose registration is not confirmed yet are asked "
    "to sign the new version.",
)
async def publish(form_id: str, admin: Admin, _: Coordinator) -> dict[str, Any]:
    return form_out(await admin.publish(form_id, utcnow()))


@coordinator.get("/forms/{form_id}/versions/{version}", summary="A published version")
async def get_version(form_id: str, version: int, views: Views, _: Coordinator) -> dict[str, Any]:
    return await views.version(form_id, version)


class ReconsentAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_confirmed: bool = Field(
        False, description="also ask confirmed participants (they keep theirs otherwise)"
    )


@coordinator.post(
    "/forms/{form_id}/re-consent",
    status_code=202,
    summary="Ask signers of older versions to sign the current one",
)
async def reconsent_form(
    form_id: str, ask: ReconsentAsk, admin: Admin, _: Coordinator
) -> dict[str, Any]:
    doc = await admin.ask_reconsent(form_id, include_confirmed=ask.include_confirmed, now=utcnow())
    return form_out(doc)


# --- coordinators: a registration's consent -------------------------------------------------
# Only for a registration of the coordinator's programs (the token names them): another
# program's answers 404, as a registration with no consent request does.


async def _consent_in_scope(registration_id: str, who: Coordinator, views: Views) -> Principal:
    program_id = (await views.request(registration_id)).get("program_id")
    who.require(program_id, "registration_id", "no consent request for this registration")
    return who


ConsentCoordinator = Annotated[Principal, Depends(_consent_in_scope)]


@coordinator.get("/registrations/{registration_id}/consent", summary="A registration's consent")
async def get_consent(registration_id: str, views: Views, _: ConsentCoordinator) -> dict[str, Any]:
    return await views.request(registration_id)


@coordinator.post(
    "/registrations/{registration_id}/consent/re-consent",
    summary="Ask this signer to sign the current version again",
)
async def reconsent_one(
    registration_id: str, service: Service, views: Views, _: ConsentCoordinator
) -> dict[str, Any]:
    await service.renew(registration_id, utcnow())
    return await views.request(registration_id)


@coordinator.get(
    "/registrations/{registration_id}/consent/evidence",
    summary="A signature's evidence: the signed text, the record, the chain check",
)
async def evidence(
    registration_id: str,
    views: Views,
    _: ConsentCoordinator,
    signature_id: str | None = None,
) -> dict[str, Any]:
    return await views.evidence(registration_id, signature_id)


@coordinator.get(
    "/registrations/{registration_id}/consent/receipt",
    response_class=HTMLResponse,
    summary="A printable receipt of a signature",
)
async def receipt(
    registration_id: str,
    views: Views,
    _: ConsentCoordinator,
    signature_id: str | None = None,
) -> HTMLResponse:
    found = await views.evidence(registration_id, signature_id)
    html = _templates.get_template("receipt.html.j2").render(e=found, printed_at=utcnow())
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
