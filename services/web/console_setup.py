"""The console's setup: programs (what a group is, its price and rules) and cohorts
(when one runs), written to registration through its coordinators' API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from web.clients import ApiProblem
from web.console import Coordinator
from web.i18n import Translator
from web.pages import Api
from web.rendering import language, page
from web.sessions import Form
from web.setup_forms import SAFETY_ROWS, cohort_spec, program_spec

router = APIRouter(prefix="/console")
# An API field the form asks differently, and where its error is shown.
FORM_FIELD = {
    "price.amount_minor": "price",
    "price.currency": "currency",
    "sessions": "first_date",
    "registration_closes_at": "closes_on",
    "registration_opens_at": "closes_on",
    "safety_questions": "safety_0_text",
}


def form_field(api_field: str) -> str:
    for prefix, name in FORM_FIELD.items():
        if api_field == prefix or api_field.startswith(prefix + "."):
            return name
    return api_field.split(".")[0]


def _errors(request: Request, fields: dict[str, str]) -> dict[str, str]:
    t = Translator(language(request))
    return {
        form_field(f): t("setup.check_this") + (f" ({m})" if m != f else "")
        for f, m in fields.items()
    }


@router.get("/programs", response_class=HTMLResponse)
async def programs(request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    found = await api.as_coordinator(who["email"], "registration", "GET", "/programs")
    cohorts = await api.call("registration", "GET", "/cohorts")
    by_program: dict[str, list[dict[str, Any]]] = {}
    for c in cohorts:
        by_program.setdefault(c["program_id"], []).append(c)
    return page(request, "console/programs.html.j2", who=who, programs=found, cohorts=by_program)


@router.get("/programs/new", response_class=HTMLResponse)
async def new_program(request: Request, who: Coordinator) -> HTMLResponse:
    return _program_form(request, who, {"approval_required": "yes", "currency": "CNY"}, {})


def _program_form(
    request: Request,
    who: dict[str, Any],
    form: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "console/program_form.html.j2",
        status_code=status_code,
        who=who,
        form=form,
        errors=errors,
        rows=range(SAFETY_ROWS),
    )


@router.post("/programs/new", response_class=HTMLResponse)
async def create_program(request: Request, api: Api, who: Coordinator, form: Form) -> HTMLResponse:
    spec, problems = program_spec(form)
    if problems:
        return _program_form(request, who, form, _errors(request, problems), 422)
    try:
        await api.as_coordinator(who["email"], "registration", "POST", "/programs", json=spec)
    except ApiProblem as refused:
        if not refused.fields:
            raise
        return _program_form(request, who, form, _errors(request, refused.fields), refused.status)
    return RedirectResponse("/console/programs", status_code=303)


@router.get("/programs/{program_id}/cohorts/new", response_class=HTMLResponse)
async def new_cohort(program_id: str, request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    program = await api.as_coordinator(
        who["email"], "registration", "GET", f"/programs/{program_id}"
    )
    defaults = {"timezone": "Asia/Shanghai", "first_time": "19:30", "minutes": "90", "weeks": "6"}
    return _cohort_form(request, who, program, defaults, {})


def _cohort_form(
    request: Request,
    who: dict[str, Any],
    program: dict[str, Any],
    form: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "console/cohort_form.html.j2",
        status_code=status_code,
        who=who,
        program=program,
        form=form,
        errors=errors,
    )


@router.post("/programs/{program_id}/cohorts/new", response_class=HTMLResponse)
async def create_cohort(
    program_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    program = await api.as_coordinator(
        who["email"], "registration", "GET", f"/programs/{program_id}"
    )
    spec, problems = cohort_spec(form, datetime.now(UTC))
    if problems:
        return _cohort_form(request, who, program, form, _errors(request, problems), 422)
    try:
        await api.as_coordinator(
            who["email"], "registration", "POST", f"/programs/{program_id}/cohorts", json=spec
        )
    except ApiProblem as refused:
        if not refused.fields:
            raise
        return _cohort_form(
            request, who, program, form, _errors(request, refused.fields), refused.status
        )
    return RedirectResponse("/console/programs", status_code=303)
