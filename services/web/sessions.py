"""What a browser's session holds, in a signed cookie (HttpOnly, SameSite=Lax, Secure
behind https; it ends ``SESSION_TTL_S`` after it began):

- ``csrf``: the token every form posts back; a post without it is refused;
- ``regs``: the access token of each registration this browser signed up for or
  opened from an email's link (the applicant's own, as their link carries it);
- ``coordinator``: who signed in to the console, and when.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from web.rendering import csrf_token


class CsrfRefused(HTTPException):
    def __init__(self) -> None:
        super().__init__(403, "the form's token is missing or stale")


async def posted_form(request: Request) -> dict[str, str]:
    """The posted fields, once the form's CSRF token matched the session's."""
    form = await request.form()
    sent = str(form.get("csrf", ""))
    if not sent or not secrets.compare_digest(sent, csrf_token(request)):
        raise CsrfRefused()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


Form = Annotated[dict[str, str], Depends(posted_form)]


class FileTooLarge(Exception):
    """A posted file is larger than the page accepts."""


async def uploaded(request: Request, name: str, limit: int) -> tuple[bytes, str] | None:
    """The bytes and declared type of the file posted as ``name`` (after ``Form`` checked
    the CSRF token), None when no file was chosen; :class:`FileTooLarge` past ``limit``."""
    upload = (await request.form()).get(name)
    if upload is None or isinstance(upload, str):
        return None
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(name)
    if not data:
        return None
    return data, upload.content_type or "application/octet-stream"


def remember_registration(request: Request, registration_id: str, token: str) -> None:
    regs = dict(request.session.get("regs") or {})
    regs[registration_id] = token
    request.session["regs"] = dict(list(regs.items())[-5:])


def registration_token(request: Request, registration_id: str) -> str | None:
    return (request.session.get("regs") or {}).get(registration_id)


def sign_in(request: Request, email: str, name: str) -> None:
    request.session.clear()  # a new session on sign-in: nothing carried over
    request.session["coordinator"] = {"email": email, "name": name, "since": int(time.time())}
    csrf_token(request)


def signed_in(request: Request) -> dict[str, Any] | None:
    who = request.session.get("coordinator")
    ttl = request.app.state.settings.session_ttl_s
    if not who or time.time() - who.get("since", 0) > ttl:
        return None
    return who
