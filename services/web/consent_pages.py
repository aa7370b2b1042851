"""Consent, read and signed on the page the emailed signing link opens.

The link is ``<CONSENT_PUBLIC_URL>/consents/<token>``; with CONSENT_PUBLIC_URL set to
these pages' address it lands here. The form is shown in the applicant's language when
published in it; signing sends the hash of exactly the text shown, the typed name and a
box per clause, and answers a receipt page the applicant can print.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from web.clients import ApiProblem
from web.i18n import Translator
from web.pages import Api
from web.rendering import language, page
from web.sessions import Form

router = APIRouter()
# Commonmark without raw HTML: a form's text can format, never inject markup.
_markdown = MarkdownIt("commonmark", {"html": False})


async def _form(api: Api, request: Request, token: str) -> dict[str, Any]:
    return await api.call(
        "consent",
        "GET",
        f"/consents/{token}",
        params={"language": language(request)},
        headers={"Accept-Language": request.headers.get("accept-language", "")},
    )


def _consent_page(
    request: Request,
    token: str,
    doc: dict[str, Any],
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "consent.html.j2",
        status_code=status_code,
        token=token,
        doc=doc,
        body=Markup(_markdown.render(doc["form"]["body_markdown"])),
        form=form or {},
        errors=errors or {},
    )


@router.get("/consents/{token}", response_class=HTMLResponse)
async def consent(token: str, request: Request, api: Api) -> HTMLResponse:
    try:
        doc = await _form(api, request, token)
    except ApiProblem as refused:
        return page(
            request, "consent_closed.html.j2", status_code=refused.status, status=refused.status
        )
    return _consent_page(request, token, doc)


@router.post("/consents/{token}/sign", response_class=HTMLResponse)
async def sign(token: str, request: Request, api: Api, form: Form) -> HTMLResponse:
    doc = await _form(api, request, token)
    t = Translator(language(request))
    clauses = [c["id"] for c in doc["form"]["clauses"]]
    errors = {
        f"clause-{c}": t("consent.clause_required")
        for c in clauses
        if form.get(f"clause-{c}") != "yes"
    }
    if not form.get("typed_name", "").strip():
        errors["typed_name"] = t("consent.name_required")
    if form.get("agree") != "yes":
        errors["agree"] = t("consent.agree_required")
    if errors:
        return _consent_page(request, token, doc, form=form, errors=errors, status_code=422)
    try:
        signed = await api.call(
            "consent",
            "POST",
            f"/consents/{token}/sign",
            json={
                "text_sha256": form.get("text_sha256", ""),
                "typed_name": form["typed_name"].strip(),
                "acknowledged_clauses": clauses,
                "agree_to_sign_electronically": True,
            },
            headers={"User-Agent": request.headers.get("user-agent", "")[:1000]},
        )
    except ApiProblem as refused:
        if refused.status == 409:  # the text changed since it was shown: show the new one
            return _consent_page(
                request,
                token,
                await _form(api, request, token),
                form=form,
                errors={"form": t("consent.text_changed")},
                status_code=409,
            )
        raise
    return page(
        request, "consent_signed.html.j2", signed=signed, doc=doc, typed_name=form["typed_name"]
    )


@router.post("/consents/{token}/decline", response_class=HTMLResponse)
async def decline(token: str, request: Request, api: Api, form: Form) -> HTMLResponse:
    await api.call("consent", "POST", f"/consents/{token}/decline")
    return page(request, "consent_closed.html.j2", status=200, declined=True)
