"""Paying by transfer through the pages: the applicant's payment page and "I have paid",
and the console's maker-checker (one coordinator marks, another approves)."""

from __future__ import annotations

from shared.security import Role, verify_token
from shared.settings import DEV_JWT_SECRET
from tests.web.conftest import PASSWORD, csrf_of
from tests.web.fake_apis import FakeApis, problem

EN = {"Accept-Language": "en"}
REG = {"registration_id": "r-1", "cohort_id": "c-1", "status": "awaiting_payment"}
PAY = {
    "registration_id": "r-1",
    "payment_id": "p-1",
    "status": "requested",
    "amount_due_minor": 90000,
    "currency": "CNY",
    "reference": "HS-7KQ2-M4",
    "expires_at": "2031-02-01T10:00:00Z",
    "said_paid_at": None,
}


def opened(browser, apis: FakeApis) -> None:
    apis.answer("GET", "/registrations/r-1", REG)
    apis.answer("GET", "/registrations/r-1/payment", PAY)
    browser.get("/my/r-1?t=tok")


def test_the_payment_page_shows_amount_and_reference_to_the_registrations_holder(
    browser, apis
) -> None:
    opened(browser, apis)
    mine = browser.get("/my/r-1", headers=EN)
    assert 'href="/my/r-1/payment"' in mine.text
    page = browser.get("/my/r-1/payment", headers=EN)
    assert page.status_code == 200
    assert "¥900.00" in page.text and "HS-7KQ2-M4" in page.text
    (asked,) = [c for c in apis.calls if c.url.path == "/registrations/r-1/payment"]
    principal = verify_token(DEV_JWT_SECRET, asked.headers["Authorization"][7:])
    assert principal.role == Role.pages and principal.subject == "applicant:r-1"


def test_no_payment_page_without_the_registrations_link(browser, apis) -> None:
    apis.answer("GET", "/registrations/r-1/payment", PAY)
    assert browser.get("/my/r-1/payment").status_code == 403
    assert not [c for c in apis.calls if c.url.path == "/registrations/r-1/payment"]


def test_a_token_registration_refuses_shows_no_payment(browser, apis) -> None:
    apis.route("GET", "/registrations/r-1", lambda r: problem(404, "no such registration"))
    browser.get("/my/r-1?t=forged")
    assert browser.get("/my/r-1/payment").status_code == 403
    assert not [c for c in apis.calls if c.url.path == "/registrations/r-1/payment"]


def test_i_have_paid_is_sent_once_and_thanked(browser, apis) -> None:
    opened(browser, apis)
    page = browser.get("/my/r-1/payment", headers=EN)
    apis.answer(
        "POST",
        "/registrations/r-1/payment/said-paid",
        {**PAY, "said_paid_at": "2031-01-10T10:00:00Z"},
    )
    done = browser.post("/my/r-1/payment/said-paid", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and len(apis.posted("/registrations/r-1/payment/said-paid")) == 1
    apis.answer(
        "GET", "/registrations/r-1/payment", {**PAY, "said_paid_at": "2031-01-10T10:00:00Z"}
    )
    again = browser.get("/my/r-1/payment", headers=EN)
    assert "we look for your transfer" in again.text and "I have paid" not in again.text


def sign_in(browser, email: str) -> None:
    page = browser.get("/console/sign-in")
    browser.post(
        "/console/sign-in", data={"csrf": csrf_of(page.text), "email": email, "password": PASSWORD}
    )


def test_marking_a_transfer_received_sends_what_was_asked_for_with_a_key(browser, apis) -> None:
    case = {
        "payment_id": "p-1",
        "reference": "HS-7KQ2-M4",
        "amount_due": 90000,
        "currency": "CNY",
        "said_paid_at": "2031-01-10T10:00:00Z",
        "manual": [],
        "status": "requested",
    }
    apis.answer("GET", "/payments", [case])
    apis.answer("GET", "/manual-confirmations", [])
    apis.answer("GET", "/payments/p-1", case)
    apis.answer("POST", "/manual-confirmations", {"status": "pending"}, status=201)
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN)
    assert "says they paid" in page.text and "HS-7KQ2-M4" in page.text
    form_token = page.text.split('name="form_token" value="')[1].split('"')[0]
    done = browser.post(
        "/console/payments/p-1/received",
        data={"csrf": csrf_of(page.text), "form_token": form_token, "evidence": "ICBC statement"},
    )
    assert done.status_code == 303
    (sent,) = apis.posted("/manual-confirmations")
    assert FakeApis.body(sent) == {
        "reference": "HS-7KQ2-M4",
        "amount_minor": 90000,
        "currency": "CNY",
        "evidence": "ICBC statement",
    }
    assert sent.headers["Idempotency-Key"] == form_token


def test_a_coordinator_approves_only_another_coordinators_mark(browser, apis) -> None:
    mark = {
        "confirmation_id": "m-1",
        "status": "pending",
        "reference": "HS-1",
        "amount_minor": 90000,
        "currency": "CNY",
        "marked_by": "ana@example.org",
        "evidence": None,
    }
    case = {"payment_id": "p-1", "reference": "HS-1", "manual": [mark]}
    apis.answer("GET", "/payments", [])
    apis.answer("GET", "/manual-confirmations", [case])
    sign_in(browser, "ana@example.org")
    own = browser.get("/console/payments", headers=EN)
    assert "/console/confirmations/m-1/approve" not in own.text
    assert "waiting for another coordinator" in own.text
