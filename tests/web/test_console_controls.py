"""The console's controls over a running group (services/web/console_controls.py): each
form sends one of registration's coordinator routes, with the coordinator's token, and
a refusal is shown beside the control, nothing lost."""

from __future__ import annotations

import httpx
from web.setup_forms import session_lines, sessions_from_lines

from tests.web.conftest import csrf_of
from tests.web.fake_apis import GROUP, FakeApis, problem
from tests.web.test_console_access import EN, sign_in
from tests.web.test_console_and_consent_pages import reg
from tests.web.test_payment_pages import group_page_answers


def signed_in_on_group(browser, apis: FakeApis, **group: object) -> str:
    group_page_answers(apis)
    apis.answer("GET", "/cohorts/c-1", {**GROUP, **group})
    sign_in(browser)
    page = browser.get("/console/groups/c-1", headers=EN)
    assert page.status_code == 200, page.text
    return page.text


def puts(apis: FakeApis, method: str = "PUT") -> list[httpx.Request]:
    return [c for c in apis.calls if c.method == method and "/cohorts/c-1/" in c.url.path]


def test_more_places_are_sent_and_fewer_than_held_is_shown_as_refused(browser, apis) -> None:
    page = signed_in_on_group(browser, apis)
    assert "Changes to this group" in page and 'value="83"' in page
    apis.answer("PUT", "/cohorts/c-1/capacity", {"capacity": 90, "offered": 2})
    done = browser.post(
        "/console/groups/c-1/capacity", data={"csrf": csrf_of(page), "capacity": "90"}
    )
    assert done.headers["location"] == "/console/groups/c-1#controls"
    (put,) = puts(apis)
    assert FakeApis.body(put) == {"capacity": 90}
    assert put.headers["Authorization"].startswith("Bearer ")

    apis.route("PUT", "/cohorts/c-1/capacity", lambda _r: problem(409, "3 seats are held"))
    low = browser.post(
        "/console/groups/c-1/capacity", data={"csrf": csrf_of(page), "capacity": "2"}
    )
    assert low.headers["location"] == "/console/groups/c-1?error=capacity_low#controls"
    shown = browser.get(low.headers["location"], headers=EN).text
    assert "places cannot go below them" in shown

    calls = len(apis.calls)
    bad = browser.post(
        "/console/groups/c-1/capacity", data={"csrf": csrf_of(page), "capacity": "0"}
    )
    assert bad.headers["location"] == "/console/groups/c-1?error=capacity#controls"
    assert not [c for c in apis.calls[calls:] if c.method == "PUT"]  # nothing sent


def test_sign_ups_close_and_reopen_from_the_groups_page(browser, apis) -> None:
    page = signed_in_on_group(browser, apis)
    assert "Close sign-ups now" in page
    apis.answer("PUT", "/cohorts/c-1/registration", {"registration_closed": True})
    browser.post("/console/groups/c-1/registration", data={"csrf": csrf_of(page), "open": "no"})
    assert FakeApis.body(puts(apis)[-1]) == {"open": False}
    closed = signed_in_on_group(browser, apis, registration_closed=True)
    assert "Reopen sign-ups" in closed and "Sign-ups are closed" in closed
    browser.post("/console/groups/c-1/registration", data={"csrf": csrf_of(closed), "open": "yes"})
    assert FakeApis.body(puts(apis)[-1]) == {"open": True}


def test_cancelling_needs_the_box_ticked_and_a_cancelled_group_offers_no_controls(
    browser, apis
) -> None:
    page = signed_in_on_group(browser, apis)
    assert "money paid is refunded" in page and "cannot be undone" in page
    unticked = browser.post("/console/groups/c-1/cancel", data={"csrf": csrf_of(page)})
    assert unticked.headers["location"] == "/console/groups/c-1?error=cancel_confirm#controls"
    assert not puts(apis, "POST")
    apis.answer("POST", "/cohorts/c-1/cancel", {"cohort_id": "c-1", "ended": 5})
    done = browser.post(
        "/console/groups/c-1/cancel", data={"csrf": csrf_of(page), "confirm": "yes"}
    )
    assert done.headers["location"] == "/console/groups/c-1#controls"
    assert len(puts(apis, "POST")) == 1
    cancelled = signed_in_on_group(browser, apis, cancelled=True)
    assert "This group was cancelled" in cancelled and "Cancel this group" not in cancelled


