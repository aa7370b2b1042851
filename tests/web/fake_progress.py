"""The progress service's participant API as the pages see it, in memory: a space
with a small plan that answers, homework, milestones and sharing change, so a test
can post a form and see the page the service's answer draws."""

from __future__ import annotations

from typing import Any

import httpx

from tests.web.fake_apis import FakeApis, problem

OFTEN = [
    {"value": 0, "label": {"en": "Not at all", "zh": "完全没有"}},
    {"value": 1, "label": {"en": "Some days", "zh": "有几天"}},
    {"value": 2, "label": {"en": "Most days", "zh": "大多数日子"}},
    {"value": 3, "label": {"en": "Every day", "zh": "每天"}},
]
PLAN: dict[str, Any] = {
    "based_on": "Written for Holdspace in plain words",
    "questionnaires": [
        {
            "id": "week",
            "title": {"en": "This week", "zh": "这一周"},
            "based_on": "Plain words written for Holdspace",
            "items": [
                # In English only: a Chinese page shows it in English rather than not at all.
                {"id": "sleep", "text": {"en": "I slept badly"}, "choices": OFTEN},
                {
                    "id": "alone",
                    "text": {"en": "I felt alone", "zh": "我觉得孤单"},
                    "choices": OFTEN,
                },
                {
                    "id": "harm",
                    "text": {"en": "I thought of harming myself", "zh": "我有过伤害自己的念头"},
                    "choices": OFTEN,
                    "safety_at": 1,
                },
            ],
            "bands": [
                {"up_to": 3, "label": {"en": "A steadier stretch", "zh": "比较平稳的一段时间"}},
                {"up_to": 6, "label": {"en": "Some strain", "zh": "有些吃力"}},
                {"up_to": 9, "label": {"en": "A heavy stretch", "zh": "比较沉重的一段时间"}},
            ],
            "when": ["weekly"],
        }
    ],
    "homework": [{"session": 1, "text": {"en": "Write down one thing that helped."}}],
    "milestones": [
        {"id": "told-someone", "title": {"en": "Told someone I trust", "zh": "告诉了信任的人"}},
        {"id": "first-week", "title": {"en": "A first week of my plan"}},
    ],
}
BASE = "/spaces/r-1"


class FakeProgress:
    """Registers progress's participant routes on ``apis``; ``space`` is what GET answers."""

    def __init__(self, apis: FakeApis) -> None:
        self.apis = apis
        self.space: dict[str, Any] = {
            "registration_id": "r-1",
            "cohort_id": "c-1",
            "program_id": "p-1",
            "status": "open",
            "plan": PLAN,
            "due": ["week"],  # weekly: waiting until answered, then for six days
            "responses": [],
            "homework": [{**h, "done_at": None, "journal": None} for h in PLAN["homework"]],
            "milestones": [{**m, "reached_at": None} for m in PLAN["milestones"]],
            "sharing": {"scores": False, "homework": False, "milestones": False},
            "with_facilitator": False,
            "peer": {"shared_with_someone": False, "invitation_expires_at": None},
            "feedback_given": [],
        }
        self.shared: list[dict[str, Any]] = []
        apis.route("GET", BASE, lambda _r: httpx.Response(200, json=self.space))
        apis.route(
            "GET", f"{BASE}/shared-with-me", lambda _r: httpx.Response(200, json=self.shared)
        )
        apis.route("POST", f"{BASE}/responses", self.respond)
        apis.route("PUT", f"{BASE}/sharing", self.share)
        for m in PLAN["milestones"]:
            apis.route("PUT", f"{BASE}/milestones/{m['id']}", self.milestone)
        apis.answer("PUT", f"{BASE}/homework/1", self.space)
        apis.answer("POST", f"{BASE}/peer-invitation/accept", {"status": "accepted"})
        apis.route("DELETE", f"{BASE}/peer", lambda _r: httpx.Response(204))
        apis.route("DELETE", f"{BASE}/shared-with-me", lambda _r: httpx.Response(204))

    def respond(self, request: httpx.Request) -> httpx.Response:
        body = FakeApis.body(request)
        if any(r["id"] == body["response_id"] for r in self.space["responses"]):
            return httpx.Response(201, json=self.space)  # the same form again: once
        score = sum(body["answers"].values())
        bands = PLAN["questionnaires"][0]["bands"]
        band = next(b["label"] for b in bands if score <= b["up_to"])
        at = f"2031-03-{11 + 7 * len(self.space['responses']):02d}T12:00:00+00:00"
        self.space["responses"].append(
            {
                "id": body["response_id"],
                "questionnaire_id": body["questionnaire_id"],
                "at": at,
                "score": score,
                "band": band,
                "answers": body["answers"],
            }
        )
        self.space["due"] = []
        return httpx.Response(201, json=self.space)

    def share(self, request: httpx.Request) -> httpx.Response:
        body = FakeApis.body(request)
        self.space["with_facilitator"] = body.pop("with_facilitator")
        self.space["sharing"] = body
        return httpx.Response(200, json=self.space)

    def milestone(self, request: httpx.Request) -> httpx.Response:
        mid = request.url.path.rsplit("/", 1)[1]
        for m in self.space["milestones"]:
            if m["id"] == mid:
                m["reached_at"] = (
                    "2031-03-12T10:00:00+00:00" if FakeApis.body(request)["reached"] else None
                )
        return httpx.Response(200, json=self.space)

    def refuse(self, method: str, tail: str, status: int, detail: str, field: str) -> None:
        """A refusal as progress sends it (shared/app.py): a 422 lists its fields, any
        other names its one field beside the detail."""
        if status == 422:
            self.apis.route(method, BASE + tail, lambda _r: problem(422, detail, field))
            return
        body = {"status": status, "title": "x", "detail": detail, "field": field}
        self.apis.route(method, BASE + tail, lambda _r: httpx.Response(status, json=body))

    def sent(self, method: str, tail: str) -> list[Any]:
        return [
            FakeApis.body(c) if c.content else None
            for c in self.apis.calls
            if c.method == method and c.url.path == BASE + tail
        ]
