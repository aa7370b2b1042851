"""The space between sessions through the pages (services/web/progress_pages.py): the
link from "my registration", the questionnaire and its chart, homework, milestones,
sharing, the peer code, feedback; each form posts what progress takes, with a token for
that one registration, and a refusal is shown beside its field, nothing lost."""

from __future__ import annotations

import base64
import json
import re

import httpx
import pytest
from web.domain import between
from web.domain.chart import line_chart
from web.i18n import catalog
from web.progress_pages import refusal_keys

from shared.erasure import ERASING_SERVICES
from shared.security import Role, verify_token
from shared.settings import DEV_JWT_SECRET
from tests.web.conftest import csrf_of
from tests.web.fake_apis import GROUP, FakeApis
from tests.web.fake_progress import BASE, PLAN, FakeProgress

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}
CONFIRMED = {"registration_id": "r-1", "cohort_id": "c-1", "status": "confirmed"}
PAST = [  # two sessions that took place, one to come
    {"starts_at": f"2024-03-{d}T11:00:00Z", "ends_at": f"2024-03-{d}T12:30:00Z", "timezone": "UTC"}
    for d in ("04", "11")
] + [{"starts_at": "2031-03-04T11:00:00Z", "ends_at": "2031-03-04T12:30:00Z", "timezone": "UTC"}]


def opened(browser, apis: FakeApis, status: str = "confirmed") -> None:
    apis.answer("GET", "/registrations/r-1", {**CONFIRMED, "status": status})
    browser.headers.update(EN)  # what the pages say, and the posts' answers, in English
    browser.get("/my/r-1?t=tok-r-1")


@pytest.fixture
def progress(browser, apis) -> FakeProgress:
    """A confirmed participant's browser, the link followed, and progress's space."""
    opened(browser, apis)
    return FakeProgress(apis)


def shown(browser, headers=EN) -> str:
    page = browser.get("/my/r-1/progress", headers=headers)
    assert page.status_code == 200, page.text
    return page.text


def answered(page: str, **answers: int) -> dict[str, str]:
    return {
        "csrf": csrf_of(page),
        "questionnaire_id": "week",
        "response_id": re.search(r'name="response_id" value="([^"]+)"', page).group(1),
        **{f"item_{k}": str(v) for k, v in answers.items()},
    }


# --- the link ----------------------------------------------------------------------------


def test_the_link_shows_only_once_progress_has_a_space(browser, apis) -> None:
    opened(browser, apis)
    mine = browser.get("/my/r-1", headers=EN).text
    assert "/my/r-1/progress" not in mine  # progress answers 404: no space yet
    (asked,) = [c for c in apis.calls if c.url.path == BASE]
    assert asked.url.port == 8005
    principal = verify_token(DEV_JWT_SECRET, asked.headers["Authorization"][7:])
    assert principal.role == Role.pages and principal.subject == "applicant:r-1"
    assert browser.get("/my/r-1/progress", headers=EN).status_code == 404

    FakeProgress(apis)
    assert 'href="/my/r-1/progress"' in browser.get("/my/r-1", headers=EN).text
    zh = browser.get("/my/r-1", headers=ZH).text
    assert re.search(r'href="/my/r-1/progress"[^>]*>课间</a>', zh)


def test_before_confirmation_progress_is_not_even_asked(browser, apis) -> None:
    opened(browser, apis, status="awaiting_payment")
    FakeProgress(apis)
    assert "/my/r-1/progress" not in browser.get("/my/r-1", headers=EN).text
    assert not [c for c in apis.calls if c.url.path.startswith("/spaces/")]


def test_a_progress_that_does_not_answer_hides_the_link_not_the_page(browser, apis) -> None:
    opened(browser, apis)
    apis.route("GET", BASE, lambda _r: httpx.Response(503))
    mine = browser.get("/my/r-1", headers=EN)
    assert mine.status_code == 200 and "/my/r-1/progress" not in mine.text


def test_no_space_without_the_registrations_link(browser, apis) -> None:
    FakeProgress(apis)
    assert browser.get("/my/r-1/progress").status_code == 403
    assert not [c for c in apis.calls if c.url.path.startswith("/spaces/")]


