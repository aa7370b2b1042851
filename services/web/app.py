"""The web pages: applicants sign up, sign consent and follow their registration;
coordinators review, confirm and set up groups. A client of the four services' HTTP
APIs; its own database holds only coordinator accounts.

Run: ``python -m web`` (on HTTP_HOST:HTTP_PORT, 127.0.0.1:8000 unless told; ``scripts/up`` does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import AsyncMongoClient
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import Scope

from shared import tracing
from shared.app import add_admission, add_request_context
from shared.logs import configure_logging, get_logger
from shared.ratelimit import RateLimits
from web import (
    consent_pages,
    console,
    console_controls,
    console_payments,
    console_progress,
    console_setup,
    pages,
    progress_pages,
)
from web.accounts import Accounts
from web.clients import ApiProblem, Services, Unavailable
from web.rendering import page
from web.revocations import RevocationRelay
from web.settings import WebSettings

log = get_logger(__name__)


def create_app(
    settings: WebSettings | None = None,
    *,
    services: Services | None = None,
    accounts: Accounts | None = None,
) -> FastAPI:
    """The app; tests hand in ``services`` and ``accounts`` (then no database is opened)."""
    settings = settings or WebSettings()
    configure_logging(settings.log_level, settings.log_format, production=settings.is_production)
    tracing.configure_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client: AsyncMongoClient | None = None
        if accounts is None:
            client = AsyncMongoClient(settings.mongodb_url, tz_aware=True)
        app.state.accounts = accounts or Accounts(client[settings.database_name])
        app.state.services = services or Services(settings)
        relay = None
        if client is not None:  # tests hand in accounts and read their outbox themselves
            relay = RevocationRelay(settings, app.state.accounts)
            await relay.start()
        log.info("web started", url=settings.web_public_url)
        try:
            yield
        finally:
            if relay is not None:
                await relay.stop()
            await app.state.services.close()
            if client is not None:
                await client.close()

    app = FastAPI(
        title="Holdspace web",
        description="Pages for applicants and coordinators, over the four services' APIs.",
        lifespan=lifespan,
        telemetry=tracing.FASTAPI_TELEMETRY_OFF,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.limits = RateLimits()
    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")
    for routes in ROUTERS:
        app.include_router(routes.router)
    _install_error_pages(app)
    _install_probes(app)
    _install_middleware(app, settings)
    return app


def _install_middleware(app: FastAPI, settings: WebSettings) -> None:
    """Innermost first. Admission inside the session, so that a refusal is a page in the
    reader's language; the pages' headers on every answer; then as every service has."""
    add_admission(app, settings, refusal=_busy_page)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie="holdspace_session",
        max_age=settings.session_ttl_s,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    _install_security_headers(app)
    add_request_context(app, settings, too_large=_too_large_page)
    app.add_middleware(tracing.TracedRequests)


def _busy_page(scope: Scope, _retry_after_s: int) -> Response:
    """More requests at once than this process takes: said at once, nothing was done."""
    return _error(Request(scope), 503, "error.busy", "error.busy_text")


def _too_large_page(scope: Scope, _limit: int) -> Response:
    """A form past the pages' body limit (a photo too large, often): refused unread."""
    return _error(Request(scope), 413, "error.too_large", "error.too_large_text")


# The pages' modules, each with its routes.
ROUTERS = (
    pages,
    consent_pages,
    console,
    console_payments,
    console_setup,
    console_controls,
    progress_pages,
    console_progress,
)


def _install_probes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        try:
            await request.app.state.accounts.ping()
        except Exception as exc:
            return JSONResponse({"status": "unready", "database": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready"})


# Nothing from another host, no inline script, no framing; pages that may show personal
# data are not kept by the browser's or a proxy's cache.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _install_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _install_error_pages(app: FastAPI) -> None:
    async def refused(request: Request, exc: ApiProblem) -> HTMLResponse:
        if exc.status == 404:
            return _error(request, 404, "error.not_found", "error.not_found_text")
        if exc.status in (401, 403):
            return _error(request, 403, "error.forbidden", "error.forbidden_text")
        return _error(request, exc.status, "error.refused", "error.refused_text", exc.detail)

    async def unavailable(request: Request, exc: Unavailable) -> HTMLResponse:
        log.warning("a service did not answer", error=str(exc))
        return _error(request, 503, "error.unavailable", "error.unavailable_text")

    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        if exc.status_code == 404:
            return _error(request, 404, "error.not_found", "error.not_found_text")
        if exc.status_code == 403:
            return _error(request, 403, "error.forbidden", "error.csrf_text")
        return _error(request, exc.status_code, "error.refused", "error.refused_text")

    async def sign_in_first(request: Request, exc: console.SignInRequired) -> RedirectResponse:
        return console.sign_in_redirect(exc)

    async def not_yours(request: Request, exc: pages.NotYours) -> HTMLResponse:
        return page(request, "my_unknown.html.j2", status_code=403)

    app.add_exception_handler(console.SignInRequired, sign_in_first)
    app.add_exception_handler(pages.NotYours, not_yours)
    app.add_exception_handler(ApiProblem, refused)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _error(
    request: Request, status: int, title_key: str, message_key: str, detail: str | None = None
) -> HTMLResponse:
    return page(
        request,
        "error.html.j2",
        status_code=status,
        title_key=title_key,
        message_key=message_key,
        detail=detail,
    )
