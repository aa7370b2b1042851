"""The coordinators' console: sign in, safety flags first, the review queue, rosters.

Every page needs a signed-in coordinator (an account made with ``ops web
add-coordinator``); the services are called with a short token minted for that
coordinator, so each service's audit names who did what.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from shared.errors import TooMany
from shared.logs import get_logger
from shared.security import ALL_PROGRAMS, normalize_email
from web.clients import ApiProblem, Services, Unavailable, unless_missing
from web.domain.history import timeline
from web.i18n import Translator
from web.pages import Api
from web.rendering import language, page
from web.sessions import Form, sign_in, signed_in

log = get_logger(__name__)
router = APIRouter(prefix="/console")
OPEN = (
    "unverified",  # a safety flag is shown before the address is verified
    "submitted",
    "pending_review",
    "approved",
    "awaiting_consent",
    "awaiting_payment",
    "waitlisted",
    "offered",
)


class SignInRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


async def coordinator(request: Request) -> dict[str, Any]:
    """The signed-in account as it is now: its id, name and programs are read on every
    request, so a deactivation or a change of programs counts at the next click."""
    who = signed_in(request)
    account = who and await request.app.state.accounts.current(who["email"])
    if account is None:
        request.session.pop("coordinator", None)
        raise SignInRequired(request.url.path)
    return account


Coordinator = Annotated[dict[str, Any], Depends(coordinator)]


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> HTMLResponse:
    return page(
        request,
        "console/sign_in.html.j2",
        next_url=request.query_params.get("next", "/console"),
        error=None,
    )


async def _sign_in_allowed(request: Request, email: str) -> int | None:
    """None, or the seconds to wait: password guessing is slowed per client and per
    account, and a refused attempt checks no password at all."""
    settings, limits = request.app.state.settings, request.app.state.limits
    client = request.client.host if request.client else "unknown"
    try:
        await limits.take(settings.sign_in_limit_per_client, "sign-in", client)
        await limits.take(settings.sign_in_limit_per_account, "sign-in", normalize_email(email))
    except TooMany as refused:
        log.info("sign-in attempts limited", retry_after_s=refused.retry_after)
        return refused.retry_after
    return None


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in_post(request: Request, form: Form) -> HTMLResponse:
    email = form.get("email", "")
    next_url = form.get("next", "/console")
    if not next_url.startswith("/console"):
        next_url = "/console"
    t = Translator(language(request))
    wait = await _sign_in_allowed(request, email)
    account = (
        None if wait else await request.app.state.accounts.verify(email, form.get("password", ""))
    )
    if account is None:
        minutes = max(1, -(-(wait or 0) // 60))
        shown = page(
            request,
            "console/sign_in.html.j2",
            status_code=429 if wait else 401,
            next_url=next_url,
            error=t("console.sign_in_limited", minutes=minutes)
            if wait
            else t("console.sign_in_failed"),
            email=email,
        )
        if wait:
            shown.headers["Retry-After"] = str(wait)
        return shown
    sign_in(request, account["email"], account["name"])
    return RedirectResponse(next_url, status_code=303)


@router.post("/sign-out")
async def sign_out(request: Request, form: Form) -> RedirectResponse:
    """The session ends, and every token minted for the account so far is revoked in
    every service (its other sessions mint new ones at their next click)."""
    who = signed_in(request)
    account = who and await request.app.state.accounts.current(who["email"])
    request.session.clear()
    if account is not None:
        await request.app.state.accounts.revoke(account["account_id"], "signed_out")
    return RedirectResponse("/console/sign-in", status_code=303)


async def _registrations(
    api: Services, who: dict[str, Any], groups: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    async def of(group: dict[str, Any]) -> list[dict[str, Any]]:
        regs = await api.as_coordinator(
            who,
            "registration",
            "GET",
            f"/cohorts/{group['cohort_id']}/registrations",
            params={"status": list(OPEN)},
        )
        return [{**r, "group": group} for r in regs]

    found = await asyncio.gather(*(of(g) for g in groups))
    return [r for regs in found for r in regs]


def _named(alert: dict[str, Any] | None, names: dict[str, str]) -> dict[str, Any] | None:
    """The alert with the name of the coordinator who acknowledged it, not their id."""
    if alert is None or not alert.get("acknowledged"):
        return alert
    ack = alert["acknowledged"]
    return {**alert, "acknowledged": {**ack, "by": names.get(ack["by"], ack["by"])}}


async def _with_alerts(
    api: Services, who: dict[str, Any], flagged: list[dict[str, Any]], names: dict[str, str]
) -> list[dict[str, Any]]:
    """Each flag with its alert: who acknowledged it, or when it is sent again."""

    async def alert(rid: str) -> Any:
        return await unless_missing(
            api.as_coordinator(who, "notifications", "GET", f"/safety-alerts/{rid}")
        )

    found = await asyncio.gather(*(alert(r["registration_id"]) for r in flagged))
    return [{**r, "alert": _named(a, names)} for r, a in zip(flagged, found, strict=True)]


def in_scope(who: dict[str, Any], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of the coordinator's programs (every group for a lead)."""
    if who["programs"] == ALL_PROGRAMS:
        return groups
    return [g for g in groups if g["program_id"] in who["programs"]]