# --- the questionnaire and its chart -------------------------------------------------------


def test_answers_are_posted_once_per_form_and_the_chart_shows_both_points(
    browser, progress
) -> None:
    page = shown(browser, ZH)
    assert "<h1>课间</h1>" in page and "<legend>我觉得孤单</legend>" in page
    # Written only in English: shown so rather than not at all, and marked as English.
    assert '<legend><span lang="en">I slept badly</span></legend>' in page
    assert "<circle" not in page and "现在可以填写。" in page  # waiting for them
    first = answered(page, sleep=2, alone=1, harm=0)
    done = browser.post("/my/r-1/progress/responses", data=first)
    assert done.status_code == 303 and done.headers["location"] == "/my/r-1/progress#q-week"
    again = browser.post("/my/r-1/progress/responses", data=first)  # a double tap
    assert again.status_code == 303
    sent = progress.sent("POST", "/responses")
    assert sent[0] == {
        "questionnaire_id": "week",
        "answers": {"sleep": 2, "alone": 1, "harm": 0},
        "response_id": first["response_id"],
    }
    assert sent[1] == sent[0]  # the same id: progress records it once
    second = answered(shown(browser), sleep=3, alone=3, harm=0)
    assert second["response_id"] != first["response_id"]
    browser.post("/my/r-1/progress/responses", data=second)

    page = shown(browser)
    assert "Waiting for you now." not in page  # answered this week: the form folded away
    assert re.search(r"<details class=\"again\"><summary>Answer again</summary>\s*<form", page)
    chart = page[page.index("<svg") : page.index("</svg>")]
    assert chart.count("<circle") == 2 and "<polyline" in chart
    assert "<title" in chart and "<desc" in chart and "2 answers" in chart
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/site.js" defer>']
    assert "style=" not in chart  # the CSP allows no inline style: classes colour it
    table = page[page.index('<table class="history scores"') :]
    assert "<td>3</td><td>A steadier stretch</td>" in table
    assert "<td>6</td><td>Some strain</td>" in table
    assert "Your latest score: 6. Some strain" in page
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert title == "Between sessions · Holdspace"  # no questionnaire, no band, no condition


def test_each_questionnaire_form_has_an_id_of_its_own(browser, progress) -> None:
    second = {**PLAN["questionnaires"][0], "id": "month", "title": {"en": "This month"}}
    progress.space["plan"] = {**PLAN, "questionnaires": [*PLAN["questionnaires"], second]}
    ids = re.findall(r'name="response_id" value="([^"]+)"', shown(browser))
    assert len(ids) == 2 and ids[0] != ids[1]


def test_an_item_left_unanswered_is_marked_and_nothing_is_sent(browser, progress) -> None:
    page = shown(browser)
    refused = browser.post("/my/r-1/progress/responses", data=answered(page, sleep=2, harm=0))
    assert refused.status_code == 422
    assert 'id="answers.alone-error"' in refused.text and "Please choose an answer." in refused.text
    assert re.search(r'id="q-week-sleep-2"[^>]*checked', refused.text)  # kept as chosen
    assert progress.sent("POST", "/responses") == []


def test_a_refusal_of_progress_is_shown_beside_the_item_it_names(browser, progress) -> None:
    page = shown(browser)
    progress.refuse("POST", "/responses", 422, "not one of this item's choices", "answers.sleep")
    form = answered(page, sleep=2, alone=1, harm=0)
    refused = browser.post("/my/r-1/progress/responses", data=form)
    assert refused.status_code == 422
    assert 'id="answers.sleep-error"' in refused.text
    assert re.search(
        r'<fieldset aria-invalid="true" aria-describedby="answers.sleep-error"', refused.text
    )
    assert re.search(r'id="q-week-alone-1"[^>]*checked', refused.text)
    assert f'value="{form["response_id"]}"' in refused.text  # sent again, still once


