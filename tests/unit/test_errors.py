"""Domain refusals become problem documents in one place (shared/app.py), for every route.

Also checks the rule that makes this hold: no route module catches a refusal itself, no
domain code names an HTTP status, and each service's refusals are kinds of the shared
ones (so a new refusal cannot fall through to a 500).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from consent.domain.forms import FormProblem
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from notifications.sending import NotResendable
from payments.domain.claims import CaseError, SelfApproval
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from registration.domain.ledger import LedgerError
from registration.domain.programs import IntakeProblem

from shared import errors
from shared.app import RequestContext
from shared.problems import PROBLEM_JSON, install_problem_handlers

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def app_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/x")
    async def route() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NetworkTimeout("timed out"), 503),
        (ServerSelectionTimeoutError("no servers"), 503),
        (AutoReconnect("connection reset"), 503),
        (ExecutionTimeout("operation exceeded time limit", 50), 503),
        (OperationFailure("a bad update", 9), 500),
    ],
)
def test_a_database_that_does_not_answer_is_a_503_to_retry_other_errors_a_500(exc, status) -> None:
    answer = app_raising(exc).get("/x")
    assert answer.status_code == status
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert ("Retry-After" in answer.headers) == (status == 503)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.NotFound("cohort_id", "no such cohort"), 404),
        (errors.Forbidden(None, "a second coordinator must approve"), 403),
        (errors.Conflict("email", "already registered"), 409),
        (errors.Gone("token", "this signing link has expired"), 410),
        (LedgerError("the offer has expired"), 409),
        (CaseError("no refund is waiting"), 409),
        (SelfApproval("a second coordinator must approve"), 403),
        (FormProblem("draft", "same text"), 409),
        (NotResendable("only a failed delivery can be resent"), 409),
        (errors.DomainError("x", "a refusal of no particular kind"), 400),
    ],
)
def test_each_kind_of_refusal_has_its_status_and_names_the_field(exc, status) -> None:
    answer = app_raising(exc).get("/x")
    assert answer.status_code == status
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert body["status"] == status and body["detail"] == exc.message
    if exc.field:
        assert body["field"] == exc.field
    else:
        assert "field" not in body


def test_an_invalid_answer_lists_the_field_like_request_validation_does() -> None:
    answer = app_raising(IntakeProblem("date_of_birth", "date of birth is in the future")).get("/x")
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == "invalid: date_of_birth"
    assert body["errors"] == [
        {"field": "date_of_birth", "message": "date of birth is in the future"}
    ]


def test_extra_facts_go_into_the_problem() -> None:
    answer = app_raising(errors.NotFound("reference", "flagged", flag_id="f-1")).get("/x")
    assert answer.json()["flag_id"] == "f-1"


def _modules(where: str) -> list[Path]:
    return sorted(SERVICES.glob(where))


def _refusal_names() -> set[str]:
    names, kinds = set(), [errors.DomainError]
    while kinds:
        kind = kinds.pop()
        names.add(kind.__name__)
        kinds += kind.__subclasses__()
    return names


def test_no_route_module_catches_a_refusal() -> None:
    refusals = _refusal_names()
    assert {"IntakeProblem", "LedgerError", "CaseError", "NotResendable"} <= refusals
    caught = []
    for path in [*_modules("*/api.py"), *_modules("*/webhooks.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.type) if isinstance(n, ast.Attribute)}
                if names & refusals:
                    where = path.relative_to(ROOT)
                    caught.append(f"{where}:{node.lineno} {sorted(names & refusals)}")
    assert caught == []


def test_no_domain_module_names_an_http_status() -> None:
    offenders = []
    for path in _modules("*/domain/*.py"):
        text = path.read_text()
        for word in ("HTTPException", "status_code", "fastapi", "starlette"):
            if word in text:
                offenders.append(f"{path.relative_to(ROOT)}: {word}")
    assert offenders == []


def test_an_image_body_has_its_own_larger_limit_and_every_other_body_the_small_one() -> None:
    app = FastAPI()
    app.add_middleware(RequestContext, service="t", max_body_bytes=1000, max_image_bytes=5000)

    @app.put("/x")
    async def route(request: Request) -> dict:
        return {"read": len(await request.body())}

    client = TestClient(app)
    image = {"Content-Type": "image/png"}
    assert client.put("/x", content=b"x" * 4000, headers=image).json() == {"read": 4000}
    too_big = client.put("/x", content=b"x" * 6000, headers=image)
    assert too_big.status_code == 413 and "5000" in too_big.json()["detail"]
    assert client.put("/x", content=b"x" * 900).json() == {"read": 900}
    assert client.put("/x", content=b"x" * 4000).status_code == 413

    def chunked(n: int):  # no Content-Length: counted as it arrives
        yield b"x" * n

    assert client.put("/x", content=chunked(6000), headers=image).status_code == 413
    assert client.put("/x", content=chunked(4000), headers=image).status_code == 200