@router.get("", response_class=HTMLResponse)
async def home(request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    groups = in_scope(who, await api.call("registration", "GET", "/cohorts"))
    regs = await _registrations(api, who, groups)
    names = await request.app.state.accounts.names()
    flagged = await _with_alerts(api, who, [r for r in regs if r["flagged_for_safety"]], names)
    review = [r for r in regs if r["status"] == "pending_review" and not r["flagged_for_safety"]]
    return page(
        request,
        "console/home.html.j2",
        who=who,
        groups=groups,
        flagged=flagged,
        review=review,
    )


@router.get("/groups/{cohort_id}", response_class=HTMLResponse)
async def group(cohort_id: str, request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    g = await api.call("registration", "GET", f"/cohorts/{cohort_id}")
    me = who
    roster, waitlist, joining, budget, progress = await asyncio.gather(
        api.as_coordinator(me, "registration", "GET", f"/cohorts/{cohort_id}/roster"),
        api.as_coordinator(me, "registration", "GET", f"/cohorts/{cohort_id}/waitlist"),
        unless_missing(
            api.as_coordinator(me, "registration", "GET", f"/cohorts/{cohort_id}/joining")
        ),
        unless_missing(
            api.as_coordinator(me, "payments", "GET", f"/cohorts/{cohort_id}/scholarship-budget")
        ),
        between_sessions(api, me, g),
    )
    return page(
        request,
        "console/group.html.j2",
        who=who,
        g=g,
        roster={**roster, "seats": [{**r, "group": g} for r in roster["seats"]]},
        waitlist={**waitlist, "waitlist": [{**r, "group": g} for r in waitlist["waitlist"]]},
        joining=joining,
        budget=budget,
        progress=progress,
        error=request.query_params.get("error"),
    )


async def between_sessions(api: Services, who: dict[str, Any], g: dict[str, Any]) -> Any:
    """The cohort's feedback in aggregate and what participants share with the
    facilitator, with the program's plan to name it; None when progress does not
    answer (the rest of the group's page is still shown)."""
    cohort, program = g["cohort_id"], g["program_id"]
    try:
        feedback, shared, plan = await asyncio.gather(
            api.as_coordinator(who, "progress", "GET", f"/cohorts/{cohort}/feedback"),
            api.as_coordinator(who, "progress", "GET", f"/cohorts/{cohort}/shared"),
            api.as_coordinator(who, "progress", "GET", f"/programs/{program}/plan"),
        )
    except (Unavailable, ApiProblem) as exc:
        if isinstance(exc, ApiProblem) and exc.status != 404:
            raise
        log.warning("progress did not answer for the group's page", error=str(exc))
        return None
    return {"feedback": feedback, "shared": shared, "plan": plan}


RegistrationId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.get("/registrations/{registration_id}", response_class=HTMLResponse)
async def registration(
    registration_id: RegistrationId, request: Request, api: Api, who: Coordinator
) -> HTMLResponse:
    """One registration: who, what they answered, where it stands, and its history."""
    record = await api.as_coordinator(
        who, "registration", "GET", f"/registrations/{registration_id}/record"
    )
    case = await unless_missing(  # None: no payment yet (before consent) or none needed
        api.as_coordinator(
            who, "payments", "GET", f"/registrations/{registration_id}/payment/record"
        )
    )
    group = await api.call("registration", "GET", f"/cohorts/{record['cohort_id']}")
    targets = [  # where a coordinator may move it: the program's other open groups
        g
        for g in await api.call("registration", "GET", "/cohorts")
        if g["program_id"] == group["program_id"] and g["cohort_id"] != group["cohort_id"]
    ]
    return page(
        request,
        "console/registration.html.j2",
        who=who,
        r={**record, "group": group},
        targets=targets,
        error=request.query_params.get("error"),
        case=case,
        lines=timeline(record, case),
        names=await request.app.state.accounts.names(),
    )


@router.post("/registrations/{registration_id}/{decision}")
async def decide(
    registration_id: str, decision: str, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    if decision not in ("approve", "reject", "erase"):
        raise HTTPException(404)
    if decision == "erase" and form.get("asked") != "yes":
        raise HTTPException(422, "confirm that the applicant asked for the erasure")
    # Why, in the coordinator's words: kept (sealed) in the history beside who decided.
    body = {"reason": form.get("reason") or None} if decision != "erase" else None
    await api.as_coordinator(
        who,
        "registration",
        "POST",
        f"/registrations/{registration_id}/{decision}",
        json=body,
    )
    back = form.get("back", "")
    return RedirectResponse(back if back.startswith("/console") else "/console", status_code=303)


@router.post("/safety-alerts/{registration_id}/acknowledge")
async def acknowledge_flag(
    registration_id: RegistrationId, request: Request, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    """ "I am handling this": the alert is not sent again, and the others see who has it."""
    await api.as_coordinator(
        who, "notifications", "POST", f"/safety-alerts/{registration_id}/acknowledge"
    )
    return RedirectResponse("/console#flags", status_code=303)


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    return RedirectResponse(f"/console/sign-in?next={quote(exc.next_url)}", status_code=303)
