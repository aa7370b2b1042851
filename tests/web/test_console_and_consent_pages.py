"""The coordinators' console and the consent page over in-memory APIs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shared.security import Role, verify_token
from shared.settings import DEV_JWT_SECRET
from tests.web.conftest import ANA, PASSWORD, csrf_of
from tests.web.fake_apis import FakeApis

EN = {"Accept-Language": "en"}


def reg(rid: str, status: str, flagged: bool = False) -> dict:
    return {
        "registration_id": rid,
        "status": status,
        "flagged_for_safety": flagged,
        "submitted_at": "2031-01-05T10:00:00Z",
        "language": "zh",
        "name": f"name-{rid}",
        "email": f"{rid}@example.org",
        "safety_answers": {"harm": flagged},
        "scholarship_requested": False,
    }


def signed_in(browser, email: str = "ana@example.org", password: str = PASSWORD):
    page = browser.get("/console/sign-in", headers=EN)
    return browser.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": password, "next": "/console"},
        headers=EN,
    )


def test_the_console_asks_to_sign_in_first(browser) -> None:
    answer = browser.get("/console")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console"


def test_a_wrong_password_or_unknown_email_gets_the_same_answer(browser) -> None:
    wrong = signed_in(browser, password="not the password")
    unknown = signed_in(browser, email="who@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert "The email or the password is not right." in wrong.text
    assert browser.get("/console").status_code == 303


def test_password_guessing_is_slowed_and_a_limited_attempt_checks_no_password(
    browser,
) -> None:
    answers = [signed_in(browser, password=f"guess number {n}") for n in range(10)]
    assert {a.status_code for a in answers} == {401}
    limited = signed_in(browser)  # the right password, but past the limit
    assert limited.status_code == 429 and 0 < int(limited.headers["Retry-After"]) <= 60
    assert "Too many sign-in attempts just now" in limited.text
    assert browser.get("/console").status_code == 303, "not signed in"
    # Another account from another client is not held up by it.
    other = TestClient(browser.app, base_url="http://127.0.0.1:8000", client=("10.0.0.9", 1))
    assert signed_in(other, email="bo@example.org", password="wrong").status_code == 401


def test_safety_flags_come_first_and_approving_calls_as_the_coordinator(
    browser, apis: FakeApis
) -> None:
    apis.answer(
        "GET",
        "/cohorts/c-1/registrations",
        [reg("r-1", "pending_review"), reg("r-2", "pending_review", flagged=True)],
    )
    assert signed_in(browser).status_code == 303
    page = browser.get("/console", headers=EN)
    assert page.status_code == 200
    text = page.text
    assert text.index("name-r-2") < text.index("Waiting for review") < text.index("name-r-1")
    (listed,) = [c for c in apis.calls if c.url.path == "/cohorts/c-1/registrations"]
    principal = verify_token(DEV_JWT_SECRET, listed.headers["Authorization"][7:])
    assert principal.subject == ANA and principal.role == Role.coordinator
    apis.answer(
        "POST", "/registrations/r-1/approve", {"registration_id": "r-1", "status": "approved"}
    )
    why = "answers fit the group; talked on the phone"
    done = browser.post(
        "/console/registrations/r-1/approve", data={"csrf": csrf_of(text), "reason": why}
    )
    assert done.status_code == 303
    (approved,) = apis.posted("/registrations/r-1/approve")
    assert FakeApis.body(approved) == {"reason": why}  # kept with who decided
    assert 'for="why-r-1"' in text and 'id="why-r-1"' in text  # the box has its label


def test_a_deactivated_coordinator_is_signed_out_at_the_next_page(browser, accounts) -> None:
    signed_in(browser)
    accounts.collection.docs["ana@example.org"]["active"] = False
    assert browser.get("/console").status_code == 303


def test_signing_out_ends_the_session(browser, apis) -> None:
    apis.answer("GET", "/cohorts/c-1/registrations", [])
    signed_in(browser)
    page = browser.get("/console")
    browser.post("/console/sign-out", data={"csrf": csrf_of(page.text)})
    assert browser.get("/console").status_code == 303


FORM = {
    "consent_id": "k-1",
    "status": "open",
    "expires_at": "2031-02-01T00:00:00Z",
    "reconsent": False,
    "available_languages": ["en", "zh"],
    "form": {
        "form_id": "f-1",
        "version": 2,
        "language": "en",
        "title": "Group agreement",
        "body_markdown": "We keep **confidence**.\n\n<script>alert(1)</script>",
        "clauses": [
            {"id": "confidential", "text": "I keep what I hear here private."},
            {"id": "not_therapy", "text": "This is not therapy."},
        ],
        "text_sha256": "a" * 64,
        "canonical_text": "x",
        "published_at": "2031-01-01T00:00:00Z",
    },
}


def test_the_signing_link_opens_the_form_to_read_and_sign(browser, apis) -> None:
    apis.answer("GET", "/consents/tok", FORM)
    page = browser.get("/consents/tok", headers=EN)
    assert page.status_code == 200
    assert "<strong>confidence</strong>" in page.text
    assert "<script>alert(1)</script>" not in page.text  # a form's text cannot inject markup
    assert 'id="clause-confidential"' in page.text and 'for="clause-not_therapy"' in page.text


def test_signing_needs_every_clause_and_sends_the_hash_of_what_was_shown(browser, apis) -> None:
    apis.answer("GET", "/consents/tok", FORM)
    page = browser.get("/consents/tok", headers=EN).text
    partial = {
        "csrf": csrf_of(page),
        "text_sha256": "a" * 64,
        "typed_name": "Lin",
        "agree": "yes",
        "clause-confidential": "yes",
    }
    refused = browser.post("/consents/tok/sign", data=partial, headers=EN)
    assert refused.status_code == 422 and "Please tick this statement to sign." in refused.text
    assert apis.posted("/consents/tok/sign") == []
    apis.answer(
        "POST",
        "/consents/tok/sign",
        {
            "consent_id": "k-1",
            "status": "signed",
            "signature_id": "s-1",
            "form_id": "f-1",
            "form_version": 2,
            "text_sha256": "a" * 64,
            "signed_at": "2031-01-06T10:00:00Z",
            "withdrawal_token": "w",
        },
    )
    signed = browser.post(
        "/consents/tok/sign", data={**partial, "clause-not_therapy": "yes"}, headers=EN
    )
    assert signed.status_code == 200 and "Consent receipt" in signed.text and "s-1" in signed.text
    body = FakeApis.body(apis.posted("/consents/tok/sign")[0])
    assert body == {
        "text_sha256": "a" * 64,
        "typed_name": "Lin",
        "acknowledged_clauses": ["confidential", "not_therapy"],
        "agree_to_sign_electronically": True,
    }


def test_an_expired_signing_link_says_so(browser, apis) -> None:
    from tests.web.fake_apis import problem

    apis.route("GET", "/consents/old", lambda r: problem(410, "expired"))
    page = browser.get("/consents/old", headers=EN)
    assert page.status_code == 410 and "has expired or was replaced" in page.text


def test_what_an_applicant_typed_is_shown_as_text_never_as_markup(browser, apis) -> None:
    hostile = {
        **reg("r-3", "pending_review"),
        "name": "<script>alert('x')</script>",
        "email": "a@b.c",
    }
    apis.answer("GET", "/cohorts/c-1/registrations", [hostile])
    signed_in(browser)
    page = browser.get("/console", headers=EN)
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text


def test_a_registration_page_shows_its_history_from_both_services(browser, apis) -> None:
    record = {
        **reg("r-9", "confirmed"),
        "cohort_id": "c-1",
        "history": [
            {
                "at": "2031-01-05T10:00:00Z",
                "cause": "signed_up",
                "status": "pending_review",
                "by": "applicant",
            },
            {
                "at": "2031-01-06T02:00:00Z",
                "cause": "approve",
                "status": "awaiting_consent",
                "by": "ana@example.org",
                "why": "talked <b>on the phone</b>",
            },
            {
                "at": "2031-01-08T02:00:00Z",
                "cause": "payment_settled",
                "status": "confirmed",
                "by": None,
            },
        ],
    }
    case = {
        "registration_id": "r-9",
        "status": "confirmed",
        "reference": "HS-7Q2M",
        "requested_at": "2031-01-07T02:00:00Z",
        "manual": [
            {
                "confirmation_id": "m-1",
                "status": "approved",
                "marked_by": "bo@example.org",
                "marked_at": "2031-01-07T09:00:00Z",
                "decided_by": "ana@example.org",
                "decided_at": "2031-01-08T01:59:00Z",
            }
        ],
        "confirmed": {"method": "manual", "at": "2031-01-08T01:59:00Z"},
    }
    apis.answer("GET", "/registrations/r-9/record", record)
    apis.answer("GET", "/registrations/r-9/payment/record", case)
    signed_in(browser)
    page = browser.get("/console/registrations/r-9", headers=EN)
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0]
    order = [
        "Signed up",
        "Approved",
        "Payment requested",
        "Transfer marked as received",
        "Transfer approved: paid",
        "Payment settled",
    ]
    assert [rows.index(w) for w in order] == sorted(rows.index(w) for w in order)
    assert "bo@example.org" in rows and "The applicant" in rows and "Holdspace" in rows
    assert "Payment confirmed by the provider" not in rows  # the approval says it already
    assert "Payment: paid (reference HS-7Q2M)." in page.text
    assert "5 Jan 2031, 18:00" in rows  # the group's time zone (Asia/Shanghai)
    # Statuses in a coordinator's words, not the applicant's ("your consent").
    assert "Approved → Approved: their consent to sign" in rows and "your" not in rows
    # Why, in the coordinator's words, beside the step (text, never markup).
    assert '<q class="why">talked &lt;b&gt;on the phone&lt;/b&gt;</q>' in rows
    calls = [c.url.path for c in apis.calls]
    assert "/registrations/r-9/record" in calls and "/cohorts/c-1" in calls


def test_a_registration_with_no_payment_yet_still_shows_its_history(browser, apis) -> None:
    record = {
        **reg("r-8", "pending_review"),
        "cohort_id": "c-1",
        "history": [
            {
                "at": "2031-01-05T10:00:00Z",
                "cause": "a_future_step",
                "status": "pending_review",
                "by": None,
            }
        ],
    }
    apis.answer("GET", "/registrations/r-8/record", record)
    signed_in(browser)
    page = browser.get("/console/registrations/r-8", headers=EN)
    assert page.status_code == 200
    assert "Status changed" in page.text and "Payment:" not in page.text
    assert browser.get("/console/registrations/r-8;drop", headers=EN).status_code in (404, 422)


def test_an_unknown_registration_is_not_found(browser, apis) -> None:
    signed_in(browser)
    assert browser.get("/console/registrations/nope", headers=EN).status_code == 404


def test_the_review_card_shows_each_safety_question_in_words(browser, apis: FakeApis) -> None:
    apis.answer(
        "GET",
        "/cohorts/c-1/registrations",
        [reg("r-1", "pending_review"), reg("r-2", "pending_review", flagged=True)],
    )
    signed_in(browser)
    en = browser.get("/console", headers=EN).text
    assert "Are you thinking of harming yourself? <strong>Yes</strong>" in en
    assert "Are you thinking of harming yourself? <strong>No</strong>" in en
    assert "harm:" not in en
    zh = browser.get("/console", headers={"Accept-Language": "zh-CN"}).text
    assert "您是否有伤害自己的想法？ <strong>是</strong>" in zh


def test_the_roster_and_waitlist_show_questions_in_words_and_the_groups_name(
    browser, apis: FakeApis
) -> None:
    apis.answer(
        "GET",
        "/cohorts/c-1/roster",
        {"seats": [reg("r-1", "confirmed")], "seats_taken": 1, "capacity": 8},
    )
    apis.answer("GET", "/cohorts/c-1/waitlist", {"waitlist": [reg("r-2", "waitlisted")]})
    signed_in(browser)
    page = browser.get("/console/groups/c-1", headers=EN).text
    assert page.count("Are you thinking of harming yourself? <strong>No</strong>") == 2
    assert page.count("Recovery circle · Confirmed: has a place") == 1
    assert "Recovery circle · On the waitlist" in page


def test_a_flag_is_acknowledged_from_the_console_and_then_shows_who_has_it(
    browser, apis: FakeApis
) -> None:
    apis.answer("GET", "/cohorts/c-1/registrations", [reg("r-2", "pending_review", flagged=True)])
    waiting = {
        "registration_id": "r-2",
        "cohort_id": "c-1",
        "raised_at": "2031-01-05T10:00:00Z",
        "escalations": 0,
        "next_escalation_at": "2031-01-05T10:30:00Z",
        "acknowledged": None,
    }
    apis.answer("GET", "/safety-alerts/r-2", waiting)
    signed_in(browser)
    page = browser.get("/console", headers=EN).text
    assert "I am handling this" in page
    assert "sent again to every coordinator at Sun 5 Jan 2031, 18:30" in page
    handled = {**waiting, "acknowledged": {"by": ANA, "at": "2031-01-05T10:05:00Z"}}
    apis.answer("POST", "/safety-alerts/r-2/acknowledge", handled)
    done = browser.post("/console/safety-alerts/r-2/acknowledge", data={"csrf": csrf_of(page)})
    assert done.status_code == 303 and done.headers["location"] == "/console#flags"
    (sent,) = apis.posted("/safety-alerts/r-2/acknowledge")
    principal = verify_token(DEV_JWT_SECRET, sent.headers["Authorization"][7:])
    assert principal.subject == ANA and principal.role == Role.coordinator
    apis.answer("GET", "/safety-alerts/r-2", handled)
    page = browser.get("/console", headers=EN).text
    assert "Ana is handling this" in page and "I am handling this" not in page


def test_a_coordinator_erases_an_applicants_data_only_saying_they_asked(browser, apis) -> None:
    record = {**reg("r-5", "waitlisted"), "cohort_id": "c-1", "history": [], "erasure": None}
    apis.answer("GET", "/registrations/r-5/record", record)
    apis.answer("POST", "/registrations/r-5/erase", {"complete": False}, status=202)
    signed_in(browser)
    page = browser.get("/console/registrations/r-5", headers=EN).text
    assert "Erase this person&#39;s data" in page or "Erase this person's data" in page
    token = csrf_of(page)
    unsure = browser.post("/console/registrations/r-5/erase", data={"csrf": token})
    assert unsure.status_code == 422 and apis.posted("/registrations/r-5/erase") == []
    done = browser.post(
        "/console/registrations/r-5/erase",
        data={"csrf": token, "asked": "yes", "back": "/console/registrations/r-5"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/registrations/r-5"
    (sent,) = apis.posted("/registrations/r-5/erase")
    claims = verify_token(DEV_JWT_SECRET, sent.headers["Authorization"][7:])
    assert claims.role is Role.coordinator
