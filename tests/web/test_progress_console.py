"""The console's side of the work between sessions (services/web/console.py's group
page, services/web/console_progress.py): feedback only in aggregate past the
threshold, what participants share with the facilitator, and a program's plan edited
as JSON with progress's refusals listed by field."""

from __future__ import annotations

import json
import re

from tests.web.conftest import csrf_of
from tests.web.fake_apis import FakeApis, problem
from tests.web.fake_progress import PLAN
from tests.web.test_console_access import EN, sign_in
from tests.web.test_console_and_consent_pages import reg
from tests.web.test_payment_pages import group_page_answers

FEEDBACK = [
    {"session": 1, "answers": 2, "enough": False, "needed": 3},
    {
        "session": 2,
        "answers": 3,
        "enough": True,
        "needed": 3,
        "helpful": {"mean": 4.33, "spread": {"1": 0, "2": 0, "3": 0, "4": 2, "5": 1}},
        "safe": {"mean": 3.67, "spread": {"1": 0, "2": 0, "3": 1, "4": 2, "5": 0}},
        "comments": ["Felt heard", "More time please"],
    },
]
SHARED = [
    {
        "registration_id": "r-1",
        "scores": [
            {
                "questionnaire_id": "week",
                "at": "2031-03-11T12:00:00+00:00",
                "score": 4,
                "band": {"en": "Some strain", "zh": "有些吃力"},
            }
        ],
        "homework_done": [1],
        "milestones": [{"id": "told-someone", "title": {"en": "Told someone I trust"}}],
    },
    {"registration_id": "r-2", "milestones": []},
]


def group_page(browser, apis: FakeApis, feedback=FEEDBACK, shared=SHARED) -> str:
    group_page_answers(apis)
    seats = [{**reg("r-1", "confirmed"), "name": "小林"}, reg("r-2", "confirmed")]
    apis.answer("GET", "/cohorts/c-1/roster", {"seats": seats, "seats_taken": 2, "capacity": 8})
    apis.answer("GET", "/cohorts/c-1/feedback", feedback)
    apis.answer("GET", "/cohorts/c-1/shared", shared)
    apis.answer("GET", "/programs/p-1/plan", PLAN)
    sign_in(browser)
    page = browser.get("/console/groups/c-1", headers=EN)
    assert page.status_code == 200, page.text
    return page.text


def section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</article>", start)]


def test_feedback_below_the_threshold_shows_only_how_many_more_are_needed(browser, apis) -> None:
    page = group_page(browser, apis)
    waiting = section(page, "feedback-1")
    assert "2 of 3 answers needed before anything is shown." in waiting
    assert "mean" not in waiting and "<dl" not in waiting
    enough = section(page, "feedback-2")
    assert "mean 4.33 (from 1 to 5)" in enough and "mean 3.67 (from 1 to 5)" in enough
    assert "4: 2" in enough and "Felt heard" in enough and "More time please" in enough
    asked = [c for c in apis.calls if c.url.path == "/cohorts/c-1/feedback"]
    assert asked[0].url.port == 8005 and asked[0].headers["Authorization"].startswith("Bearer ")


def test_what_participants_share_with_the_facilitator_is_shown_by_name(browser, apis) -> None:
    page = group_page(browser, apis)
    shared = section(page, "shared-r-1")
    assert "小林" in shared and 'href="/console/registrations/r-1"' in shared
    assert "<td>This week</td><td>4</td><td>Some strain</td>" in shared
    assert "Homework done after sessions: 1" in shared and "Told someone I trust" in shared
    other = section(page, "shared-r-2")
    assert "No milestones reached yet." in other and "No scores yet." not in other


def test_nothing_shared_and_no_feedback_say_so(browser, apis) -> None:
    page = group_page(browser, apis, feedback=[], shared=[])
    assert "No feedback yet." in page and "Nobody shares anything with you just now." in page


def test_a_progress_that_does_not_answer_leaves_the_rest_of_the_group_page(browser, apis) -> None:
    group_page_answers(apis)
    sign_in(browser)
    page = browser.get("/console/groups/c-1", headers=EN)
    assert page.status_code == 200
    assert "cannot be shown just now" in page.text and "Seats: 0 of 8" in page.text


# --- the plan ------------------------------------------------------------------------------


def plan_page(browser, apis: FakeApis) -> str:
    apis.answer("GET", "/programs/p-1", {"program_id": "p-1", "title": "Recovery circle"})
    apis.answer("GET", "/programs/p-1/plan", PLAN)
    sign_in(browser)
    page = browser.get("/console/programs/p-1/plan", headers=EN)
    assert page.status_code == 200, page.text
    return page.text


def textarea(page: str) -> str:
    found = re.search(r'<textarea id="plan"[^>]*>(.*?)</textarea>', page, re.S)
    assert found
    return found.group(1).replace("&#34;", '"').replace("&quot;", '"')


def test_the_plan_is_shown_pretty_printed_and_summed_up(browser, apis) -> None:
    page = plan_page(browser, apis)
    assert json.loads(textarea(page)) == PLAN
    assert '\n  "questionnaires": [' in textarea(page)
    assert "This week (3 questions)" in page and "after sessions 1" in page
    assert "Told someone I trust" in page


def test_a_saved_plan_is_sent_whole(browser, apis) -> None:
    page = plan_page(browser, apis)
    changed = {**PLAN, "milestones": PLAN["milestones"][:1]}
    apis.answer("PUT", "/programs/p-1/plan", changed)
    done = browser.post(
        "/console/programs/p-1/plan", data={"csrf": csrf_of(page), "plan": json.dumps(changed)}
    )
    assert done.headers["location"] == "/console/programs/p-1/plan?saved=yes"
    (sent,) = [c for c in apis.calls if c.method == "PUT"]
    assert sent.url.port == 8005 and FakeApis.body(sent) == changed
    assert (
        "participants see the new plan now"
        in browser.get(done.headers["location"], headers=EN).text
    )


def test_a_plan_progress_refuses_is_listed_by_field_and_kept_as_typed(browser, apis) -> None:
    page = plan_page(browser, apis)
    field = "questionnaires.0.bands.0.label"
    apis.route(
        "PUT", "/programs/p-1/plan", lambda _r: problem(422, "must not name a condition", field)
    )
    typed = json.dumps(PLAN).replace("A steadier stretch", "Mild disorder")
    refused = browser.post(
        "/console/programs/p-1/plan", data={"csrf": csrf_of(page), "plan": typed}
    )
    assert refused.status_code == 422
    assert f"<code>{field}</code>: must not name a condition" in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert "Mild disorder" in textarea(refused.text)  # nothing lost
    assert "participants see the new plan" not in refused.text


def test_a_plan_that_is_not_json_is_refused_before_anything_is_sent(browser, apis) -> None:
    page = plan_page(browser, apis)
    refused = browser.post(
        "/console/programs/p-1/plan", data={"csrf": csrf_of(page), "plan": '{"based_on": '}
    )
    assert refused.status_code == 422 and "not JSON" in refused.text and "line 1" in refused.text
    assert not [c for c in apis.calls if c.method == "PUT"]


def test_the_programs_list_links_to_each_plan(browser, apis) -> None:
    program = {
        "program_id": "p-1",
        "title": "Recovery circle",
        "language": "zh",
        "price": {"amount_minor": 90000, "currency": "CNY"},
        "capacity": 8,
    }
    apis.answer("GET", "/programs", [program])
    sign_in(browser)
    page = browser.get("/console/programs", headers=EN).text
    assert 'href="/console/programs/p-1/plan"' in page
