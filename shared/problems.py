"""The one way an error becomes an answer, and what the OpenAPI documents say of it.

Domain code raises the refusals of shared/errors.py and knows nothing of HTTP; the
handlers here turn each kind (and validation errors, database outages, conflicts that
would not settle, bugs) into an RFC 9457 problem document naming the field at fault.

:func:`document_problems` makes every service's OpenAPI document say the same: each
operation lists the answers every route can give (a missing or refused token, an id
that names nothing, a body too large, bad input, a busy service or an unreachable
database), and routes add the refusals particular to them with :func:`refusals`. A
client generated from the document, or a fuzzer holding answers to it, then meets no
status and no media type the document did not name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import errors, mongo
from shared.aggregates import ConcurrentModification
from shared.logs import get_logger

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field_of(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts[0]
        parts = parts[1:]
        return ".".join(parts) if where == "body" and parts else ".".join([where, *parts])
    return ".".join(parts)


async def _validation_problem(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # Never echo the input back: it may be personal.
    errors = [{"field": _field_of(e["loc"]), "message": e["msg"]} for e in exc.errors()]
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return problem(422, "Invalid request", f"invalid: {fields}", errors=errors)


# What FastAPI says (a 400) when a body is JSON its parser gave up on: nested deeper than
# Python's recursion allows. Answered like any other body that is not what the route takes.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_problem(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        message = "the body could not be read as JSON (nested too deeply?)"
        errors = [{"field": "body", "message": message}]
        return problem(422, _title(422), message, field="body", errors=errors)
    extra = dict(exc.detail) if isinstance(exc.detail, dict) else {}
    detail = exc.detail if isinstance(exc.detail, str) else extra.pop("detail", None)
    response = problem(exc.status_code, _title(exc.status_code), detail, **extra)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    if exc.status_code == 405:
        # Starlette's own header (first route only) stays where the document is silent.
        if allowed := _allowed_methods(request):
            response.headers["Allow"] = allowed
    return response


def _allowed_methods(request: Request) -> str:
    """Every method the document gives this path: Starlette's own 405 names only those of
    the first route it matched, and a path often has two (GET and PUT)."""
    for template, item in request.app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if re.fullmatch(pattern, request.url.path):
            return ", ".join(sorted(method.upper() for method in item))
    return ""


# The one place a domain refusal becomes an HTTP status.
DOMAIN_STATUS: dict[type[errors.DomainError], int] = {
    errors.NotFound: 404,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.Invalid: 422,
    errors.TooMany: 429,
}


def status_of(exc: errors.DomainError) -> int:
    return _status_of_kind(type(exc))


async def _domain_problem(_request: Request, exc: errors.DomainError) -> JSONResponse:
    status = status_of(exc)
    if isinstance(exc, errors.Invalid):
        field_name = exc.field or "body"
        return problem(
            status,
            "Invalid request",
            f"invalid: {field_name}",
            errors=[{"field": field_name, "message": exc.message}],
            **exc.extra,
        )
    extra: dict[str, Any] = dict(exc.extra)
    if exc.field:
        extra["field"] = exc.field
    response = problem(status, _title(status), exc.message, **extra)
    if isinstance(exc, errors.TooMany):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _conflict_problem(_request: Request, exc: ConcurrentModification) -> JSONResponse:
    # Other writers kept changing the same record first; nothing was written, and every
    # write that clients retry takes an Idempotency-Key, so retrying is safe.
    log.warning("write conflict persisted", key=str(exc))
    response = problem(409, "Conflict", "the record kept changing while we wrote; retry")
    response.headers["Retry-After"] = "1"
    return response


DATABASE_RETRY_AFTER_S = 5


async def _database_problem(request: Request, exc: PyMongoError) -> JSONResponse:
    if not mongo.unreachable(exc):
        return await _unexpected_problem(request, exc)
    # Nothing the request asked for was done unless its write had already landed, and
    # every write clients retry takes an Idempotency-Key: retrying is safe.
    log.warning("database unreachable", error=type(exc).__name__)
    response = problem(503, "Service Unavailable", "the database did not answer; retry")
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


async def _unexpected_problem(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", error=type(exc).__name__)
    return problem(500, "Internal error", "something went wrong on our side; nothing was lost")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def install_problem_handlers(app: FastAPI) -> None:
    """Every error a route can end with, as a problem document; routes catch nothing."""
    app.add_exception_handler(RequestValidationError, _validation_problem)
    app.add_exception_handler(HTTPException, _http_problem)
    app.add_exception_handler(StarletteHTTPException, _http_problem)
    app.add_exception_handler(ConcurrentModification, _conflict_problem)
    app.add_exception_handler(PyMongoError, _database_problem)
    app.add_exception_handler(errors.DomainError, _domain_problem)
    app.add_exception_handler(Exception, _unexpected_problem)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. `field` names what to look at or fix; "
    "`errors` lists each invalid field. The input is never echoed back.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# What any operation may answer, whatever the route does.
ANY_OPERATION = {
    "503": "The service is busy, or its database did not answer; retry after `Retry-After`",
}
SECURED = {
    "401": "No token, or one that expired, was revoked or was not issued for holdspace",
    "403": "The token's role may not do this",
}
WRITES = {
    "409": "The record's state does not allow this now, or it kept changing while we wrote",
}
WITH_PATH_ID = {"404": "Nothing answers to this id (or the caller may not know that it does)"}
WITH_BODY = {"413": "The body is larger than the service takes"}
WITH_INPUT = {"422": "A field is missing or invalid; `errors` names each"}


def refusals(*kinds: type[errors.DomainError]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may refuse with these kinds of domain error."""
    return {_status_of_kind(kind): {"description": _first_line(kind.__doc__)} for kind in kinds}


def _status_of_kind(kind: type[errors.DomainError]) -> int:
    return next((DOMAIN_STATUS[k] for k in kind.__mro__ if k in DOMAIN_STATUS), 400)


def _first_line(text: str | None) -> str:
    return (text or "Refused").strip().split("\n")[0]


def _answers_of(path: str, method: str, operation: dict[str, Any]) -> dict[str, str]:
    answers = dict(ANY_OPERATION)
    if operation.get("security"):
        answers |= SECURED
    if method in ("post", "put", "patch", "delete"):
        answers |= WRITES
    if "{" in path:
        answers |= WITH_PATH_ID
    if "requestBody" in operation:
        answers |= WITH_BODY
    if "requestBody" in operation or operation.get("parameters"):
        answers |= WITH_INPUT
    return answers


def _as_problems(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in _answers_of(path, method, operation).items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        is_error = status[0] in "45"
        if is_error and (not response.get("content") or _fastapis_422(response)):
            response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}


def _fastapis_422(response: dict[str, Any]) -> bool:
    """FastAPI's own 422 body, which the handlers above never send (they answer a problem)."""
    return "HTTPValidationError" in str(response.get("content"))


def document_problems(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document name every error answer as a problem document."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path, item in document.get("paths", {}).items():
            for method, operation in item.items():
                _as_problems(path, method, operation)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
