"""The console's controls over a running group, each one of registration's coordinator
routes: its capacity, its sign-ups closed or reopened, its sessions, its cancellation.
Registration makes each an event and tells the people it concerns."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from web.clients import ApiProblem
from web.console import Coordinator
from web.forms import YES
from web.i18n import Translator
from web.pages import Api
from web.rendering import language, page
from web.sessions import Form
from web.setup_forms import session_lines, sessions_from_lines

router = APIRouter(prefix="/console")


def _back(cohort_id: str, error: str | None = None) -> RedirectResponse:
    query = f"?error={error}" if error else ""
    return RedirectResponse(f"/console/groups/{quote(cohort_id)}{query}#controls", 303)


async def _change(
    api: Api, who: dict[str, Any], cohort_id: str, call: tuple[str, str], body: dict | None
) -> ApiProblem | None:
    """Registration's refusal of a change the state does not allow (409), or None."""
    method, what = call
    try:
        await api.as_coordinator(
            who, "registration", method, f"/cohorts/{quote(cohort_id)}/{what}", json=body
        )
    except ApiProblem as refused:
        if refused.status != 409:
            raise
        return refused
    return None


@router.post("/groups/{cohort_id}/capacity")
async def set_capacity(cohort_id: str, api: Api, who: Coordinator, form: Form) -> RedirectResponse:
    """More seats are offered down the waitlist in order; fewer than are held is refused."""
    capacity = form.get("capacity", "").strip()
    if not capacity.isdigit() or not 1 <= int(capacity) <= 200:
        return _back(cohort_id, "capacity")
    refused = await _change(api, who, cohort_id, ("PUT", "capacity"), {"capacity": int(capacity)})
    return _back(cohort_id, "capacity_low" if refused else None)


@router.post("/groups/{cohort_id}/registration")
async def set_registration(
    cohort_id: str, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    body = {"open": form.get("open") == YES}
    refused = await _change(api, who, cohort_id, ("PUT", "registration"), body)
    return _back(cohort_id, "cancelled" if refused else None)


@router.post("/groups/{cohort_id}/cancel")
async def cancel(cohort_id: str, api: Api, who: Coordinator, form: Form) -> RedirectResponse:
    """Only with the box ticked that says what it does: everyone is told and refunded as
    the program sets; it cannot be undone."""
    if form.get("confirm") != YES:
        return _back(cohort_id, "cancel_confirm")
    await _change(api, who, cohort_id, ("POST", "cancel"), None)
    return _back(cohort_id)


@router.get("/groups/{cohort_id}/sessions", response_class=HTMLResponse)
async def sessions_form(cohort_id: str, request: Request, api: Api, who: Coordinator):
    group = await api.call("registration", "GET", f"/cohorts/{quote(cohort_id)}")
    typed = {"sessions": session_lines(group["sessions"])}
    return page(request, "console/sessions_form.html.j2", who=who, g=group, form=typed, errors={})


@router.post("/groups/{cohort_id}/sessions", response_class=HTMLResponse)
async def set_sessions(
    cohort_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    """Every confirmed participant is sent the new dates with a replacing calendar."""
    group = await api.call("registration", "GET", f"/cohorts/{quote(cohort_id)}")
    sessions, bad_line = sessions_from_lines(
        form.get("sessions", ""), group["sessions"][0]["timezone"]
    )
    if bad_line is None:
        refused = await _change(api, who, cohort_id, ("PUT", "sessions"), {"sessions": sessions})
        if refused is None:
            return _back(cohort_id)
        message = Translator(language(request))("console.controls_cancelled")
    else:
        message = Translator(language(request))("console.sessions_bad_line", n=bad_line)
    return page(
        request,
        "console/sessions_form.html.j2",
        status_code=422 if bad_line else 409,
        who=who,
        g=group,
        form=form,
        errors={"sessions": message},
    )


@router.post("/moves/{registration_id}")
async def move(registration_id: str, api: Api, who: Coordinator, form: Form) -> RedirectResponse:
    """To another group of its program; registration refuses a full group (409)."""
    back = f"/console/registrations/{quote(registration_id)}"
    try:
        await api.as_coordinator(
            who,
            "registration",
            "POST",
            f"/registrations/{quote(registration_id)}/move",
            json={"cohort_id": form.get("cohort_id", "")},
        )
    except ApiProblem as refused:
        if refused.status not in (404, 409, 422):
            raise
        return RedirectResponse(f"{back}?error=move#move-section", status_code=303)
    return RedirectResponse(back, status_code=303)
