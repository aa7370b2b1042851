"""A program's own questions on the sign-up form and in the console: asked as the
program sets them, a required one named when left empty (nothing sent), the answers
sent to registration, and a sensitive answer shown only on the registration's page."""

from __future__ import annotations

from tests.web.fake_apis import GROUP, FakeApis
from tests.web.test_applicant_pages import EN, SIGN_UP, ZH, filled, signed_up
from tests.web.test_console_access import sign_in
from tests.web.test_console_and_consent_pages import reg

QUESTIONS = [
    {
        "id": "work",
        "text": "How do you work with groups?",
        "text_zh": "你以什么身份带领团体？",
        "kind": "choice",
        "choices": [
            {"id": "facilitator", "text": "Facilitator", "text_zh": "带领者"},
            {"id": "coach", "text": "Coach", "text_zh": "教练"},
        ],
        "required": True,
        "sensitive": False,
    },
    {
        "id": "hopes",
        "text": "Anything the facilitator should know?",
        "kind": "text",
        "choices": [],
        "required": False,
        "sensitive": True,
    },
]


def test_the_form_asks_the_programs_questions_and_sends_the_answers(browser, apis) -> None:
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "intake_questions": QUESTIONS})
    apis.route("POST", SIGN_UP, signed_up())
    page = browser.get("/groups/c-1", headers=ZH).text
    assert "你以什么身份带领团体？" in page and "带领者" in page
    assert 'name="intake_hopes"' in page and "（选填）" in page

    empty = browser.post("/groups/c-1/sign-up", data=filled(page), headers=EN)
    assert empty.status_code == 422
    assert 'id="intake_answers.work-error"' in empty.text
    assert not [c for c in apis.calls if c.method == "POST"]  # nothing sent

    answered = filled(page, intake_work="coach", intake_hopes="  周三的哀伤小组  ")
    done = browser.post("/groups/c-1/sign-up", data=answered, headers=EN)
    assert done.status_code == 202, done.text
    (sent,) = [c for c in apis.calls if c.method == "POST"]
    assert FakeApis.body(sent)["intake_answers"] == {"work": "coach", "hopes": "周三的哀伤小组"}


def test_the_console_shows_a_sensitive_answer_only_on_the_registrations_page(browser, apis) -> None:
    group = {**GROUP, "intake_questions": QUESTIONS}
    answers = {"work": "coach", "hopes": "I lead a grief group"}
    person = {**reg("r-4", "pending_review"), "cohort_id": "c-1", "intake_answers": answers}
    apis.answer("GET", "/cohorts/c-1", group)
    apis.answer("GET", "/cohorts", [group])
    apis.answer("GET", "/cohorts/c-1/roster", {"seats": [person], "seats_taken": 1, "capacity": 8})
    apis.answer("GET", "/cohorts/c-1/waitlist", {"waitlist": []})
    apis.answer("GET", "/registrations/r-4/record", {**person, "history": []})
    apis.answer("GET", "/registrations/r-4/payment/record", None, status=404)
    sign_in(browser)
    listed = browser.get("/console/groups/c-1", headers=EN).text
    assert "How do you work with groups?" in listed and "Coach" in listed
    assert "grief" not in listed
    whole = browser.get("/console/registrations/r-4", headers=EN).text
    assert "I lead a grief group" in whole and "sensitive: shown only here" in whole


def test_the_group_and_my_registration_say_where_to_write_with_concerns(browser, apis) -> None:
    page = browser.get("/groups/c-1", headers=EN).text
    assert "Questions, concerns or feedback" in page
    assert 'href="mailto:care@example.org"' in page
    apis.answer(
        "GET",
        "/registrations/r-7",
        {"registration_id": "r-7", "cohort_id": "c-1", "status": "pending_review"},
    )
    browser.get("/my/r-7?t=tok")
    assert 'href="mailto:care@example.org"' in browser.get("/my/r-7", headers=EN).text
