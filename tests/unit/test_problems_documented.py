"""What the OpenAPI documents say about errors, and the bodies held to them.

shared/problems.py names every error answer in each operation (a problem document);
shared/contract.py refuses a JSON body the document refuses even where pydantic would
coerce it. Row 20 of docs/reliability.md runs Schemathesis against the real services;
these pin the mechanisms on a small app, and on each service's real document.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.security import HTTPBearer
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from shared import errors
from shared.contract import body_matches_document
from shared.problems import PROBLEM_JSON, document_problems, install_problem_handlers, refusals
from shared.topology import SERVICES

PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


Bearer = Annotated[object, Depends(HTTPBearer(auto_error=False))]


class Seats(BaseModel):
    model_config = ConfigDict(extra="forbid")
    open: bool = False
    capacity: int = Field(8, ge=1, le=200)


class Optional(BaseModel):
    flag: bool = False


def small_app() -> FastAPI:
    app = FastAPI(dependencies=[Depends(body_matches_document)])
    reads, writes = APIRouter(), APIRouter()

    @reads.get("/cohorts/{cohort_id}/seats")
    async def seats(cohort_id: str, _: Bearer) -> dict:
        return {"cohort_id": cohort_id}

    @writes.put("/cohorts/{cohort_id}/seats", responses=refusals(errors.Gone))
    async def set_seats(cohort_id: str, body: Seats) -> dict:
        return body.model_dump()

    @writes.post("/flags")
    async def flags(body: Optional | None = None) -> dict:
        return body.model_dump() if body else {}

    @reads.get(
        "/ready", responses={503: {"description": "no", "content": {"application/json": {}}}}
    )
    async def ready() -> dict:
        return {}

    app.include_router(reads)
    app.include_router(writes)
    install_problem_handlers(app)
    document_problems(app)
    return app


def operation(app: FastAPI, path: str, method: str) -> dict:
    return app.openapi()["paths"][path][method]


def test_every_operation_names_the_answers_every_route_can_give() -> None:
    app = small_app()
    read = operation(app, "/cohorts/{cohort_id}/seats", "get")["responses"]
    assert {"401", "403", "404", "503"} <= set(read)  # secured, takes an id, any
    assert "409" not in read and "413" not in read  # a read writes nothing, takes no body
    write = operation(app, "/cohorts/{cohort_id}/seats", "put")["responses"]
    assert {"404", "409", "410", "413", "422", "503"} <= set(write)
    assert "401" not in write  # no token asked for
    for status in ("404", "409", "410", "413", "422", "503"):
        assert write[status]["content"] == PROBLEM, status


def test_a_declared_answer_keeps_its_own_body_and_fastapis_422_schema_is_gone() -> None:
    app = small_app()
    ready = operation(app, "/ready", "get")["responses"]["503"]
    assert ready["content"] == {"application/json": {}}
    schemas = app.openapi()["components"]["schemas"]
    assert "Problem" in schemas and "HTTPValidationError" not in schemas


def test_405_allows_every_method_the_path_has_across_routers() -> None:
    answer = TestClient(small_app()).delete("/cohorts/c1/seats")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, PUT"  # Starlette's own said "GET"
    assert answer.headers["content-type"] == PROBLEM_JSON


def test_405_on_a_path_the_document_leaves_out_keeps_starlettes_allow() -> None:
    app = small_app()

    @app.get("/hidden", include_in_schema=False)
    async def hidden() -> dict:
        return {}

    answer = TestClient(app).post("/hidden")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


def test_a_routes_own_422_body_is_kept() -> None:
    app = FastAPI()
    own = {"application/json": {"schema": {"type": "object"}}}

    @app.post("/own", responses={422: {"description": "ours", "content": own}})
    async def ours(body: Seats) -> dict:
        return {}

    document_problems(app)
    assert operation(app, "/own", "post")["responses"]["422"]["content"] == own


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"open": 0}, "open"),  # pydantic takes 0 for false
        ({"capacity": "12"}, "capacity"),  # and "12" for 12
        ({"capacity": True}, "capacity"),  # and true for 1
    ],
)
def test_a_body_the_document_refuses_is_refused_naming_the_field(body: dict, field: str) -> None:
    answer = TestClient(small_app()).put("/cohorts/c1/seats", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert repr(next(iter(body.values()))) not in problem["errors"][0]["message"]  # no echo


def test_a_body_the_document_takes_is_taken() -> None:
    client = TestClient(small_app())
    answer = client.put("/cohorts/c1/seats", json={"open": True, "capacity": 12.0})
    assert answer.status_code == 200, answer.text  # 12.0 is an integer in JSON Schema
    assert answer.json() == {"open": True, "capacity": 12}


def test_what_pydantic_refuses_keeps_pydantics_words() -> None:
    answer = TestClient(small_app()).put("/cohorts/c1/seats", json={"capacity": 0})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "capacity", "message": "Input should be greater than or equal to 1"}
    ]


def test_an_optional_body_names_the_field_inside_it() -> None:
    answer = TestClient(small_app()).post("/flags", json={"flag": 0})
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["flag"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_services_document_names_its_error_answers(service: str, monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    app = importlib.import_module(f"{service}.app").create_app()
    document = app.openapi()
    assert "Problem" in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "503" in responses, (method, path)
            if op.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            for status, answer in responses.items():
                if status[0] in "45":
                    assert answer.get("content"), (method, path, status)


def test_a_signing_link_says_it_can_be_gone(monkeypatch) -> None:
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    document = importlib.import_module("consent.app").create_app().openapi()
    for method, path in (("get", "/consents/{token}"), ("post", "/consents/{token}/decline")):
        gone = document["paths"][path][method]["responses"]["410"]
        assert gone["content"] == PROBLEM, path


def _object_schema(schema: dict, components: dict) -> dict:
    while "$ref" in schema or "anyOf" in schema:
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        else:  # an optional body: the one form that is not null
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    return schema


@pytest.mark.parametrize("service", SERVICES)
def test_no_request_body_takes_a_field_it_does_not_name(service: str, monkeypatch) -> None:
    """Matrix row 22 (mass assignment) for every write of every service: a body naming
    a field the server owns (``status``, ``seats_taken``, ``role``) is refused by name,
    by pydantic and by the document alike."""
    monkeypatch.setenv("HOLDSPACE_ENV", "development")
    document = importlib.import_module(f"{service}.app").create_app().openapi()
    components = document["components"]["schemas"]
    bodies = 0
    for path, item in document["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            schema = _object_schema(content["schema"], components)
            if schema.get("type") == "object":
                bodies += 1
                assert schema.get("additionalProperties") is False, (method, path)
    assert bodies >= 1  # the service takes JSON bodies, and they were all looked at
