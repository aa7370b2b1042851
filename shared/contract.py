"""A JSON body is taken only if the published document says it may be.

Pydantic, reading a body, coerces what JSON Schema would refuse: ``0`` for ``false``,
``"12"`` or ``true`` for an integer. A client built from the OpenAPI document, or a
fuzzer holding answers to it, then sees data the document calls invalid taken with a
2xx, and a typo'd client learns nothing. So every route's JSON body is checked against
the request schema the service publishes, once pydantic has nothing to say of it: a
body pydantic refuses keeps pydantic's answer (its messages name the rule), one only
the document refuses gets a 422 naming each field, like any other invalid input.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

JSON = "application/json"


async def body_matches_document(request: Request) -> None:
    """An app-wide dependency: refuse a JSON body the route's published schema refuses."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return
    body = await _json_body(request)  # FastAPI read it already; this is its cached copy
    if body is None:
        return
    validator = _validator(request.app, route.path_format, request.method)
    if validator is None:
        return
    problems = _problems(validator, body)
    if problems and _pydantic_takes(route, body):
        raise RequestValidationError(problems)


def _validator(app: FastAPI, path: str, method: str) -> Draft202012Validator | None:
    cache: dict[tuple[str, str], Draft202012Validator | None] | None
    cache = getattr(app.state, "request_validators", None)
    if cache is None:
        cache = app.state.request_validators = {}
    if (path, method) not in cache:
        cache[(path, method)] = _validator_of(app.openapi(), path, method)
    return cache[(path, method)]


async def _json_body(request: Request) -> Any | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != JSON:
        return None
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None  # the route answers a body it cannot read as it always has


def _validator_of(document: dict[str, Any], path: str, method: str) -> Draft202012Validator | None:
    operation = document.get("paths", {}).get(path, {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    if JSON not in content:
        return None
    # The document's components travel along, so "#/components/..." references resolve.
    root = {"allOf": [content[JSON]["schema"]], "components": document.get("components", {})}
    return Draft202012Validator(root)


def _pydantic_takes(route: APIRoute, body: Any) -> bool:
    assert route.body_field is not None
    _, errors = route.body_field.validate(body, {}, loc=("body",))
    return not errors


def _problems(validator: Draft202012Validator, body: Any) -> list[dict[str, Any]]:
    """Each place the body breaks the schema, as pydantic would name it; the input itself
    is never quoted (it may be personal)."""
    found = []
    for error in validator.iter_errors(body):
        for where, message in _named(error):
            found.append({"loc": ("body", *where), "msg": message, "type": "document"})
    return found


def _named(error: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    at = tuple(error.absolute_path)
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        return [((*at, name), "Field required") for name in missing]
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return [
            ((*at, name), "Extra inputs are not permitted")
            for name in instance
            if name not in known
        ]
    if error.validator == "type":
        return [(at, f"should be of JSON type {error.validator_value}")]
    if error.validator in ("anyOf", "oneOf") and error.context:
        # The branch that got furthest into the body says best what is wrong with it.
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(at):
            return _named(deepest)
        return [(at, "matches none of the forms the document allows here")]
    return [(at, f"breaks the document's {error.validator} rule")]
