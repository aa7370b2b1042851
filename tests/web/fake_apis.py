"""The four services' APIs as the web pages see them, in memory (httpx.MockTransport):
what each call asked, and answers a test sets per route."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from shared.security import verify_token
from shared.settings import DEV_JWT_SECRET

PROBLEM = "application/problem+json"

GROUP: dict[str, Any] = {
    "cohort_id": "c-1",
    "program_id": "p-1",
    "title": "Recovery circle",
    "kind": "recovery_group",
    "language": "zh",
    "facilitator": "Lin, counsellor",
    "description": "A small group.",
    "label": "Spring",
    "sessions": [
        {
            "starts_at": "2031-03-04T11:00:00Z",
            "ends_at": "2031-03-04T12:30:00Z",
            "timezone": "Asia/Shanghai",
        }
    ],
    "price": {"amount_minor": 90000, "currency": "CNY"},
    "refund_policy": "refundable",
    "minimum_age": 18,
    "gender_composition": "mixed",
    "composition_window_days": 7,
    "composition_refund": "refundable",
    "cancellation_refund": "refundable",
    "contact_email": "care@example.org",
    "scholarships_allowed": True,
    "safety_questions": [
        {
            "id": "harm",
            "text": "Are you thinking of harming yourself?",
            "text_zh": "您是否有伤害自己的想法？",
        }
    ],
    "crisis_resources": [],
    "capacity": 83,
    "seats_left": 57,
    "registration_opens_at": "2031-01-01T00:00:00Z",
    "registration_closes_at": "2031-03-01T00:00:00Z",
    "registration_closed": False,
    "cancelled": False,
    "sessions_sequence": 0,
}


def problem(status: int, detail: str, field: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"status": status, "title": "x", "detail": detail}
    if field:
        body["errors"] = [{"field": field, "message": detail}]
    return httpx.Response(status, json=body, headers={"content-type": PROBLEM})


class FakeApis:
    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = {}
        self.answer("GET", "/cohorts", [GROUP])
        self.answer("GET", "/cohorts/c-1", GROUP)

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.routes[(method, path)] = lambda _r: httpx.Response(status, json=body)

    def route(self, method: str, path: str, fn: Callable[[httpx.Request], httpx.Response]) -> None:
        self.routes[(method, path)] = fn

    def program(self, program: dict[str, Any]) -> None:
        """GET and PUT /programs/{id} as registration answers them: a program out of the
        coordinator token's scope is 404, as one that does not exist; a PUT replaces the
        program whole with the spec sent."""
        path = f"/programs/{program['program_id']}"
        stored = dict(program)

        def answer(request: httpx.Request) -> httpx.Response:
            principal = verify_token(DEV_JWT_SECRET, request.headers["Authorization"][7:])
            if not principal.sees(stored["program_id"]):
                return problem(404, "no such program", "program_id")
            if request.method == "PUT":
                spec = self.body(request)
                stored.clear()
                stored.update({"program_id": program["program_id"], **spec})
            return httpx.Response(200, json=stored)

        self.route("GET", path, answer)
        self.route("PUT", path, answer)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        fn = self.routes.get((request.method, request.url.path))
        if fn is None:
            return problem(404, f"no route {request.method} {request.url.path}")
        return fn(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def posted(self, path: str) -> list[httpx.Request]:
        return self.sent("POST", path)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [c for c in self.calls if c.method == method and c.url.path == path]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content)