def test_an_answer_at_a_safety_items_threshold_shows_the_crisis_lines_at_once(
    browser, apis, progress
) -> None:
    apis.answer(
        "GET",
        "/cohorts/c-1",
        {
            **GROUP,
            "crisis_resources": [{"name": "Crisis line", "contact": "400-161-9995", "url": None}],
        },
    )
    page = shown(browser)
    crisis = browser.post(
        "/my/r-1/progress/responses", data=answered(page, sleep=0, alone=0, harm=1)
    )
    assert crisis.status_code == 200
    assert "a coordinator of your group has been told" in crisis.text
    assert "12356" in crisis.text and "400-161-9995" in crisis.text
    assert 'href="/my/r-1/progress"' in crisis.text
    assert len(progress.sent("POST", "/responses")) == 1  # recorded: progress routes it


# --- homework, milestones, sharing --------------------------------------------------------


def test_homework_is_marked_with_its_private_journal(browser, progress) -> None:
    page = shown(browser)
    assert "Your journal is private" in page and "sealed" in page
    done = browser.post(
        "/my/r-1/progress/homework/1",
        data={"csrf": csrf_of(page), "done": "yes", "journal": "  Walked to the river.  "},
    )
    assert done.headers["location"] == "/my/r-1/progress#homework-1"
    assert progress.sent("PUT", "/homework/1") == [
        {"done": True, "journal": "Walked to the river."}
    ]
    browser.post("/my/r-1/progress/homework/1", data={"csrf": csrf_of(page), "journal": ""})
    assert progress.sent("PUT", "/homework/1")[1] == {"done": False, "journal": ""}  # '' clears


def test_a_note_on_a_session_the_plan_no_longer_sets_homework_for_stays(browser, progress) -> None:
    note = {"session": 2, "text": None, "done_at": None, "journal": "Kept from before"}
    progress.space["homework"] = [*progress.space["homework"], note]
    page = shown(browser)
    assert "no longer sets homework for this session" in page
    assert ">Kept from before</textarea>" in page


def test_a_journal_too_long_is_said_beside_it_and_kept(browser, progress) -> None:
    page = shown(browser)
    progress.refuse("PUT", "/homework/1", 422, "at most 10000 characters", "journal")
    refused = browser.post(
        "/my/r-1/progress/homework/1",
        data={"csrf": csrf_of(page), "done": "yes", "journal": "My long notes"},
    )
    assert refused.status_code == 422
    assert 'id="journal-error"' in refused.text and "This is too long" in refused.text
    assert ">My long notes</textarea>" in refused.text


def test_only_the_milestones_whose_box_changed_are_sent(browser, progress) -> None:
    page = shown(browser)
    assert "we email you a short note of encouragement" in page
    form = {"csrf": csrf_of(page), "m_told-someone": "yes"}
    done = browser.post("/my/r-1/progress/milestones", data=form)
    assert done.headers["location"] == "/my/r-1/progress#milestones"
    assert progress.sent("PUT", "/milestones/told-someone") == [{"reached": True}]
    assert progress.sent("PUT", "/milestones/first-week") == []
    page = shown(browser)
    assert "1 of 2 reached" in page and re.search(r'id="m-told-someone"[^>]*checked', page)
    browser.post("/my/r-1/progress/milestones", data={"csrf": csrf_of(page)})
    assert progress.sent("PUT", "/milestones/told-someone")[1] == {"reached": False}


def test_sharing_is_off_until_ticked_and_is_sent_whole(browser, progress) -> None:
    page = shown(browser)
    assert "Nothing is shared unless you tick it here" in page and "stop at any time" in page
    assert not re.search(r'id="share-[a-z_]+"[^>]*checked', page)
    form = {"csrf": csrf_of(page), "scores": "yes", "milestones": "yes", "with_facilitator": "yes"}
    done = browser.post("/my/r-1/progress/sharing", data=form)
    assert done.headers["location"] == "/my/r-1/progress#sharing"
    assert progress.sent("PUT", "/sharing") == [
        {"scores": True, "homework": False, "milestones": True, "with_facilitator": True}
    ]
    page = shown(browser)
    assert re.search(r'id="share-with_facilitator"[^>]*checked', page)
    assert not re.search(r'id="share-homework"[^>]*checked', page)


def test_a_closed_space_is_read_only(browser, progress) -> None:
    progress.space["status"] = "closed"
    page = shown(browser)
    assert "This space is closed" in page
    assert "/progress/responses" not in page and "/progress/sharing" not in page


