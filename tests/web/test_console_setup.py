"""Setting up programs and cohorts from the console: the forms in coordinators' words,
what registration receives, and its refusals shown beside the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

from registration.domain.programs import ProgramSpec
from web.setup_forms import cohort_spec, kept_from, program_form, program_spec, rows

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


# A program as registration's API gives it: every field of its spec, and its id.
PROGRAM = {
    "program_id": "p-1",
    **ProgramSpec(
        title="Recovery circle",
        display_name="Thursday circle",
        kind="recovery_group",
        facilitator="Lin",
        contact_email="care@example.org",
        description="A small group.\nSix weeks.",
        translation={"title": "康复小组", "description": "六周。"},
        price={"amount_minor": 90050, "currency": "CNY"},
        refund_policy="refundable",
        capacity=10,
        composition_window_days=3,
        composition_refund="no_refund",
        approval_required=False,
        scholarships_allowed=True,
        safety_questions=[{"id": "harm", "text": "Are you safe now?", "text_zh": "您现在安全吗？"}],
        intake_questions=[
            {"id": "hopes", "text": "What brings you here?", "kind": "text", "required": True},
            {
                "id": "role",
                "text": "How do you work with groups?",
                "kind": "choice",
                "choices": [
                    {"id": "fac", "text": "Facilitator", "text_zh": "带领者"},
                    {"id": "ther", "text": "Therapist"},
                ],
                "sensitive": True,
            },
        ],
        crisis_resources=[{"name": "Hope line", "contact": "400-161-9995"}],
        consent_form_ref="recovery-group-consent",
    ).model_dump(mode="json"),
}
SPEC = {k: v for k, v in PROGRAM.items() if k != "program_id"}


def as_registration_takes(spec: dict) -> dict:
    """``spec`` as registration reads it (its defaults filled in), refused if invalid."""
    return ProgramSpec.model_validate(spec).model_dump(mode="json")


class Submitted(HTMLParser):
    """What a browser sends for the page's form: each field as it is shown filled in."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and (a.get("type") != "checkbox" or "checked" in a):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select:
            if self._select not in self.fields or "selected" in a:
                self.fields[self._select] = a["value"]
        elif tag == "textarea":
            self._textarea = a["name"]
            self.fields[a["name"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea] += data


def test_a_program_read_back_into_the_form_is_the_same_program() -> None:
    form = program_form(PROGRAM)
    assert form["price"] == "900.50" and form["intake_1_choices"] == "Facilitator; Therapist"
    assert form["intake_0_id"] == "hopes" and form["safety_0_id"] == "harm"
    spec, problems = program_spec(form)
    assert problems == {}
    assert as_registration_takes(kept_from(PROGRAM, spec)) == SPEC  # crisis lines, ids kept
    # A new question takes an id no other row holds; a new answer one no answer had.
    added = {**form, "intake_2_text": "Anything else?", "intake_2_id": ""}
    added["intake_1_choices"] = "Coach; Facilitator"
    edited = kept_from(PROGRAM, program_spec(added)[0])["intake_questions"]
    assert [q["id"] for q in edited] == ["hopes", "role", "q3"]
    assert [c["id"] for c in edited[1]["choices"]] == ["c1", "fac"]
    renumbered = program_spec({**form, "intake_0_id": "", "intake_1_id": "q1"})[0]
    assert [q["id"] for q in renumbered["intake_questions"]] == ["q2", "q1"]
    # More questions than a new form has rows: each is shown, with a spare row, and kept.
    many = {**form, **{f"intake_{n}_text": f"Question {n}" for n in range(2, 5)}}
    assert rows(many, "intake", spare=1) == range(6) and rows(form, "safety") == range(3)
    assert len(program_spec(many)[0]["intake_questions"]) == 5


def test_a_program_opens_filled_in_and_saving_an_edited_question_keeps_the_others(
    browser, apis
) -> None:
    apis.program(PROGRAM)
    apis.answer("GET", "/programs", [PROGRAM])
    sign_in(browser)
    assert 'href="/console/programs/p-1/edit"' in browser.get("/console/programs", headers=EN).text
    form_page = browser.get("/console/programs/p-1/edit", headers=EN)
    assert form_page.status_code == 200 and "<h1>Edit program</h1>" in form_page.text
    assert 'action="/console/programs/p-1/edit"' in form_page.text
    shown = Submitted(form_page.text).fields
    assert shown["intake_0_text"] == "What brings you here?"
    assert shown["intake_1_kind"] == "choice" and shown["intake_1_sensitive"] == "yes"
    assert "approval_required" not in shown and shown["composition_refund"] == "no_refund"
    assert shown["description"] == "A small group.\nSix weeks."
    shown["intake_0_text"] = "What do you hope for?"
    done = browser.post("/console/programs/p-1/edit", data=shown)
    assert done.status_code == 303 and done.headers["location"] == "/console/programs"
    (put,) = apis.sent("PUT", "/programs/p-1")
    sent = FakeApis.body(put)
    hopes, role = SPEC["intake_questions"]
    changed = [{**hopes, "text": "What do you hope for?"}, role]
    assert as_registration_takes(sent) == {**SPEC, "intake_questions": changed}
    assert apis.posted("/programs") == []


def test_a_refused_edit_is_shown_beside_its_question_with_what_was_typed(browser, apis) -> None:
    apis.program(PROGRAM)
    apis.route(
        "PUT",
        "/programs/p-1",
        lambda r: problem(422, "at most 500 characters", "intake_questions.0.text"),
    )
    sign_in(browser)
    shown = Submitted(browser.get("/console/programs/p-1/edit", headers=EN).text).fields
    typed = {**shown, "title": "Renamed circle", "intake_0_text": "Why " * 130}
    refused = browser.post("/console/programs/p-1/edit", data=typed, headers=EN)
    assert refused.status_code == 422 and 'id="intake_0_text-error"' in refused.text
    assert "<h1>Edit program</h1>" in refused.text
    again = Submitted(refused.text).fields
    assert again == typed  # nothing lost: sent again as it is, to the same program
    assert 'action="/console/programs/p-1/edit"' in refused.text


def test_a_program_out_of_the_coordinators_scope_is_not_found(browser, apis, accounts) -> None:
    accounts.collection.docs["ana@example.org"]["programs"] = ["p-1"]
    apis.program(PROGRAM)
    apis.program({**PROGRAM, "program_id": "p-9", "title": "Not Ana's circle"})
    sign_in(browser)
    assert browser.get("/console/programs/p-1/edit").status_code == 200
    page = browser.get("/console/programs/p-9/edit", headers=EN)
    assert page.status_code == 404 and "Not Ana's circle" not in page.text
    data = {**program_form(PROGRAM), "csrf": csrf_of(browser.get("/console/programs/new").text)}
    assert browser.post("/console/programs/p-9/edit", data=data).status_code == 404
    assert apis.sent("PUT", "/programs/p-9") == []
