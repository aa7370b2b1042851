"""The applicant's pages over in-memory APIs: what is shown, what is sent, and that a
retry never signs up twice."""

from __future__ import annotations

import json
import re

import httpx

from tests.web.conftest import csrf_of, form_token_of
from tests.web.fake_apis import GROUP, FakeApis, problem

SIGN_UP = "/cohorts/c-1/registrations"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def signed_up(crisis: list | None = None):
    """Registration's answer to every sign-up: no id, no token, the same for all."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            202,
            json={
                "status": "check_your_email",
                "verify_by": "2026-06-04T11:30:00+00:00",
                "crisis_resources": crisis or [],
            },
        )

    return answer


def filled(html: str, **changes: str) -> dict[str, str]:
    form = {
        "csrf": csrf_of(html),
        "form_token": form_token_of(html),
        "timezone": "Asia/Shanghai",
        "name": "小林",
        "email": "lin@example.org",
        "age_attested": "yes",
        "safety_harm": "no",
        "language": "zh",
        "privacy_notice_accepted": "yes",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v != ""}


def test_open_groups_in_the_browsers_language_never_with_a_count(browser) -> None:
    zh = browser.get("/", headers=ZH)
    assert zh.status_code == 200
    assert "开放报名的小组" in zh.text and "尚有名额" in zh.text
    assert "57" not in zh.text and "83" not in zh.text  # seats left, capacity
    en = browser.get("/", headers=EN)
    assert "Open groups" in en.text and "Places available" in en.text


def test_a_language_asked_for_is_remembered(browser) -> None:
    switched = browser.get("/?lang=en", headers=ZH)
    assert "Open groups" in switched.text
    assert switched.cookies.get("lang") == "en"
    assert "Open groups" in browser.get("/", headers=ZH).text


def test_a_full_group_says_the_waitlist_is_open(browser, apis: FakeApis) -> None:
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "seats_left": 0})
    page = browser.get("/groups/c-1", headers=EN)
    assert "Full: the waitlist is open" in page.text


def test_sign_up_sends_the_application_and_asks_to_check_the_email(browser, apis) -> None:
    apis.route("POST", SIGN_UP, signed_up())
    form_page = browser.get("/groups/c-1", headers=ZH).text
    done = browser.post("/groups/c-1/sign-up", data=filled(form_page), headers=ZH)
    assert done.status_code == 202
    assert "请查看您的邮箱" in done.text and "2026年6月4日" in done.text
    assert "/my/" not in done.text, "the page names no registration: the link goes by email"
    (sent,) = apis.posted(SIGN_UP)
    body = FakeApis.body(sent)
    assert body["safety_answers"] == {"harm": False}
    assert body["age_attested"] is True and body["privacy_notice_accepted"] is True
    assert sent.headers["Idempotency-Key"] == form_token_of(form_page)


def test_the_emailed_link_opens_a_page_whose_button_verifies_the_address(browser, apis) -> None:
    standing = {"registration_id": "r-1", "cohort_id": "c-1", "status": "unverified"}
    apis.route("GET", "/registrations/r-1", lambda r: httpx.Response(200, json=standing))
    verified = {"registration_id": "r-1", "status": "pending_review"}
    apis.route(
        "POST",
        "/registrations/r-1/verify-email",
        lambda r: (
            standing.update(status="pending_review"),
            httpx.Response(200, json=verified),
        )[1],
    )
    opened = browser.get("/my/r-1?t=tok-r-1", headers=ZH, follow_redirects=True)
    assert "尚未确认" in opened.text and "确认我的邮箱" in opened.text
    assert apis.posted("/registrations/r-1/verify-email") == [], "opening the link is not consent"
    done = browser.post("/my/r-1/verify-email", data={"csrf": csrf_of(opened.text)}, headers=ZH)
    assert done.status_code == 303 and done.headers["location"] == "/my/r-1"
    assert "等待协调员审核" in browser.get("/my/r-1", headers=ZH).text
    (asked,) = apis.posted("/registrations/r-1/verify-email")
    assert asked.headers["Authorization"] == "Bearer tok-r-1"


def test_a_link_past_its_time_says_to_sign_up_again(browser, apis) -> None:
    standing = {"registration_id": "r-1", "cohort_id": "c-1", "status": "unverified"}
    apis.answer("GET", "/registrations/r-1", standing)
    apis.route(
        "POST",
        "/registrations/r-1/verify-email",
        lambda r: problem(409, "this link has expired; please sign up again", "verify_by"),
    )
    opened = browser.get("/my/r-1?t=tok-r-1", headers=EN, follow_redirects=True)
    refused = browser.post("/my/r-1/verify-email", data={"csrf": csrf_of(opened.text)}, headers=EN)
    assert refused.status_code == 409
    assert "This link has expired. Please sign up again" in refused.text


def test_sending_the_same_form_twice_uses_one_key(browser, apis) -> None:
    apis.route("POST", SIGN_UP, signed_up())
    form = filled(browser.get("/groups/c-1").text)
    browser.post("/groups/c-1/sign-up", data=form)
    browser.post("/groups/c-1/sign-up", data=form)
    keys = {r.headers["Idempotency-Key"] for r in apis.posted(SIGN_UP)}
    assert len(apis.posted(SIGN_UP)) == 2 and len(keys) == 1


def test_an_unanswered_safety_question_is_named_and_nothing_is_sent(browser, apis) -> None:
    page = browser.get("/groups/c-1", headers=EN).text
    refused = browser.post("/groups/c-1/sign-up", data=filled(page, safety_harm=""), headers=EN)
    assert refused.status_code == 422
    assert "Please answer this question." in refused.text
    assert 'aria-describedby="safety_answers.harm-error"' in refused.text
    assert apis.posted(SIGN_UP) == []
    assert 'value="lin@example.org"' in refused.text  # what was typed is kept


def test_a_field_the_api_refuses_is_shown_beside_it(browser, apis) -> None:
    apis.route("POST", SIGN_UP, lambda r: problem(422, "value is not a valid email", "email"))
    page = browser.get("/groups/c-1", headers=EN).text
    refused = browser.post("/groups/c-1/sign-up", data=filled(page, email="nope"), headers=EN)
    assert refused.status_code == 422
    assert "Please give an email address we can write to." in refused.text
    email_input = re.search(r"<input id=\"email\"[^>]*>", refused.text)
    assert email_input and 'value="nope"' in email_input.group(0)
    assert 'aria-invalid="true"' in email_input.group(0)
    # The same key again: a corrected retry is still the one sign-up.
    assert form_token_of(refused.text) == form_token_of(page)


def test_a_positive_safety_answer_shows_the_crisis_lines_before_anything_else(
    browser, apis
) -> None:
    lines = [{"name": "Group line", "contact": "400-000-0000", "url": None}]
    apis.route("POST", SIGN_UP, signed_up(lines))
    page = browser.get("/groups/c-1", headers=ZH).text
    answer = browser.post("/groups/c-1/sign-up", data=filled(page, safety_harm="yes"), headers=ZH)
    assert answer.status_code == 200
    assert "如果您现在需要帮助" in answer.text and "12356" in answer.text
    assert answer.text.index("400-000-0000") < answer.text.index("请查看您的邮箱")


def test_every_page_links_the_crisis_lines(browser) -> None:
    for path in ("/", "/groups/c-1", "/crisis", "/console/sign-in", "/my/unknown"):
        page = browser.get(path)
        assert 'href="/crisis"' in page.text and "12356" in page.text, path


def test_a_post_without_the_form_token_is_refused_and_nothing_is_sent(browser, apis) -> None:
    page = browser.get("/groups/c-1").text
    form = filled(page)
    del form["csrf"]
    refused = browser.post("/groups/c-1/sign-up", data=form)
    assert refused.status_code == 403
    assert apis.posted(SIGN_UP) == []


def test_my_registration_shows_nothing_without_the_emailed_link(browser, apis) -> None:
    assert browser.get("/my/r-9").status_code == 403
    assert not [c for c in apis.calls if c.url.path == "/registrations/r-9"]


def test_the_emailed_link_is_kept_in_the_session_and_leaves_the_address_bar(browser, apis) -> None:
    apis.answer(
        "GET",
        "/registrations/r-3",
        {
            "registration_id": "r-3",
            "cohort_id": "c-1",
            "status": "offered",
            "expires_at": "2031-02-01T10:00:00Z",
        },
    )
    opened = browser.get("/my/r-3?t=secret-token")
    assert opened.status_code == 303 and opened.headers["location"] == "/my/r-3"
    page = browser.get("/my/r-3", headers=EN)
    assert "A place is offered to you" in page.text and "Take the place" in page.text
    apis.answer(
        "POST", "/registrations/r-3/accept-offer", {"registration_id": "r-3", "status": "approved"}
    )
    taken = browser.post("/my/r-3/accept-offer", data={"csrf": csrf_of(page.text)})
    assert taken.status_code == 303
    (sent,) = apis.posted("/registrations/r-3/accept-offer")
    assert sent.headers["Authorization"] == "Bearer secret-token"


def test_withdrawing_states_the_refund_policy_first(browser, apis) -> None:
    apis.answer(
        "GET",
        "/registrations/r-4",
        {"registration_id": "r-4", "cohort_id": "c-1", "status": "confirmed"},
    )
    browser.get("/my/r-4?t=tok")
    confirm = browser.get("/my/r-4/withdraw", headers=EN)
    assert "Refunded in full if you withdraw before the group starts." in confirm.text
    apis.answer(
        "POST", "/registrations/r-4/withdraw", {"registration_id": "r-4", "status": "withdrawn"}
    )
    done = browser.post("/my/r-4/withdraw", data={"csrf": csrf_of(confirm.text)})
    assert done.status_code == 303 and len(apis.posted("/registrations/r-4/withdraw")) == 1


def test_a_service_that_does_not_answer_is_a_page_saying_nothing_was_lost(browser, apis) -> None:
    def down(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    apis.route("GET", "/cohorts", down)
    page = browser.get("/", headers=EN)
    assert page.status_code == 503 and "Nothing you sent was lost" in page.text


def test_a_confirmed_applicant_gets_a_discreet_calendar_file(browser, apis) -> None:
    from icalendar import Calendar

    apis.answer(
        "GET",
        "/registrations/r-5",
        {"registration_id": "r-5", "cohort_id": "c-1", "status": "confirmed"},
    )
    browser.get("/my/r-5?t=tok")
    assert 'href="/my/r-5/calendar.ics"' in browser.get("/my/r-5").text
    ics = browser.get("/my/r-5/calendar.ics", headers=EN)
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    events = [c for c in Calendar.from_ical(ics.content).walk() if c.name == "VEVENT"]
    assert len(events) == len(GROUP["sessions"])
    assert str(events[0]["summary"]) == "Holdspace group session"
    assert GROUP["title"] not in ics.text  # the group's name may say what it is about


def test_no_calendar_before_a_place_is_confirmed(browser, apis) -> None:
    apis.answer(
        "GET",
        "/registrations/r-6",
        {"registration_id": "r-6", "cohort_id": "c-1", "status": "waitlisted"},
    )
    browser.get("/my/r-6?t=tok")
    assert browser.get("/my/r-6/calendar.ics").status_code == 403


def test_pages_load_nothing_from_elsewhere_and_are_not_cached(browser) -> None:
    page = browser.get("/groups/c-1")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert "http://" not in page.text.split("<body>")[0].replace("http://127.0.0.1", "")
    css = browser.get("/static/site.css")
    assert css.status_code == 200 and "cache-control" not in css.headers


def open_confirmed(browser, apis) -> None:
    """r-5, confirmed, opened from its emailed link."""
    apis.answer(
        "GET",
        "/registrations/r-5",
        {"registration_id": "r-5", "cohort_id": "c-1", "status": "confirmed"},
    )
    browser.get("/my/r-5?t=tok")


JOINING = {
    "platform": "腾讯会议",
    "url": "https://meeting.tencent.com/dm/abc123",
    "meeting_id": "123 456 789",
    "passcode": "8642",
}


def test_a_confirmed_participant_sees_how_to_join_on_the_page_and_in_the_calendar(
    browser, apis
) -> None:
    from icalendar import Calendar

    open_confirmed(browser, apis)
    apis.answer("GET", "/registrations/r-5/joining", JOINING)
    page = browser.get("/my/r-5", headers=ZH).text
    assert "如何参加" in page and "腾讯会议" in page and "123 456 789" in page and "8642" in page
    assert 'href="https://meeting.tencent.com/dm/abc123"' in page
    (asked,) = [c for c in apis.calls if c.url.path == "/registrations/r-5/joining"]
    assert asked.headers["Authorization"] == "Bearer tok"
    ics = browser.get("/my/r-5/calendar.ics", headers=EN)
    (event, *_) = [c for c in Calendar.from_ical(ics.content).walk() if c.name == "VEVENT"]
    assert str(event["location"]) == "腾讯会议"
    assert str(event["url"]) == JOINING["url"]
    assert "Passcode: 8642" in str(event["description"])
    assert str(event["uid"]).startswith("c-1-")  # the UIDs of the emailed calendars


def test_before_the_details_are_set_a_confirmed_participant_is_told_they_will_come(
    browser, apis
) -> None:
    open_confirmed(browser, apis)
    page = browser.get("/my/r-5", headers=EN)
    assert page.status_code == 200
    assert "will put the joining details here before the first session" in page.text


def test_nobody_but_a_confirmed_participant_is_asked_for_the_joining_details(browser, apis) -> None:
    apis.answer("GET", "/registrations/r-5/joining", JOINING)
    for status in ("awaiting_payment", "waitlisted", "withdrawn"):
        apis.answer(
            "GET",
            "/registrations/r-5",
            {"registration_id": "r-5", "cohort_id": "c-1", "status": status},
        )
        browser.get("/my/r-5?t=tok")
        page = browser.get("/my/r-5", headers=EN).text
        assert "8642" not in page and "How to join" not in page, status
    assert not [c for c in apis.calls if c.url.path.endswith("/joining")]
    assert "8642" not in browser.get("/groups/c-1", headers=EN).text


def test_a_group_held_in_one_language_is_read_in_the_other_with_its_own_words_beside(
    browser, apis
) -> None:
    held_in_english = {
        **GROUP,
        "language": "en",
        "title": "Recovery circle",
        "description": "A small group.",
        "translation": {"title": "康复小组", "description": "一个小型小组。"},
    }
    apis.answer("GET", "/cohorts", [held_in_english])
    apis.answer("GET", "/cohorts/c-1", held_in_english)
    zh = browser.get("/groups/c-1", headers=ZH).text
    assert "<h1>康复小组</h1>" in zh and 'lang="en">Recovery circle</p>' in zh
    assert zh.index("一个小型小组。") < zh.index("A small group.")
    assert "康复小组" in browser.get("/", headers=ZH).text
    en = browser.get("/groups/c-1", headers=EN).text
    assert "<h1>Recovery circle</h1>" in en and "康复小组" not in en


def test_a_group_without_a_translation_is_shown_in_its_own_words() -> None:
    from web.domain.wording import as_seen

    assert as_seen(GROUP, "en") is GROUP  # GROUP is held in Chinese, with no translation
    only_title = {**GROUP, "translation": {"title": "Recovery circle", "description": ""}}
    seen = as_seen(only_title, "en")
    assert seen["title"] == "Recovery circle" and seen["own_title"] == GROUP["title"]
    assert seen["description"] == GROUP["description"] and seen["own_description"] == ""


def test_too_many_sign_ups_is_said_with_when_to_try_again_and_nothing_typed_is_lost(
    browser, apis
) -> None:
    def refused(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"status": 429, "detail": "too many", "retry_after": 90},
            headers={"content-type": "application/problem+json", "Retry-After": "90"},
        )

    apis.route("POST", SIGN_UP, refused)
    page = browser.get("/groups/c-1", headers=EN)
    answer = browser.post("/groups/c-1/sign-up", data=filled(page.text), headers=EN)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "90"
    assert "try again in 2 minute(s)" in answer.text and 'value="小林"' in answer.text
    (sent,) = apis.posted(SIGN_UP)
    assert sent.headers["X-Forwarded-For"] == "testclient"  # the browser's address


def test_erasing_my_data_asks_first_then_shows_each_part_as_it_is_done(browser, apis) -> None:
    standing = {"registration_id": "r-1", "cohort_id": "c-1", "status": "awaiting_payment"}
    apis.route("GET", "/registrations/r-1", lambda r: httpx.Response(200, json=standing))

    def erase(request: httpx.Request) -> httpx.Response:
        standing["status"] = "withdrawn"
        standing["erasure"] = {
            "registration_id": "r-1",
            "requested_at": "2026-06-03T11:30:00+00:00",
            "services": {
                "registration": "2026-06-03T11:30:00+00:00",
                "consent": None,
                "payments": None,
                "notifications": None,
            },
            "complete": False,
        }
        return httpx.Response(202, json=standing["erasure"])

    apis.route("POST", "/registrations/r-1/erasure", erase)
    mine = browser.get("/my/r-1?t=tok-r-1", headers=EN, follow_redirects=True)
    assert 'href="/my/r-1/erase"' in mine.text
    asked = browser.get("/my/r-1/erase", headers=EN)
    assert "This cannot be undone" in asked.text and "You leave" in asked.text
    assert apis.posted("/registrations/r-1/erasure") == [], "asking is not erasing"
    done = browser.post("/my/r-1/erase", data={"csrf": csrf_of(asked.text)}, headers=EN)
    assert done.status_code == 303
    (sent,) = apis.posted("/registrations/r-1/erasure")
    assert sent.headers["Authorization"] == "Bearer tok-r-1"
    shown = browser.get("/my/r-1", headers=EN).text
    assert "Erasing your data" in shown and "Your sign-up: erased" in shown
    assert "Your consent signature: in progress" in shown
    assert 'href="/my/r-1/erase"' not in shown


def test_my_data_downloads_as_a_file_only_with_the_link(browser, apis) -> None:
    standing = {"registration_id": "r-1", "cohort_id": "c-1", "status": "waitlisted"}
    apis.answer("GET", "/registrations/r-1", standing)
    parts = {  # each service's part, by the port the pages call it on (WebSettings)
        8001: {"registration_id": "r-1", "name": "小林", "email": "lin@example.org"},
        8002: {"consent": {"status": "signed"}, "signatures": [{"typed_name": "小林"}]},
        8003: {"payment": {"status": "paid"}, "flags": []},
        8004: {"contact": {"email": "lin@example.org"}, "messages": [{"template": "x"}]},
        8005: {"space": None, "feedback": []},
    }
    apis.route(
        "GET",
        "/registrations/r-1/export",
        lambda request: httpx.Response(200, json=parts[request.url.port]),
    )
    assert browser.get("/my/r-1/export").status_code == 403  # no link followed yet
    assert not [c for c in apis.calls if c.url.path == "/registrations/r-1/export"]
    browser.get("/my/r-1?t=tok-r-1")
    got = browser.get("/my/r-1/export")
    assert got.status_code == 200
    assert got.headers["content-disposition"].startswith("attachment;")
    assert json.loads(got.text) == {
        "registration": parts[8001],
        "consent": parts[8002],
        "payments": parts[8003],
        "notifications": parts[8004],
        "progress": parts[8005],
    }
    asked = [c for c in apis.calls if c.url.path == "/registrations/r-1/export"]
    assert [c.url.port for c in asked] == [8001, 8002, 8003, 8004, 8005]  # the token checked first
    assert asked[0].headers["Authorization"] == "Bearer tok-r-1"
    for other in asked[1:]:  # the others are asked by the pages, not with the link's token
        assert other.headers["Authorization"] != "Bearer tok-r-1"


def test_a_mixed_group_asks_whether_one_would_prefer_a_single_gender_group(browser, apis) -> None:
    page = browser.get("/groups/c-1", headers=EN).text
    assert 'id="single_gender_preference"' in page and 'id="gender-woman"' in page
    assert "withdraw within 7 days with a full refund" in page
    apis.route("POST", SIGN_UP, signed_up())
    done = browser.post(
        "/groups/c-1/sign-up", data=filled(page, gender="woman", single_gender_preference="yes")
    )
    assert done.status_code == 202
    (sent,) = apis.posted(SIGN_UP)
    assert FakeApis.body(sent)["gender"] == "woman"
    assert FakeApis.body(sent)["single_gender_preference"] is True


def test_an_unmet_wish_shows_the_window_and_the_refund_on_the_registration_page(
    browser, apis
) -> None:
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "refund_policy": "no_refund"})
    apis.answer(
        "GET",
        "/registrations/r-5",
        {
            "registration_id": "r-5",
            "cohort_id": "c-1",
            "status": "confirmed",
            "composition_notice": {
                "composition": "mixed",
                "withdraw_by": "2031-02-20T12:00:00Z",
                "refundable": True,
            },
        },
    )
    browser.get("/my/r-5?t=tok")
    page = browser.get("/my/r-5", headers=EN).text
    assert "it will be a mixed group" in page
    assert "withdraw until Thu 20 Feb 2031, 20:00" in page
    assert "refunded in full" in page
    confirm = browser.get("/my/r-5/withdraw", headers=EN).text
    assert "so anything you have paid is refunded in full" in confirm
    assert "No refund once paid" not in confirm
    zh = browser.get("/my/r-5", headers=ZH).text
    assert "男女混合的小组" in zh