def test_a_closed_space_refuses_and_the_page_says_so(browser, progress) -> None:
    page = shown(browser)
    progress.refuse("PUT", "/sharing", 409, "this space is closed", "registration_id")
    refused = browser.post("/my/r-1/progress/sharing", data={"csrf": csrf_of(page)})
    assert refused.status_code == 409 and "This space is closed" in refused.text


# --- peers ----------------------------------------------------------------------------------


def session_data(browser) -> str:
    cookie = browser.cookies.get("holdspace_session")
    payload = cookie.split(".")[0]
    return base64.b64decode(payload + "=" * (-len(payload) % 4)).decode()


def test_the_invitation_code_is_shown_once_and_kept_nowhere(browser, apis, progress) -> None:
    page = shown(browser)
    apis.answer(
        "POST",
        f"{BASE}/peer-invitation",
        {"code": "K7QX2-M4PNR", "expires_at": "2031-03-18T10:00:00+00:00"},
    )
    made = browser.post("/my/r-1/progress/peer/invite", data={"csrf": csrf_of(page)})
    assert made.status_code == 200
    assert "K7QX2-M4PNR" in made.text and "It is shown only now" in made.text
    progress.space["peer"]["invitation_expires_at"] = "2031-03-18T10:00:00+00:00"
    later = shown(browser)
    assert "K7QX2-M4PNR" not in later and "waiting to be accepted" in later
    assert "K7QX2-M4PNR" not in session_data(browser)


def test_a_code_is_accepted_and_an_unknown_one_is_said_beside_the_field(browser, progress) -> None:
    page = shown(browser)
    done = browser.post(
        "/my/r-1/progress/peer/accept", data={"csrf": csrf_of(page), "code": " abcde-fghjk "}
    )
    assert done.headers["location"] == "/my/r-1/progress#shared-with-me"
    assert progress.sent("POST", "/peer-invitation/accept") == [{"code": "ABCDE-FGHJK"}]
    progress.refuse("POST", "/peer-invitation/accept", 404, "no such invitation", "code")
    refused = browser.post(
        "/my/r-1/progress/peer/accept", data={"csrf": csrf_of(page), "code": "ZZZZZ-ZZZZZ"}
    )
    assert refused.status_code == 404
    assert 'id="code-error"' in refused.text and "has expired" in refused.text
    assert 'value="ZZZZZ-ZZZZZ"' in refused.text


def test_sharing_with_a_member_stops(browser, progress) -> None:
    progress.space["peer"]["shared_with_someone"] = True
    page = shown(browser)
    assert "You share with one member of your group." in page
    done = browser.post("/my/r-1/progress/peer/stop", data={"csrf": csrf_of(page)})
    assert done.headers["location"] == "/my/r-1/progress#peer"
    assert progress.sent("DELETE", "/peer") == [None]


def test_the_one_who_sees_may_stop_seeing(browser, progress) -> None:
    page = shown(browser)
    assert "/peer/stop-seeing" not in page  # nobody shares with them: nothing to stop
    progress.shared = [{"milestones": [{"id": "m", "title": {"en": "A step"}}]}]
    page = shown(browser)
    assert "Stop seeing what they share" in page
    done = browser.post("/my/r-1/progress/peer/stop-seeing", data={"csrf": csrf_of(page)})
    assert done.headers["location"] == "/my/r-1/progress#shared-with-me"
    assert progress.sent("DELETE", "/shared-with-me") == [None]


def test_what_members_share_is_shown_without_naming_them(browser, progress) -> None:
    progress.shared = [
        {
            "scores": [
                {
                    "questionnaire_id": "week",
                    "at": "2031-03-11T12:00:00+00:00",
                    "score": 4,
                    "band": {"en": "Some strain"},
                }
            ],
            "homework_done": [1],
            "milestones": [{"id": "told-someone", "title": {"en": "Told someone I trust"}}],
        },
        {},
    ]
    page = shown(browser)
    section = page[page.index('id="shared-with-me"') :]
    assert "<td>This week</td><td>4</td><td>Some strain</td>" in section
    assert "Homework done after sessions: 1" in section and "Told someone I trust" in section
    assert "They share nothing just now." in section


