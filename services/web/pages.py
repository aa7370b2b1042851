"""The applicant's pages: open groups, signing up, the crisis lines, "my registration".

Each route asks the registration API and renders a page; a refusal is shown beside the
field it names. The sign-up's Idempotency-Key is the form's own token, so sending the
same form twice (a double tap, a retry after a timeout) signs up once.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shared.app import json_file
from shared.ics import build_ics, calendar_joining
from shared.logs import get_logger
from web import forms
from web.clients import ApiProblem, Services, Unavailable, unless_missing
from web.domain.wording import as_seen, seats_word, standing
from web.i18n import Translator
from web.rendering import language, local_time, page
from web.sessions import Form, registration_token, remember_registration

router = APIRouter()
log = get_logger(__name__)


def services(request: Request) -> Services:
    return request.app.state.services


Api = Annotated[Services, Depends(services)]


@router.get("/", response_class=HTMLResponse)
async def groups(request: Request, api: Api) -> HTMLResponse:
    found = await api.call("registration", "GET", "/cohorts")
    lang = language(request)
    shown = [as_seen(g, lang) for g in found]
    return page(request, "groups.html.j2", groups=shown, seats_word=seats_word)


async def _group_page(
    request: Request,
    group: dict[str, Any],
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    form_token: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "group.html.j2",
        status_code=status_code,
        g=as_seen(group, language(request)),
        form=form or {},
        errors=errors or {},
        problem=problem,
        form_token=form_token or str(uuid.uuid4()),
        seats_word=seats_word,
    )


@router.get("/groups/{cohort_id}", response_class=HTMLResponse)
async def group(cohort_id: str, request: Request, api: Api) -> HTMLResponse:
    return await _group_page(
        request, await api.call("registration", "GET", f"/cohorts/{cohort_id}")
    )


@router.post("/groups/{cohort_id}/sign-up", response_class=HTMLResponse)
async def sign_up(cohort_id: str, request: Request, api: Api, form: Form) -> HTMLResponse:
    group = await api.call("registration", "GET", f"/cohorts/{cohort_id}")
    t = Translator(language(request))
    safety_ids = [q["id"] for q in group["safety_questions"]]
    body, missing = forms.application(form, safety_ids, group.get("intake_questions", []))
    token = form.get("form_token") or str(uuid.uuid4())
    if missing:
        errors = {k: t("error.answer_required") for k in missing}
        return await _group_page(
            request,
            group,
            form=dict(form),
            errors=errors,
            problem=t("error.see_fields"),
            form_token=token,
            status_code=422,
        )
    try:
        answer = await api.call(
            "registration",
            "POST",
            f"/cohorts/{cohort_id}/registrations",
            json=body,
            # Registration counts sign-ups per client: it trusts this address from us.
            headers={"Idempotency-Key": token, "X-Forwarded-For": client_of(request)},
        )
    except ApiProblem as refused:
        errors = {} if refused.status == 429 else refused.fields
        errors = {k: _field_message(t, k, v) for k, v in errors.items()}
        problem = t("error.see_fields") if errors else _refusal(t, refused)
        shown = await _group_page(
            request,
            group,
            form=dict(form),
            errors=errors,
            problem=problem,
            form_token=token,
            status_code=refused.status,
        )
        if refused.retry_after:
            shown.headers["Retry-After"] = str(refused.retry_after)
        return shown
    # Nothing names the registration here: the link to it goes only to the mailbox.
    tz = body.get("timezone") or group["sessions"][0]["timezone"]
    until = local_time(answer["verify_by"], tz, language(request))
    if forms.flagged(body["safety_answers"]):
        # A positive safety answer: the crisis lines first, before anything else.
        return page(
            request,
            "crisis.html.j2",
            urgent=True,
            resources=answer["crisis_resources"],
            next_url=None,
            check_email_until=until,
        )
    return page(request, "check_email.html.j2", until=until, status_code=202)


def _field_message(t: Translator, field: str, message: str) -> str:
    known = t(f"error.field.{field}")
    return known if known != f"error.field.{field}" else message


def _refusal(t: Translator, refused: ApiProblem) -> str:
    if refused.status == 409:
        return t("error.conflict_signup")
    if refused.status == 429:
        minutes = max(1, -(-(refused.retry_after or 60) // 60))
        return t("error.too_many_signups", minutes=minutes)
    return refused.detail


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/crisis", response_class=HTMLResponse)
async def crisis(request: Request) -> HTMLResponse:
    return page(request, "crisis.html.j2", urgent=False, resources=[], next_url=None)


@router.get("/my/{registration_id}", response_class=HTMLResponse)
async def my_registration(registration_id: str, request: Request, api: Api) -> HTMLResponse:
    """The link in every email carries ``?t=``: it is kept in the session and the page is
    shown again without it, so the token leaves the address bar and the history."""
    link_token = request.query_params.get("t")
    if link_token:
        remember_registration(request, registration_id, link_token)
        return RedirectResponse(f"/my/{registration_id}", status_code=303)
    reg, group = await mine(request, api, registration_id)
    joining = await joining_details(request, api, reg)
    return page(
        request,
        "my.html.j2",
        reg=reg,
        g=group,
        s=standing(reg["status"]),
        joining=joining,
        has_space=reg["status"] in ENROLLED and await has_space(api, registration_id),
    )


# Where a space between sessions may be: opened on confirmation, kept (closed) after.
ENROLLED = ("confirmed", "withdrawn")


async def has_space(api: Services, registration_id: str) -> bool:
    """Whether progress opened a space between sessions for the registration (it does
    once the place is confirmed). A progress that does not answer hides the link, not
    the registration's page."""
    path = f"/spaces/{registration_id}"
    try:
        found = await unless_missing(
            api.for_applicant(registration_id, "GET", path, service="progress")
        )
    except Unavailable as exc:
        log.warning("progress did not answer", error=str(exc))
        return False
    return found is not None