def test_sessions_typed_one_per_line_are_sent_and_a_bad_line_is_named(browser, apis) -> None:
    sign_in(browser)
    form = browser.get("/console/groups/c-1/sessions", headers=EN)
    assert form.status_code == 200
    assert session_lines(GROUP["sessions"]) in form.text  # the current ones, to edit
    apis.answer("PUT", "/cohorts/c-1/sessions", {"sessions_sequence": 1})
    typed = "2031-05-07 19:00-20:30\n\n2031-05-14 23:30-01:00\n"
    done = browser.post(
        "/console/groups/c-1/sessions", data={"csrf": csrf_of(form.text), "sessions": typed}
    )
    assert done.headers["location"] == "/console/groups/c-1#controls"
    sent = FakeApis.body(puts(apis)[-1])["sessions"]
    tz = GROUP["sessions"][0]["timezone"]
    assert sent == sessions_from_lines(typed, tz)[0]
    assert len(sent) == 2 and sent[1]["ends_at"].startswith("2031-05-15T01:00")

    calls = len(apis.calls)
    wrong = browser.post(
        "/console/groups/c-1/sessions",
        data={"csrf": csrf_of(form.text), "sessions": "2031-05-07 19:00-20:30\nnext Tuesday"},
        headers=EN,
    )
    assert wrong.status_code == 422 and "Line 2 is not a session" in wrong.text
    assert "next Tuesday" in wrong.text  # what was typed is kept
    assert not [c for c in apis.calls[calls:] if c.method == "PUT"]


def test_no_sessions_or_an_impossible_date_is_refused() -> None:
    assert sessions_from_lines("", "Asia/Shanghai") == ([], 1)
    assert sessions_from_lines("2031-02-30 19:00-20:00", "Asia/Shanghai") == ([], 1)
    (one,), bad = sessions_from_lines("2031-03-04 19:00-20:30", "Asia/Shanghai")
    assert bad is None and one["starts_at"] == "2031-03-04T19:00:00+08:00"


def test_an_applicant_of_a_cancelled_group_reads_so_on_their_page(browser, apis) -> None:
    apis.answer(
        "GET",
        "/registrations/r-7",
        {
            "registration_id": "r-7",
            "cohort_id": "c-1",
            "status": "withdrawn",
            "cohort_cancelled": True,
        },
    )
    browser.get("/my/r-7?t=tok")
    page = browser.get("/my/r-7", headers=EN).text
    assert "The coordinator has cancelled this group" in page
    assert 'id="cancelled-notice"' in page


def test_a_closed_or_cancelled_groups_page_offers_no_sign_up_form(browser, apis) -> None:
    assert 'action="/groups/c-1/sign-up"' in browser.get("/groups/c-1", headers=EN).text
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "registration_closed": True})
    closed = browser.get("/groups/c-1", headers=EN).text
    assert "Sign-ups for this group are closed" in closed
    assert 'action="/groups/c-1/sign-up"' not in closed
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "cancelled": True, "registration_closed": True})
    cancelled = browser.get("/groups/c-1", headers=EN).text
    assert "has been cancelled" in cancelled
    assert 'action="/groups/c-1/sign-up"' not in cancelled


def test_a_registration_moves_to_another_group_of_its_program(browser, apis) -> None:
    other = {**GROUP, "cohort_id": "c-2", "label": "Autumn"}
    elsewhere = {**GROUP, "cohort_id": "c-3", "program_id": "another", "label": "Elsewhere"}
    apis.answer("GET", "/cohorts", [GROUP, other, elsewhere])
    apis.answer("GET", "/registrations/r-9/record", {**reg("r-9", "confirmed"), "cohort_id": "c-1"})
    apis.answer("GET", "/registrations/r-9/payment/record", None, status=404)
    sign_in(browser)
    page = browser.get("/console/registrations/r-9", headers=EN)
    assert page.status_code == 200, page.text
    assert "Move to another group" in page.text
    assert 'value="c-2"' in page.text and 'value="c-3"' not in page.text  # its program only
    assert 'value="c-1"' not in page.text  # nor its own group

    apis.answer("POST", "/registrations/r-9/move", {"cohort_id": "c-2", "status": "confirmed"})
    done = browser.post("/console/moves/r-9", data={"csrf": csrf_of(page.text), "cohort_id": "c-2"})
    assert done.headers["location"] == "/console/registrations/r-9"
    (sent,) = [c for c in apis.calls if c.url.path == "/registrations/r-9/move"]
    assert FakeApis.body(sent) == {"cohort_id": "c-2"}

    apis.route("POST", "/registrations/r-9/move", lambda _r: problem(409, "no free place"))
    refused = browser.post(
        "/console/moves/r-9", data={"csrf": csrf_of(page.text), "cohort_id": "c-2"}
    )
    assert refused.headers["location"] == "/console/registrations/r-9?error=move#move-section"
    shown = browser.get(refused.headers["location"], headers=EN).text
    assert "The move was refused" in shown and "Nothing was changed" in shown
