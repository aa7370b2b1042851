"""The console's setup: programs (what a group is, its price and rules, how to pay),
cohorts (when one runs) and how a cohort's participants join, written to registration
through its coordinators' API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from web.clients import ApiProblem, Services, unless_missing
from web.console import Coordinator
from web.i18n import Translator
from web.pages import Api
from web.rendering import language, page
from web.sessions import FileTooLarge, Form, uploaded
from web.setup_forms import cohort_spec, kept_from, program_form, program_spec, rows

router = APIRouter(prefix="/console")
# Registration's limits, checked here first so nothing is sent that it would refuse.
QR_LIMIT = 256 * 1024  # bytes of the QR code image
WORDS_LIMIT = 2000  # characters of payment instructions per language
Again = Callable[[dict[str, str], int], HTMLResponse]  # the form again: errors, status
# An API field the form asks differently, and where its error is shown.
FORM_FIELD = {
    "price.amount_minor": "price",
    "price.currency": "currency",
    "sessions": "first_date",
    "registration_closes_at": "closes_on",
    "registration_opens_at": "closes_on",
    "safety_questions": "safety_0_text",
    "intake_questions": "intake_0_text",
    "translation.description": "translation_description",
    "translation": "translation_title",
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


def _form(
    request: Request, who: dict[str, Any], template: str, form: dict[str, str], **shown: Any
) -> Again:
    """The form page ``template`` with what was typed in ``form``, ready to show again."""

    def again(errors: dict[str, str], status_code: int) -> HTMLResponse:
        return page(
            request,
            f"console/{template}",
            status_code=status_code,
            who=who,
            form=form,
            errors=errors,
            **shown,
        )

    return again


def _program_form(
    request: Request, who: dict[str, Any], form: dict[str, str], editing: str = "", spare: int = 0
) -> Again:
    """The program form, new or ``editing`` a program (its id), with a row for each
    question the form holds and ``spare`` empty rows more."""
    questions = {"rows": rows(form, "safety", spare), "intake": rows(form, "intake", spare)}
    return _form(request, who, "program_form.html.j2", form, editing=editing, **questions)


@router.get("/programs", response_class=HTMLResponse)
async def programs(request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    found = await api.as_coordinator(who, "registration", "GET", "/programs")
    cohorts = await api.call("registration", "GET", "/cohorts")
    by_program: dict[str, list[dict[str, Any]]] = {}
    for c in cohorts:
        by_program.setdefault(c["program_id"], []).append(c)
    return page(request, "console/programs.html.j2", who=who, programs=found, cohorts=by_program)


@router.get("/programs/new", response_class=HTMLResponse)
async def new_program(request: Request, who: Coordinator) -> HTMLResponse:
    defaults = {"approval_required": "yes", "currency": "CNY", "composition_refund": "refundable"}
    return _program_form(request, who, defaults)({}, 200)


@router.post("/programs/new", response_class=HTMLResponse)
async def create_program(request: Request, api: Api, who: Coordinator, form: Form) -> HTMLResponse:
    spec, problems = program_spec(form)
    again = _program_form(request, who, form)
    return await _send(request, api, who, ("POST", "/programs"), spec, problems, again)


@router.get("/programs/{program_id}/edit", response_class=HTMLResponse)
async def edit_program_form(
    program_id: str, request: Request, api: Api, who: Coordinator
) -> HTMLResponse:
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    return _program_form(request, who, program_form(program), program_id, spare=1)({}, 200)


@router.post("/programs/{program_id}/edit", response_class=HTMLResponse)
async def edit_program(
    program_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    """Registration replaces the program whole: what the form does not show (its crisis
    resources, the ids of the answers to choose from) is sent as it is now."""
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    spec, problems = program_spec(form)
    again = _program_form(request, who, form, program_id)
    call = ("PUT", f"/programs/{program_id}")
    return await _send(request, api, who, call, kept_from(program, spec), problems, again)


@router.get("/programs/{program_id}/cohorts/new", response_class=HTMLResponse)
async def new_cohort(program_id: str, request: Request, api: Api, who: Coordinator) -> HTMLResponse:
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    defaults = {"timezone": "Asia/Shanghai", "first_time": "19:30", "minutes": "90", "weeks": "6"}
    return _form(request, who, "cohort_form.html.j2", defaults, program=program)({}, 200)


@router.post("/programs/{program_id}/cohorts/new", response_class=HTMLResponse)
async def create_cohort(
    program_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    spec, problems = cohort_spec(form, datetime.now(UTC))
    again = _form(request, who, "cohort_form.html.j2", form, program=program)
    path = f"/programs/{program_id}/cohorts"
    return await _send(request, api, who, ("POST", path), spec, problems, again)


@router.get("/programs/{program_id}/payment", response_class=HTMLResponse)
async def how_to_pay_form(
    program_id: str, request: Request, api: Api, who: Coordinator
) -> HTMLResponse:
    program = await api.as_coordinator(who, "registration", "GET", f"/programs/{program_id}")
    now = await api.call("registration", "GET", f"/programs/{program_id}/payment-instructions")
    form = {"en": now.get("en", ""), "zh": now.get("zh", "")}
    again = _form(request, who, "payment_form.html.j2", form, program=program, qr=now["qr"])
    return again({}, 200)


@router.post("/programs/{program_id}/payment", response_class=HTMLResponse)
async def set_how_to_pay(
    program_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    """The QR code first (a new image, or none if asked), then the words in each
    language, checked here first: a refusal leaves nothing half-written."""
    me = who
    program = await api.as_coordinator(me, "registration", "GET", f"/programs/{program_id}")
    now = await api.call("registration", "GET", f"/programs/{program_id}/payment-instructions")
    again = _form(request, who, "payment_form.html.j2", form, program=program, qr=now["qr"])
    words = {lang: form[lang].strip() for lang in ("en", "zh") if form.get(lang, "").strip()}
    problems = {lang: "too long" for lang, text in words.items() if len(text) > WORDS_LIMIT}
    try:
        image = await uploaded(request, "qr", QR_LIMIT)
    except FileTooLarge:
        problems["qr"] = f"larger than {QR_LIMIT // 1024} KiB"
    if problems:
        return again(_errors(request, problems), 413 if "qr" in problems else 422)
    path = f"/programs/{program_id}"
    try:
        if form.get("remove_qr") == "yes":
            await api.as_coordinator(me, "registration", "DELETE", f"{path}/payment-qr")
        elif image:
            data, content_type = image
            await api.as_coordinator(
                me,
                "registration",
                "PUT",
                f"{path}/payment-qr",
                content=data,
                headers={"Content-Type": content_type},
            )
        await api.as_coordinator(
            me, "registration", "PUT", f"{path}/payment-instructions", json=words
        )
    except ApiProblem as refused:
        fields = refused.fields or ({"qr": refused.detail} if refused.status == 413 else {})
        if not fields:
            raise
        return again(_errors(request, fields), refused.status)
    return RedirectResponse("/console/programs", status_code=303)


JOINING_FIELDS = ("platform", "url", "meeting_id", "passcode", "notes")


@router.get("/groups/{cohort_id}/joining", response_class=HTMLResponse)
async def joining_form(
    cohort_id: str, request: Request, api: Api, who: Coordinator
) -> HTMLResponse:
    group = await api.call("registration", "GET", f"/cohorts/{cohort_id}")
    now = await unless_missing(
        api.as_coordinator(who, "registration", "GET", f"/cohorts/{cohort_id}/joining")
    )
    return _form(request, who, "joining_form.html.j2", now or {}, g=group)({}, 200)


@router.post("/groups/{cohort_id}/joining", response_class=HTMLResponse)
async def set_joining(
    cohort_id: str, request: Request, api: Api, who: Coordinator, form: Form
) -> HTMLResponse:
    """Replaces the details whole: a field left empty is no longer shown."""
    group = await api.call("registration", "GET", f"/cohorts/{cohort_id}")
    spec = {f: form[f].strip() for f in JOINING_FIELDS if form.get(f, "").strip()}
    problems = {} if spec.get("platform") else {"platform": "platform"}
    again = _form(request, who, "joining_form.html.j2", form, g=group)
    path = f"/cohorts/{cohort_id}/joining"
    done = f"/console/groups/{cohort_id}#joining"
    return await _send(request, api, who, ("PUT", path), spec, problems, again, done)


@router.post("/groups/{cohort_id}/composition", response_class=HTMLResponse)
async def set_composition(
    cohort_id: str, api: Api, who: Coordinator, form: Form
) -> RedirectResponse:
    """The group's make-up once known; registration tells whom it concerns."""
    body = {"composition": form.get("composition", "")}
    path = f"/cohorts/{cohort_id}/composition"
    await api.as_coordinator(who, "registration", "PUT", path, json=body)
    return RedirectResponse(f"/console/groups/{cohort_id}#composition", status_code=303)


async def _send(
    request: Request,
    api: Services,
    who: dict[str, Any],
    call: tuple[str, str],
    spec: dict[str, Any],
    problems: dict[str, str],
    again: Again,
    done: str = "/console/programs",
) -> HTMLResponse:
    """Send ``spec`` to registration, or show the form ``again`` with what is wrong: the
    form's own findings first, then registration's refusals, each beside its field."""
    if problems:
        return again(_errors(request, problems), 422)
    method, path = call
    try:
        await api.as_coordinator(who, "registration", method, path, json=spec)
    except ApiProblem as refused:
        if not refused.fields:
            raise
        return again(_errors(request, refused.fields), refused.status)
    return RedirectResponse(done, status_code=303)
