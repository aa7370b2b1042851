"""Setting up programs and cohorts from the console: the forms in coordinators' words,
what registration receives, and its refusals shown beside the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from web.setup_forms import cohort_spec, program_spec

from tests.web.conftest import PASSWORD, csrf_of
from tests.web.fake_apis import FakeApis, problem

EN = {"Accept-Language": "en"}
NOW = datetime(2031, 1, 5, 2, 0, tzinfo=UTC)
PROGRAM_FORM = {
    "title": "Six-week recovery group",
    "display_name": "Thursday circle",
    "kind": "recovery_group",
    "language": "zh",
    "facilitator": "Lin",
    "description": "",
    "price": "900",
    "currency": "CNY",
    "refund_policy": "refundable",
    "minimum_age": "18",
    "capacity": "",
    "gender_composition": "mixed",
    "approval_required": "yes",
    "consent_form_ref": "recovery-group-consent",
    "safety_0_text": "Are you safe now?",
    "safety_0_text_zh": "您现在安全吗？",
    "safety_1_text": "",
}


def test_a_program_form_becomes_registrations_program_spec() -> None:
    spec, problems = program_spec(PROGRAM_FORM)
    assert problems == {}
    assert spec["price"] == {"amount_minor": 90000, "currency": "CNY"}
    assert spec["approval_required"] is True and spec["scholarships_allowed"] is False
    assert spec["safety_questions"] == [
        {"id": "q1", "text": "Are you safe now?", "text_zh": "您现在安全吗？"}
    ]
    assert "capacity" not in spec and spec["minimum_age"] == 18
    assert "composition_window_days" not in spec and spec["composition_refund"] == "refundable"
    _, wrong = program_spec({**PROGRAM_FORM, "price": "nine hundred", "minimum_age": "x"})
    assert set(wrong) == {"price.amount_minor", "minimum_age"}
    strict, _ = program_spec(
        {**PROGRAM_FORM, "composition_window_days": "3", "composition_refund": "no_refund"}
    )
    assert strict["composition_window_days"] == 3 and strict["composition_refund"] == "no_refund"
    _, wrong = program_spec({**PROGRAM_FORM, "composition_window_days": "a week"})
    assert set(wrong) == {"composition_window_days"}


def test_a_cohort_form_becomes_weekly_sessions_at_the_same_local_time() -> None:
    form = {
        "label": "Thursdays",
        "first_date": "2031-03-27",
        "first_time": "19:30",
        "minutes": "90",
        "weeks": "6",
        "timezone": "Europe/London",
        "closes_on": "2031-03-20",
    }
    spec, problems = cohort_spec(form, NOW)
    assert problems == {}
    starts = [datetime.fromisoformat(s["starts_at"]) for s in spec["sessions"]]
    assert len(starts) == 6
    # Across the change to summer time the local time stays 19:30 (UTC moves by an hour).
    assert {s.astimezone(ZoneInfo("Europe/London")).strftime("%H:%M") for s in starts} == {"19:30"}
    assert starts[0].utcoffset() != starts[1].utcoffset()
    ends = datetime.fromisoformat(spec["sessions"][0]["ends_at"])
    assert ends - starts[0] == timedelta(minutes=90)
    assert spec["registration_opens_at"] == NOW.isoformat()
    _, wrong = cohort_spec({**form, "first_date": "", "weeks": "0", "timezone": "Mars/Base"}, NOW)
    assert set(wrong) == {"sessions", "weeks", "timezone"}


def sign_in(browser) -> None:
    page = browser.get("/console/sign-in")
    browser.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": "ana@example.org", "password": PASSWORD},
    )


def test_creating_a_program_sends_the_spec_and_shows_a_refusal_beside_its_field(
    browser, apis: FakeApis
) -> None:
    sign_in(browser)
    form_page = browser.get("/console/programs/new", headers=EN)
    assert form_page.status_code == 200 and 'id="display_name"' in form_page.text
    apis.route(
        "POST",
        "/programs",
        lambda r: problem(422, "String should have at most 100 characters", "display_name"),
    )
    refused = browser.post(
        "/console/programs/new", data={**PROGRAM_FORM, "csrf": csrf_of(form_page.text)}, headers=EN
    )
    assert refused.status_code == 422
    assert (
        'id="display_name-error"' in refused.text
        and 'value="Six-week recovery group"' in refused.text
    )
    apis.answer("POST", "/programs", {"program_id": "p-2"}, status=201)
    done = browser.post(
        "/console/programs/new", data={**PROGRAM_FORM, "csrf": csrf_of(form_page.text)}
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/programs"
    assert FakeApis.body(apis.posted("/programs")[-1]) == program_spec(PROGRAM_FORM)[0]


def test_a_wrong_price_is_named_before_anything_is_sent(browser, apis) -> None:
    sign_in(browser)
    form_page = browser.get("/console/programs/new", headers=EN)
    refused = browser.post(
        "/console/programs/new",
        data={**PROGRAM_FORM, "price": "lots", "csrf": csrf_of(form_page.text)},
        headers=EN,
    )
    assert refused.status_code == 422 and 'id="price-error"' in refused.text
    assert apis.posted("/programs") == []


def test_creating_a_cohort_for_a_program(browser, apis) -> None:
    apis.answer("GET", "/programs/p-1", {"program_id": "p-1", "title": "Recovery circle"})
    apis.answer("POST", "/programs/p-1/cohorts", {"cohort_id": "c-9"}, status=201)
    sign_in(browser)
    form_page = browser.get("/console/programs/p-1/cohorts/new", headers=EN)
    assert 'value="Asia/Shanghai"' in form_page.text
    data = {
        "csrf": csrf_of(form_page.text),
        "label": "Spring",
        "first_date": "2031-03-06",
        "first_time": "19:30",
        "minutes": "90",
        "weeks": "6",
        "timezone": "Asia/Shanghai",
        "closes_on": "2031-03-01",
    }
    done = browser.post("/console/programs/p-1/cohorts/new", data=data)
    assert done.status_code == 303
    sent = FakeApis.body(apis.posted("/programs/p-1/cohorts")[0])
    assert len(sent["sessions"]) == 6 and sent["label"] == "Spring"


def test_a_program_can_carry_its_title_and_description_in_the_other_language(browser, apis) -> None:
    spec, problems = program_spec(
        {**PROGRAM_FORM, "translation_title": " Recovery circle ", "translation_description": "x"}
    )
    assert problems == {} and spec["translation"] == {
        "title": "Recovery circle",
        "description": "x",
    }
    assert "translation" not in program_spec(PROGRAM_FORM)[0]
    _, wrong = program_spec({**PROGRAM_FORM, "translation_description": "only this"})
    assert set(wrong) == {"translation.title"}

    sign_in(browser)
    form_page = browser.get("/console/programs/new", headers=EN)
    assert 'id="translation_title"' in form_page.text
    apis.route(
        "POST",
        "/programs",
        lambda r: problem(422, "String should have at most 200 characters", "translation.title"),
    )
    refused = browser.post(
        "/console/programs/new",
        data={**PROGRAM_FORM, "translation_title": "T" * 201, "csrf": csrf_of(form_page.text)},
        headers=EN,
    )
    assert refused.status_code == 422 and 'id="translation_title-error"' in refused.text


def test_the_program_form_sets_contact_sign_up_cancellation_and_its_own_questions() -> None:
    form = {
        **PROGRAM_FORM,
        "contact_email": " care@example.org ",
        "sign_up_for": "session",
        "cancellation_refund": "no_refund",
        "intake_0_text": "How do you work with groups?",
        "intake_0_text_zh": "你以什么身份和团体工作？",
        "intake_0_kind": "choice",
        "intake_0_choices": "Facilitator; Therapist ;; Coach",
        "intake_0_required": "yes",
        "intake_1_text": "",  # an empty row is no question
        "intake_2_text": "Anything we should know?",
        "intake_2_kind": "text",
        "intake_2_sensitive": "yes",
    }
    spec, problems = program_spec(form)
    assert problems == {}
    assert spec["contact_email"] == "care@example.org"
    assert (spec["sign_up_for"], spec["cancellation_refund"]) == ("session", "no_refund")
    work, know = spec["intake_questions"]
    assert work["kind"] == "choice" and work["required"] and not work["sensitive"]
    assert [c["text"] for c in work["choices"]] == ["Facilitator", "Therapist", "Coach"]
    assert work["text_zh"] == "你以什么身份和团体工作？"
    assert know == {
        "id": "q3",
        "text": "Anything we should know?",
        "kind": "text",
        "required": False,
        "sensitive": True,
    }
    _, wrong = program_spec({**form, "intake_0_choices": "Facilitator"})
    assert set(wrong) == {"intake_0_choices"}  # one answer is no choice


def test_the_new_program_page_offers_the_new_fields(browser, apis) -> None:
    sign_in(browser)
    page = browser.get("/console/programs/new", headers={"Accept-Language": "en"}).text
    for field in ("contact_email", "sign_up_for", "cancellation_refund", "intake_0_kind"):
        assert f'name="{field}"' in page, field
