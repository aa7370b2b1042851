"""The five services' HTTP APIs, as the pages call them (never their databases).

A refusal comes back as :class:`ApiProblem` with the RFC 9457 document's status, detail
and the fields at fault, so a page can show each next to its field. A service that
cannot be reached is :class:`Unavailable`, which the app shows as a page saying that
nothing was lost and to try again.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx

from shared import tracing
from shared.security import Role, issue_token
from web.settings import WebSettings


class ApiProblem(Exception):
    def __init__(
        self, status: int, detail: str, fields: dict[str, str], retry_after: int | None = None
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.fields = fields
        self.retry_after = retry_after  # seconds, on a 429


class Unavailable(Exception):
    """A service did not answer (down, or too slow)."""


def _problem(response: httpx.Response) -> ApiProblem:
    try:
        body = response.json()
    except ValueError:
        body = {}
    fields: dict[str, str] = {}
    for error in body.get("errors") or []:
        fields.setdefault(str(error.get("field", "")), str(error.get("message", "")))
    if body.get("field"):
        fields.setdefault(str(body["field"]), str(body.get("detail", "")))
    retry_after = body.get("retry_after")
    return ApiProblem(
        response.status_code,
        str(body.get("detail") or response.reason_phrase),
        fields,
        retry_after if isinstance(retry_after, int) else None,
    )


async def unless_missing(asked: Awaitable[Any]) -> Any:
    """What a service answered, or None where it has nothing (its 404)."""
    try:
        return await asked
    except ApiProblem as refused:
        if refused.status != 404:
            raise
        return None


async def _continue_trace(request: httpx.Request) -> None:
    # The service's span joins the page's: one trace from the browser's post onwards.
    tracing.inject_traceparent(request.headers)


class Services:
    """One HTTP client for the five APIs; ``as_coordinator`` signs calls for the console."""

    def __init__(self, settings: WebSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.bases = {
            "registration": settings.registration_api_url.rstrip("/"),
            "consent": settings.consent_api_url.rstrip("/"),
            "payments": settings.payments_api_url.rstrip("/"),
            "notifications": settings.notifications_api_url.rstrip("/"),
            "progress": settings.progress_api_url.rstrip("/"),
        }
        self.http = httpx.AsyncClient(
            timeout=settings.api_timeout_s,
            transport=transport,
            event_hooks={"request": [_continue_trace]},
        )

    async def close(self) -> None:
        await self.http.aclose()

    def coordinator_token(self, who: dict[str, Any]) -> str:
        """A short token for the signed-in account: its id (what the services record and
        the maker-checker compares) and its programs (what the services show it)."""
        return issue_token(
            self.settings.jwt_secret,
            role=Role.coordinator,
            subject=who["account_id"],
            programs=who["programs"],
            ttl_seconds=self.settings.coordinator_token_ttl_s,
        )

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        bearer: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Any:
        """The answer's JSON (None when empty); ``content`` sends bytes as they are."""
        response = await self._send(
            service, method, path, bearer, headers, json=json, params=params, content=content
        )
        if not response.content:
            return None
        return response.json()

    async def image(self, service: str, path: str) -> tuple[bytes, str]:
        response = await self._send(service, "GET", path)
        return response.content, response.headers.get("content-type", "")

    async def _send(
        self,
        service: str,
        method: str,
        path: str,
        bearer: str | None = None,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        try:
            response = await self.http.request(
                method, self.bases[service] + path, headers=sent, **body
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"{service}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise Unavailable(f"{service}: {response.status_code}")
        if response.status_code >= 400:
            raise _problem(response)
        return response

    async def as_coordinator(
        self, who: dict[str, Any], service: str, method: str, path: str, **kw: Any
    ) -> Any:
        return await self.call(service, method, path, bearer=self.coordinator_token(who), **kw)

    async def for_applicant(
        self, registration_id: str, method: str, path: str, service: str = "payments", **kw: Any
    ) -> Any:
        """A call to ``service`` for an applicant whose token registration just accepted."""
        token = issue_token(
            self.settings.jwt_secret,
            role=Role.pages,
            subject=f"applicant:{registration_id}",
            ttl_seconds=60,
        )
        return await self.call(service, method, path, bearer=token, **kw)
