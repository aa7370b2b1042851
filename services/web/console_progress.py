"""The console's side of the work between sessions: a program's plan (its
questionnaires, homework and milestones), read and written as JSON through progress's
coordinators' API.

The plan is edited whole, as the JSON progress takes (docs: the Plan model), shown
pretty-printed; what progress refuses (a band that names a condition, bands not
reaching the highest score) is listed by the field at fault, and the text as typed is
kept in the form.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from web.clients import ApiProblem
from web.console import Coordinator
from web.pages import Api
from web.rendering import page
from web.sessions import Form

router = APIRouter(prefix="/console")
ProgramId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
PLAN_LIMIT = 200_000  # characters of the JSON: a plan of three questionnaires fits many times


def pretty(plan: Any) -> str:
    return json.dumps(plan, indent=2, ensure_ascii=False)


def parsed(text: str) -> tuple[Any, dict[str, str]]:
    """The JSON typed, or what is wrong with it (where, as a field named ``plan``)."""
    if len(text) > PLAN_LIMIT:
        return None, {"plan": f"longer than {PLAN_LIMIT} characters"}
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, {"plan": f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"}
    if not isinstance(plan, dict):
        return None, {"plan": "a plan is a JSON object: { ... }"}
    return plan, {}


async def _shown(
    request: Request,
    api: Api,
    who: dict[str, Any],
    program_id: str,
    *,
    text: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    plan = await api.as_coordinator(who, "progress", "GET", f"/programs/{program_id}/plan")
    return page(
        request,
        "console/plan_form.html.j2",
        status_code=status_code,
        who=who,
        program=program,
        plan=plan,
        text=pretty(plan) if text is None else text,
        errors=errors or {},
        saved=request.query_params.get("saved") == "yes" and not errors,
    )


@router.get("/programs/{program_id}/plan", response_class=HTMLResponse)
async def plan_form(
    program_id: ProgramId, request: Request, api: Api, who: Coordinator
) -> HTMLResponse:
    return await _shown(request, api, who, program_id)


@router.post("/programs/{program_id}/plan", response_class=HTMLResponse)
async def set_plan(
    program_id: ProgramId, request: Request, api: Api, who: Coordinator, form: Form
) -> Response:
    """The whole plan replaced; a refusal lists each field progress named."""
    text = form.get("plan", "")
    plan, errors = parsed(text)
    if errors:
        return await _shown(
            request, api, who, program_id, text=text, errors=errors, status_code=422
        )
    try:
        await api.as_coordinator(who, "progress", "PUT", f"/programs/{program_id}/plan", json=plan)
    except ApiProblem as refused:
        if refused.status in (401, 403, 404) or not (refused.fields or refused.detail):
            raise
        said = refused.fields or {"plan": refused.detail}
        errors = {field or "plan": message for field, message in said.items()}
        return await _shown(
            request, api, who, program_id, text=text, errors=errors, status_code=refused.status
        )
    return RedirectResponse(f"/console/programs/{program_id}/plan?saved=yes", status_code=303)