@router.get("/my/{registration_id}/calendar.ics")
async def calendar(registration_id: str, request: Request, api: Api) -> Response:
    """The sessions for the applicant's calendar, once they have a place. Named
    discreetly: a calendar is seen by others (a shared phone, a family calendar)."""
    reg, group = await mine(request, api, registration_id)
    if reg["status"] != "confirmed":
        raise NotYours()
    t = Translator(language(request))
    settings = request.app.state.settings
    how = calendar_joining(await joining_details(request, api, reg))
    page_url = f"{settings.web_public_url.rstrip('/')}/my/{registration_id}"
    ics = build_ics(
        # The UIDs and SEQUENCE of the emailed calendars: importing both keeps one entry
        # per session, and a later change of sessions replaces it (shared/ics.py).
        uid_prefix=group["cohort_id"],
        sequence=group.get("sessions_sequence", 0),
        summary=t("calendar.summary"),
        sessions=group["sessions"],
        description="\n".join(filter(None, [how.get("description"), page_url])),
        location=how.get("location", ""),
        url=how.get("url", ""),
    )
    return Response(
        ics,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="holdspace.ics"'},
    )


@router.get("/my/{registration_id}/withdraw", response_class=HTMLResponse)
async def confirm_withdraw(registration_id: str, request: Request, api: Api) -> HTMLResponse:
    reg, group = await mine(request, api, registration_id)
    return page(request, "withdraw.html.j2", reg=reg, g=group)


@router.get("/my/{registration_id}/export")
async def export(registration_id: str, request: Request, api: Api) -> Response:
    """What the five services hold about the applicant, as one file to keep."""
    token = registration_token(request, registration_id)
    if token is None:
        return page(request, "my_unknown.html.j2", status_code=403)
    path = f"/registrations/{registration_id}/export"
    # Registration first: it checks the applicant's token before anyone else is asked.
    data = {"registration": await api.call("registration", "GET", path, bearer=token)}
    for service in ("consent", "payments", "notifications", "progress"):
        data[service] = await api.for_applicant(registration_id, "GET", path, service=service)
    return json_file(data, "holdspace-my-data.json")


