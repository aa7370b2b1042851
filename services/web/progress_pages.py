"""The participant's space between sessions (the progress service), from "my
registration": the program's questionnaires and a chart of the scores, homework with a
private journal, milestones, what to share and with whom, and feedback on the sessions.

Every route first checks this browser's registration token with registration, as the
payment page does; progress is then asked with a short token for that one
registration. Each form posts and is answered with a redirect (303) back to its section;
a refusal shows the page again with the form as it was sent and the error beside its
field. The peer invitation's code is the one answer not redirected: it is shown once,
on the answer to the post, and kept nowhere (not even in the session's cookie).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from web.clients import ApiProblem, Services, unless_missing
from web.domain import between
from web.i18n import Translator
from web.pages import Api, mine
from web.rendering import language, local_time, page, viewer_time_zone
from web.sessions import Form

router = APIRouter(prefix="/my/{registration_id}/progress")
Session = Annotated[int, Path(ge=1, le=100)]
# What a field left empty is told (an unanswered item: "progress.answer_this").
MISSING = {
    "helpful": "progress.feedback_choose",
    "safe": "progress.feedback_choose",
    "code": "progress.code_missing",
}


@dataclass
class Failed:
    """A form progress (or the page) refused: which one, what it said, what was sent."""

    scope: str
    errors: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)


async def ask(api: Services, rid: str, method: str, tail: str = "", **kw: Any) -> Any:
    return await api.for_applicant(rid, method, f"/spaces/{rid}{tail}", service="progress", **kw)


@router.get("", response_class=HTMLResponse)
async def space_page(registration_id: str, request: Request, api: Api) -> HTMLResponse:
    return await _show(request, api, registration_id)


async def _show(
    request: Request,
    api: Services,
    rid: str,
    failed: Failed | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    reg, group = await mine(request, api, rid)
    space = await unless_missing(ask(api, rid, "GET"))
    if space is None:
        return page(request, "progress_none.html.j2", reg=reg, g=group, status_code=404)
    shared = await ask(api, rid, "GET", "/shared-with-me")
    lang = language(request)
    tz = viewer_time_zone(request) or group["sessions"][0]["timezone"]
    # Each form its own id; the same id again when a form is shown again after a
    # refusal: one answer however often it is sent.
    ids = {q["id"]: str(uuid.uuid4()) for q in space["plan"]["questionnaires"]}
    if failed and failed.scope.startswith("q-") and failed.form.get("response_id"):
        ids[failed.scope[2:]] = between.response_id(failed.form)
    return page(
        request,
        "progress.html.j2",
        status_code=status_code,
        reg=reg,
        g=group,
        space=space,
        tz=tz,
        questionnaires=between.questionnaires(space, lang, tz),
        shared=between.shared_views(shared, space["plan"], lang, tz),
        sessions=between.feedback_sessions(
            group["sessions"], space["feedback_given"], datetime.now(UTC)
        ),
        failed=failed,
        response_ids=ids,
    )


def _back(rid: str, section: str) -> RedirectResponse:
    return RedirectResponse(f"/my/{rid}/progress#{section}", status_code=303)


# Fields a form shows its error beside; any other refusal is said above the form.
BESIDE = ("answers.", "journal", "code", "comment", "helpful", "safe")


def refusal_keys(status: int, fields: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The words for what progress refused: those shown beside a field of the form, by
    field, and those said above it (a closed space, feedback already given)."""
    beside: dict[str, str] = {}
    above: list[str] = []
    for name in fields:
        if name == "registration_id" and status == 409:
            above.append("progress.closed")
        elif name == "session" and status == 409:
            above.append("progress.feedback_already")
        elif name == "questionnaire_id" and status == 409:
            above.append("progress.full")
        elif name.startswith("answers."):
            beside[name] = "progress.answer_this"
        elif name == "code":
            beside[name] = "progress.code_unknown" if status == 404 else "progress.code_invalid"
        elif name in ("helpful", "safe"):
            beside[name] = "progress.feedback_choose"
        elif name.startswith(BESIDE):
            beside[name] = "progress.too_long"
        else:
            above.append("progress.not_saved")
    if not fields:
        above.append("progress.not_saved")
    return beside, above


async def _refused(
    request: Request, api: Services, rid: str, scope: str, form: dict, refused: ApiProblem
) -> HTMLResponse:
    if refused.status in (401, 403):
        raise refused
    t = Translator(language(request))
    beside, above = refusal_keys(refused.status, refused.fields)
    failed = Failed(
        scope, {k: t(v) for k, v in beside.items()}, [t(k) for k in dict.fromkeys(above)], form
    )
    if beside and not above:
        failed.problems = [t("error.see_fields")]
    return await _show(request, api, rid, failed, refused.status)


async def _missing(
    request: Request, api: Services, rid: str, scope: str, form: dict, missing: dict[str, str]
) -> HTMLResponse:
    """The form again, what it lacks marked: nothing was sent."""
    t = Translator(language(request))
    errors = {k: t(MISSING.get(k, "progress.answer_this")) for k in missing}
    failed = Failed(scope, errors, [t("error.see_fields")], form)
    return await _show(request, api, rid, failed, 422)