# --- feedback ----------------------------------------------------------------------------


def test_feedback_is_asked_for_sessions_that_took_place(browser, apis, progress) -> None:
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "sessions": PAST})
    progress.space["feedback_given"] = [1]
    page = shown(browser)
    assert "only once at least 3 people have answered" in page
    assert "/progress/feedback/2" in page and "/progress/feedback/1" not in page
    assert "/progress/feedback/3" not in page  # not yet held
    incomplete = browser.post(
        "/my/r-1/progress/feedback/2", data={"csrf": csrf_of(page), "helpful": "4"}
    )
    assert incomplete.status_code == 422 and 'id="safe-error"' in incomplete.text
    assert re.search(r'id="feedback-2-helpful-4"[^>]*checked', incomplete.text)
    apis.answer("POST", f"{BASE}/feedback/2", {"status": "thank you"}, status=201)
    form = {"csrf": csrf_of(page), "helpful": "4", "safe": "5", "comment": " Kind group "}
    done = browser.post("/my/r-1/progress/feedback/2", data=form)
    assert done.headers["location"] == "/my/r-1/progress#feedback-2"
    assert progress.sent("POST", "/feedback/2") == [
        {"helpful": 4, "safe": 5, "comment": "Kind group"}
    ]


def test_feedback_given_already_is_said_as_a_message(browser, apis, progress) -> None:
    apis.answer("GET", "/cohorts/c-1", {**GROUP, "sessions": PAST})
    page = shown(browser)
    progress.refuse("POST", "/feedback/2", 409, "you already gave feedback", "session")
    form = {"csrf": csrf_of(page), "helpful": "2", "safe": "3"}
    refused = browser.post("/my/r-1/progress/feedback/2", data=form)
    assert refused.status_code == 409
    assert 'role="alert"' in refused.text
    assert "You already gave your feedback on this session" in refused.text


# --- the data export, the words -------------------------------------------------------------


def test_the_export_includes_what_progress_holds(browser, apis) -> None:
    opened(browser, apis)
    apis.route(
        "GET",
        "/registrations/r-1/export",
        lambda request: httpx.Response(200, json={"port": request.url.port}),
    )
    got = json.loads(browser.get("/my/r-1/export").text)
    assert got["progress"] == {"port": 8005}


def test_the_words_the_pages_build_are_in_both_languages() -> None:
    built = [f"progress.share_{k}" for k in between.SHAREABLE]
    built += [f"progress.scale_{n}" for n in between.FEEDBACK_SCALE]
    built += [f"console.feedback_{q}" for q in ("helpful", "safe")]
    for status, fields in (
        (409, ["registration_id", "session", "questionnaire_id"]),
        (404, ["code"]),
    ):
        beside, above = refusal_keys(status, dict.fromkeys(fields, ""))
        built += [*beside.values(), *above]
    for lang in ("en", "zh"):
        assert sorted(k for k in built if k not in catalog(lang)) == []


def test_every_part_of_an_erasure_has_words() -> None:
    for lang in ("en", "zh"):
        assert {f"erase.part.{s}" for s in ("registration", *ERASING_SERVICES)} <= set(
            catalog(lang)
        )


def test_a_programs_words_fall_back_to_the_other_language() -> None:
    assert between.words({"en": "Week"}, "zh") == "Week"
    assert between.words({"en": "Week", "zh": "这一周"}, "zh") == "这一周"
    assert between.words(None, "en") == ""


def test_the_chart_puts_higher_scores_higher_and_marks_the_bands() -> None:
    chart = line_chart([("4 Mar", 3), ("11 Mar", 6), ("18 Mar", 0)], [3, 6, 9])
    low, high, zero = chart.points
    assert high.y < low.y < zero.y == chart.bottom
    assert low.x < high.x < zero.x
    assert [line.value for line in chart.lines] == [3, 6, 9]
    assert chart.polyline.count(",") == 3
    single = line_chart([("4 Mar", 5)], [3, 6, 9])
    assert len(single.points) == 1
    assert line_chart([], [3]) is None
    assert PLAN["questionnaires"][0]["bands"][-1]["up_to"] == 9