@router.get("/my/{registration_id}/erase", response_class=HTMLResponse)
async def confirm_erase(registration_id: str, request: Request, api: Api) -> HTMLResponse:
    reg, group = await mine(request, api, registration_id)
    active = standing(reg["status"]).may_withdraw
    return page(request, "erase.html.j2", reg=reg, g=group, s_active=active)


class NotYours(Exception):
    """This browser holds no token registration accepts for the registration: the page
    says to open the emailed link, and nothing about whether the registration exists."""


async def mine(
    request: Request, api: Services, registration_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The registration and its group, when this browser holds the registration's token."""
    token = registration_token(request, registration_id)
    if token is None:
        raise NotYours()
    try:
        reg = await api.call(
            "registration", "GET", f"/registrations/{registration_id}", bearer=token
        )
    except ApiProblem:
        raise NotYours() from None
    group = await api.call("registration", "GET", f"/cohorts/{reg['cohort_id']}")
    return reg, as_seen(group, language(request))


async def joining_details(
    request: Request, api: Services, reg: dict[str, Any]
) -> dict[str, Any] | None:
    """How to join, once the place is confirmed; None until the coordinator has set it."""
    if reg["status"] != "confirmed":
        return None
    token = registration_token(request, reg["registration_id"])
    path = f"/registrations/{reg['registration_id']}/joining"
    return await unless_missing(api.call("registration", "GET", path, bearer=token))


@router.get("/my/{registration_id}/payment", response_class=HTMLResponse)
async def payment(registration_id: str, request: Request, api: Api) -> HTMLResponse:
    reg, group = await mine(request, api, registration_id)
    pay = await api.for_applicant(
        registration_id, "GET", f"/registrations/{registration_id}/payment"
    )
    how = await unless_missing(
        api.call("registration", "GET", f"/programs/{group['program_id']}/payment-instructions")
    )
    return page(request, "payment.html.j2", reg=reg, g=group, pay=pay, how=how or {})


ProgramId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.get("/programs/{program_id}/payment-qr")
async def payment_qr(program_id: ProgramId, api: Api) -> Response:
    """The organisation's payment QR code, served from this site (the pages load nothing
    from another host)."""
    data, content_type = await api.image("registration", f"/programs/{program_id}/payment-qr")
    if content_type not in ("image/png", "image/jpeg"):
        return Response(status_code=404)
    return Response(data, media_type=content_type)


@router.post("/my/{registration_id}/payment/said-paid", response_class=HTMLResponse)
async def said_paid(registration_id: str, request: Request, api: Api, form: Form) -> HTMLResponse:
    await mine(request, api, registration_id)
    await api.for_applicant(
        registration_id, "POST", f"/registrations/{registration_id}/payment/said-paid"
    )
    return RedirectResponse(f"/my/{registration_id}/payment", status_code=303)


@router.post("/my/{registration_id}/verify-email", response_class=HTMLResponse)
async def verify_email(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    """The button on the page the emailed link opens. A button, not the link itself:
    mail scanners open links, and only the applicant should confirm."""
    token = registration_token(request, registration_id)
    if token is None:
        return page(request, "my_unknown.html.j2", status_code=403)
    try:
        await api.call(
            "registration", "POST", f"/registrations/{registration_id}/verify-email", bearer=token
        )
    except ApiProblem as refused:
        if refused.status != 409:
            raise
        said = "my.verify_expired" if "verify_by" in refused.fields else "my.verify_taken"
        return page(request, "verify_refused.html.j2", said=said, status_code=409)
    return RedirectResponse(f"/my/{registration_id}", status_code=303)


@router.post("/my/{registration_id}/{step}", response_class=HTMLResponse)
async def my_step(
    registration_id: str, step: str, request: Request, api: Api, form: Form
) -> HTMLResponse:
    token = registration_token(request, registration_id)
    paths = {"decline-offer": "withdraw", "erase": "erasure"}
    if token is None or step not in ("withdraw", "accept-offer", "decline-offer", "erase"):
        return page(request, "my_unknown.html.j2", status_code=403)
    path = paths.get(step, step)
    await api.call("registration", "POST", f"/registrations/{registration_id}/{path}", bearer=token)
    return RedirectResponse(f"/my/{registration_id}", status_code=303)
