"""Pages rendered on the server: the language, the words, the form token, the footer.

Every page goes through :func:`page`, which gives its template ``t`` (the words in the
page's language), ``lang``, the language switch, the session's form token (``csrf``)
and the crisis lines of the footer, and remembers a language asked for in a cookie.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from web.domain.between import short_date, words
from web.domain.language import LANGUAGES, choose
from web.i18n import Translator
from web.settings import WebSettings

LANG_COOKIE = "lang"
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
# Every template is HTML: escape everything (the default only escapes names ending
# .html, and ours end .html.j2). What a person typed can never become markup.
templates.env.autoescape = True


def in_words(text: dict[str, str] | None, lang: str) -> Markup:
    """A program's text in the page's language; one written only in the other language
    is marked so (``lang``), for a screen reader to read it in its own voice."""
    shown = words(text, lang)
    if text and shown and not text.get(lang):
        return Markup('<span lang="{}">{}</span>').format("en" if lang == "zh" else "zh-CN", shown)
    return Markup.escape(shown)


# A program's own words ({"en": ..., "zh": ...}) in the page's language, and short dates.
templates.env.globals.update(words=words, in_words=in_words, short_date=short_date)


def language(request: Request) -> str:
    return choose(
        request.query_params.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
    )


def csrf_token(request: Request) -> str:
    if "session" not in request.scope:
        return ""  # a page answered before the session was read has no form to post
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def crisis_lines(settings: WebSettings, lang: str) -> list[str]:
    raw = settings.crisis_lines_zh if lang == "zh" else settings.crisis_lines_en
    return [line.strip() for line in raw.split("|") if line.strip()]


def local_time(value: datetime | str, tz: str, lang: str) -> str:
    """``value`` in time zone ``tz``, written as people of ``lang`` write dates."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = when.astimezone(ZoneInfo(tz))
    if lang == "zh":
        weekday = "一二三四五六日"[local.weekday()]
        return f"{local.year}年{local.month}月{local.day}日（周{weekday}）{local:%H:%M}"
    return local.strftime("%a %-d %b %Y, %H:%M")


def viewer_time_zone(request: Request) -> str | None:
    """The browser's time zone, as site.js set it in a cookie; None if absent or unknown."""
    name = unquote(request.cookies.get("tz") or "")
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None
    return name


def money(price: dict[str, Any]) -> str:
    amount = price["amount_minor"] / 100
    symbol = {"CNY": "¥", "USD": "$", "EUR": "€"}.get(price["currency"], price["currency"] + " ")
    return f"{symbol}{amount:,.2f}"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings: WebSettings = request.app.state.settings
    lang = language(request)
    t = Translator(lang)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": t,
            "lang": lang,
            "other_lang": next(x for x in LANGUAGES if x != lang),
            "csrf": csrf_token(request),
            "crisis_lines": crisis_lines(settings, lang),
            "local_time": local_time,
            "money": money,
            "viewer_tz": viewer_time_zone(request),
            **context,
        },
        status_code=status_code,
    )
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            asked,
            max_age=365 * 24 * 3600,
            samesite="lax",
            httponly=True,
            secure=settings.secure_cookies,
        )
    return response