async def _send(
    request: Request,
    api: Services,
    rid: str,
    scope: str,
    form: dict[str, str],
    call: tuple[str, str, Any],
    section: str,
) -> Response:
    """One call to progress, then back to ``section``; a refusal, shown in ``scope``."""
    method, tail, body = call
    try:
        await ask(api, rid, method, tail, json=body)
    except ApiProblem as refused:
        return await _refused(request, api, rid, scope, form, refused)
    return _back(rid, section)


@router.post("/responses", response_class=HTMLResponse)
async def respond(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    """Answers to one questionnaire; one at or past a safety item's threshold shows the
    crisis lines at once (progress routes it to a coordinator)."""
    rid = registration_id
    _reg, group = await mine(request, api, rid)
    space = await ask(api, rid, "GET")
    qid = form.get("questionnaire_id", "")
    found = [q for q in space["plan"]["questionnaires"] if q["id"] == qid]
    if not found:  # the program's plan changed since the page was shown
        said = [Translator(language(request))("progress.not_saved")]
        return await _show(request, api, rid, Failed("page", problems=said, form=form), 404)
    scope = f"q-{qid}"
    answers, missing = between.answers_from(form, found[0])
    if missing:
        return await _missing(request, api, rid, scope, form, missing)
    body = {"questionnaire_id": qid, "answers": answers, "response_id": between.response_id(form)}
    try:
        await ask(api, rid, "POST", "/responses", json=body)
    except ApiProblem as refused:
        return await _refused(request, api, rid, scope, form, refused)
    if between.safety_reached(found[0], answers):
        return page(
            request,
            "crisis.html.j2",
            urgent=True,
            urgent_key="progress.safety_lead",
            resources=group.get("crisis_resources") or [],
            next_url=f"/my/{rid}/progress",
            next_key="progress.back",
        )
    return _back(rid, scope)


@router.post("/homework/{session}", response_class=HTMLResponse)
async def homework(
    registration_id: str, session: Session, request: Request, api: Api, form: Form
) -> Response:
    await mine(request, api, registration_id)
    call = ("PUT", f"/homework/{session}", between.homework_from(form))
    scope = f"homework-{session}"
    return await _send(request, api, registration_id, scope, form, call, scope)


@router.post("/milestones", response_class=HTMLResponse)
async def milestones(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    """The boxes that changed, one call each: ticking one sends a word of encouragement."""
    rid = registration_id
    await mine(request, api, rid)
    space = await ask(api, rid, "GET")
    try:
        for milestone_id, reached in between.milestone_changes(form, space["milestones"]):
            await ask(api, rid, "PUT", f"/milestones/{milestone_id}", json={"reached": reached})
    except ApiProblem as refused:
        return await _refused(request, api, rid, "milestones", form, refused)
    return _back(rid, "milestones")


@router.post("/sharing", response_class=HTMLResponse)
async def sharing(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    await mine(request, api, registration_id)
    call = ("PUT", "/sharing", between.sharing_from(form))
    return await _send(request, api, registration_id, "sharing", form, call, "sharing")


@router.post("/peer/invite", response_class=HTMLResponse)
async def invite(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    """A new code, shown on this answer only: progress keeps it hashed, the pages not at all."""
    rid = registration_id
    _reg, group = await mine(request, api, rid)
    try:
        made = await ask(api, rid, "POST", "/peer-invitation")
    except ApiProblem as refused:
        return await _refused(request, api, rid, "peer", form, refused)
    tz = viewer_time_zone(request) or group["sessions"][0]["timezone"]
    until = local_time(made["expires_at"], tz, language(request))
    return page(request, "progress_code.html.j2", rid=rid, code=made["code"], until=until)


@router.post("/peer/accept", response_class=HTMLResponse)
async def accept(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    rid = registration_id
    await mine(request, api, rid)
    code = between.code_from(form)
    if not code:
        return await _missing(request, api, rid, "accept", form, {"code": "required"})
    call = ("POST", "/peer-invitation/accept", {"code": code})
    return await _send(request, api, rid, "accept", form, call, "shared-with-me")


@router.post("/peer/stop", response_class=HTMLResponse)
async def stop(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    await mine(request, api, registration_id)
    return await _send(
        request, api, registration_id, "peer", form, ("DELETE", "/peer", None), "peer"
    )


@router.post("/peer/stop-seeing", response_class=HTMLResponse)
async def stop_seeing(registration_id: str, request: Request, api: Api, form: Form) -> Response:
    """The one who accepted a code stops seeing what is shared with them."""
    await mine(request, api, registration_id)
    call = ("DELETE", "/shared-with-me", None)
    return await _send(request, api, registration_id, "accept", form, call, "shared-with-me")


@router.post("/feedback/{session}", response_class=HTMLResponse)
async def feedback(
    registration_id: str, session: Session, request: Request, api: Api, form: Form
) -> Response:
    rid = registration_id
    await mine(request, api, rid)
    scope = f"feedback-{session}"
    body, missing = between.feedback_from(form)
    if missing:
        return await _missing(request, api, rid, scope, form, missing)
    return await _send(
        request, api, rid, scope, form, ("POST", f"/feedback/{session}", body), scope
    )
