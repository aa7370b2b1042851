"""Paying by transfer through the pages: the applicant's payment page and "I have paid",
and the console's maker-checker (one coordinator marks, another approves)."""

from __future__ import annotations

import re

import httpx

from shared.security import Role, verify_token
from shared.settings import DEV_JWT_SECRET
from tests.web.conftest import ANA, PASSWORD, csrf_of
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


def nothing_else(apis: FakeApis) -> None:
    for path in ("/payments", "/manual-confirmations", "/scholarships", "/refunds"):
        apis.answer("GET", path, [])


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
    nothing_else(apis)
    apis.answer("GET", "/payments", [case])
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
        "marked_by": ANA,
        "evidence": None,
    }
    case = {"payment_id": "p-1", "reference": "HS-1", "manual": [mark]}
    nothing_else(apis)
    apis.answer("GET", "/manual-confirmations", [case])
    sign_in(browser, "ana@example.org")
    own = browser.get("/console/payments", headers=EN)
    assert "/console/confirmations/m-1/approve" not in own.text
    assert "waiting for another coordinator" in own.text


def test_a_scholarship_is_granted_in_the_currency_coordinators_write(browser, apis) -> None:
    nothing_else(apis)
    apis.answer(
        "GET",
        "/scholarships",
        [{"registration_id": "r-7", "price_minor": 90000, "currency": "CNY"}],
    )
    apis.answer("POST", "/scholarships/r-7/grant", {"status": "granted"})
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN)
    assert "Price ¥900.00" in page.text
    wrong = browser.post(
        "/console/scholarships/r-7/grant",
        data={"csrf": csrf_of(page.text), "amount_due": "three hundred"},
    )
    assert wrong.headers["location"] == "/console/payments?error=amount_due"
    assert apis.posted("/scholarships/r-7/grant") == []
    assert "must be a number like 300" in browser.get(wrong.headers["location"], headers=EN).text
    browser.post(
        "/console/scholarships/r-7/grant", data={"csrf": csrf_of(page.text), "amount_due": "300.5"}
    )
    (sent,) = apis.posted("/scholarships/r-7/grant")
    assert FakeApis.body(sent) == {"amount_due_minor": 30050}


def test_a_refund_the_policy_calls_for_is_recorded_as_made(browser, apis) -> None:
    nothing_else(apis)
    apis.answer(
        "GET",
        "/refunds",
        [
            {
                "payment_id": "p-9",
                "reference": "HS-9",
                "refund": {"amount_minor": 90000, "currency": "CNY", "policy": "refundable"},
            },
            {
                "payment_id": "p-8",
                "reference": "HS-8",
                "refund": {
                    "amount_minor": 90000,
                    "currency": "CNY",
                    "policy": "registration_closed",
                },
            },
        ],
    )
    apis.answer("POST", "/payments/p-9/refund-made", {"status": "made"})
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN)
    assert "Refunds to make" in page.text and "HS-9" in page.text
    # Each says why the money goes back.
    assert "Withdrew after paying" in page.text
    assert "arrived after the registration had ended" in page.text
    browser.post("/console/payments/p-9/refund-made", data={"csrf": csrf_of(page.text)})
    assert len(apis.posted("/payments/p-9/refund-made")) == 1


def test_amounts_as_coordinators_write_them() -> None:
    from web.forms import minor_units

    assert minor_units("300") == 30000 and minor_units("300.5") == 30050
    assert minor_units("1,200.05") == 120005 and minor_units("0") == 0
    for bad in ("", "-1", "3.005", "abc", "1.2.3", "1e3"):
        assert minor_units(bad) is None, bad


def test_the_payments_page_is_titled_in_words_and_each_section_shows_once(browser, apis) -> None:
    nothing_else(apis)
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN).text
    assert re.search(r"<title>Payments · Holdspace</title>", page)
    for section in ("approve", "waiting", "scholarships", "refunds"):
        assert page.count(f'id="{section}"') == 1, section


def group_page_answers(apis: FakeApis) -> None:
    apis.answer("GET", "/cohorts/c-1/roster", {"seats": [], "seats_taken": 0, "capacity": 8})
    apis.answer("GET", "/cohorts/c-1/waitlist", {"waitlist": []})


def test_a_groups_scholarship_budget_is_set_from_its_page(browser, apis) -> None:
    group_page_answers(apis)
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/groups/c-1", headers=EN)
    assert page.status_code == 200 and "No scholarship budget yet" in page.text
    wrong = browser.post(
        "/console/groups/c-1/scholarship-budget",
        data={"csrf": csrf_of(page.text), "amount": "-5", "currency": "CNY"},
    )
    assert wrong.headers["location"] == "/console/groups/c-1?error=budget_amount#budget"
    assert "must be a number like 3000" in browser.get(wrong.headers["location"], headers=EN).text
    budget = {
        "cohort_id": "c-1",
        "amount_minor": 300000,
        "currency": "CNY",
        "granted_minor": 60000,
        "remaining_minor": 240000,
        "grants": 1,
    }
    apis.answer("PUT", "/cohorts/c-1/scholarship-budget", budget)
    done = browser.post(
        "/console/groups/c-1/scholarship-budget",
        data={"csrf": csrf_of(page.text), "amount": "3000", "currency": "CNY"},
    )
    assert done.headers["location"] == "/console/groups/c-1#budget"
    (put,) = [c for c in apis.calls if c.method == "PUT"]
    assert FakeApis.body(put) == {"amount_minor": 300000, "currency": "CNY", "program_id": "p-1"}
    apis.answer("GET", "/cohorts/c-1/scholarship-budget", budget)
    shown = browser.get("/console/groups/c-1", headers=EN).text
    assert "¥3,000.00 in all: ¥600.00 granted to 1, ¥2,400.00 left." in shown
    assert 'value="3000.00"' in shown


def test_a_budget_below_what_is_granted_is_refused_with_the_reason(browser, apis) -> None:
    group_page_answers(apis)
    apis.route(
        "PUT",
        "/cohorts/c-1/scholarship-budget",
        lambda _r: problem(409, "60000 is already granted from it", "amount_minor"),
    )
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/groups/c-1", headers=EN)
    refused = browser.post(
        "/console/groups/c-1/scholarship-budget",
        data={"csrf": csrf_of(page.text), "amount": "100", "currency": "CNY"},
        headers=EN,
    )
    assert refused.status_code == 409 and "already granted" in refused.text


def test_a_scholarship_request_links_to_its_record_and_its_groups_budget(browser, apis) -> None:
    nothing_else(apis)
    apis.answer(
        "GET",
        "/scholarships",
        [{"registration_id": "r-7", "cohort_id": "c-1", "price_minor": 90000, "currency": "CNY"}],
    )
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN).text
    assert 'href="/console/registrations/r-7"' in page
    assert 'href="/console/groups/c-1#budget"' in page


def test_a_coordinator_sets_how_participants_join_and_a_bad_link_is_named(browser, apis) -> None:
    group_page_answers(apis)
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/groups/c-1", headers=EN)
    assert "Not set yet" in page.text
    assert 'href="/console/groups/c-1/joining"' in page.text
    form = browser.get("/console/groups/c-1/joining", headers=EN)
    assert form.status_code == 200 and 'name="platform"' in form.text

    typed = {"csrf": csrf_of(form.text), "platform": "", "meeting_id": "123 456 789"}
    missing = browser.post("/console/groups/c-1/joining", data=typed, headers=EN)
    assert missing.status_code == 422 and 'id="platform-error"' in missing.text
    assert 'value="123 456 789"' in missing.text  # nothing typed is lost
    assert not [c for c in apis.calls if c.method == "PUT"]

    apis.route(
        "PUT",
        "/cohorts/c-1/joining",
        lambda _r: problem(422, "a meeting link starts with https://", "url"),
    )
    typed.update(platform="VooV", url="http://voov.example/x")
    refused = browser.post("/console/groups/c-1/joining", data=typed, headers=EN)
    assert refused.status_code == 422 and 'id="url-error"' in refused.text
    assert 'aria-describedby="url-hint url-error"' in refused.text
    assert 'value="http://voov.example/x"' in refused.text

    sent = {"platform": "VooV", "url": "https://voov.example/x", "meeting_id": "123 456 789"}
    apis.answer("PUT", "/cohorts/c-1/joining", sent)
    typed.update(url="https://voov.example/x", passcode="  ", notes="")
    done = browser.post("/console/groups/c-1/joining", data=typed)
    assert done.status_code == 303 and done.headers["location"] == "/console/groups/c-1#joining"
    put = [c for c in apis.calls if c.method == "PUT"][-1]
    assert FakeApis.body(put) == sent  # empty fields are not sent: they are no longer shown

    apis.answer("GET", "/cohorts/c-1/joining", sent)
    shown = browser.get("/console/groups/c-1", headers=EN).text
    assert "VooV" in shown and "https://voov.example/x" in shown
    assert 'value="VooV"' in browser.get("/console/groups/c-1/joining", headers=EN).text


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_the_payment_page_shows_the_programs_own_words_and_qr_code(browser, apis) -> None:
    opened(browser, apis)
    apis.answer(
        "GET",
        "/programs/p-1/payment-instructions",
        {"zh": "请用微信支付给“心灵空间”。", "qr": True},
    )
    apis.route(
        "GET",
        "/programs/p-1/payment-qr",
        lambda _r: httpx.Response(200, content=PNG, headers={"content-type": "image/png"}),
    )
    zh = browser.get("/my/r-1/payment", headers={"Accept-Language": "zh-CN"}).text
    assert "请用微信支付给“心灵空间”。" in zh and "请在付款备注中填写付款编号" not in zh
    assert '<img src="/programs/p-1/payment-qr" alt="本机构的收款二维码"' in zh
    # Only Chinese words were written: an English reader is shown them rather than nothing.
    assert "请用微信支付给“心灵空间”。" in browser.get("/my/r-1/payment", headers=EN).text
    image = browser.get("/programs/p-1/payment-qr")
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert browser.get("/programs/p-1;x/payment-qr").status_code in (404, 422)


def test_without_the_programs_words_the_payment_page_says_how_to_pay_in_general(
    browser, apis
) -> None:
    opened(browser, apis)
    page = browser.get("/my/r-1/payment", headers=EN).text
    assert "WeChat Pay or Alipay: write the reference" in page and "<img" not in page


def program_answers(apis: FakeApis, qr: bool = False) -> None:
    apis.answer("GET", "/programs/p-1", {"program_id": "p-1", "title": "Recovery circle"})
    apis.answer("GET", "/programs/p-1/payment-instructions", {"en": "Old words", "qr": qr})
    apis.answer("PUT", "/programs/p-1/payment-instructions", {})
    apis.answer("PUT", "/programs/p-1/payment-qr", None, status=204)
    apis.answer("DELETE", "/programs/p-1/payment-qr", None, status=204)


def test_a_coordinator_sets_how_to_pay_with_a_qr_code_and_can_take_it_away(browser, apis) -> None:
    program_answers(apis)
    sign_in(browser, "ana@example.org")
    form = browser.get("/console/programs/p-1/payment", headers=EN)
    assert form.status_code == 200 and ">Old words</textarea>" in form.text
    posted = browser.post(
        "/console/programs/p-1/payment",
        data={"csrf": csrf_of(form.text), "zh": " 微信支付 ", "en": ""},
        files={"qr": ("qr.png", PNG, "image/png")},
    )
    assert posted.status_code == 303 and posted.headers["location"] == "/console/programs"
    (words,) = [
        c for c in apis.calls if c.url.path.endswith("/payment-instructions") and c.method == "PUT"
    ]
    assert FakeApis.body(words) == {"zh": "微信支付"}
    (image,) = [c for c in apis.calls if c.url.path.endswith("/payment-qr") and c.method == "PUT"]
    assert image.content == PNG and image.headers["content-type"] == "image/png"

    program_answers(apis, qr=True)
    form = browser.get("/console/programs/p-1/payment", headers=EN)
    assert 'src="/programs/p-1/payment-qr"' in form.text and 'name="remove_qr"' in form.text
    browser.post(
        "/console/programs/p-1/payment",
        data={"csrf": csrf_of(form.text), "zh": "微信支付", "remove_qr": "yes"},
    )
    assert [c.method for c in apis.calls if c.url.path.endswith("/payment-qr")] == [
        "PUT",
        "DELETE",
    ]


def test_a_qr_code_that_is_too_large_or_not_an_image_is_named_and_nothing_typed_is_lost(
    browser, apis
) -> None:
    program_answers(apis)
    sign_in(browser, "ana@example.org")
    form = browser.get("/console/programs/p-1/payment", headers=EN)
    typed = {"csrf": csrf_of(form.text), "zh": "微信支付", "en": "WeChat Pay"}
    big = browser.post(
        "/console/programs/p-1/payment",
        data=typed,
        files={"qr": ("qr.png", PNG * 10000, "image/png")},
        headers=EN,
    )
    assert big.status_code == 413 and 'id="qr-error"' in big.text
    assert ">微信支付</textarea>" in big.text
    assert not [c for c in apis.calls if c.method == "PUT"]  # nothing half-written

    apis.route(
        "PUT",
        "/programs/p-1/payment-qr",
        lambda _r: problem(422, "the image must be a PNG or a JPEG", "qr"),
    )
    wrong = browser.post(
        "/console/programs/p-1/payment",
        data=typed,
        files={"qr": ("qr.gif", b"GIF89a", "image/gif")},
        headers=EN,
    )
    assert wrong.status_code == 422 and 'id="qr-error"' in wrong.text
    assert "PNG or a JPEG" in wrong.text and ">WeChat Pay</textarea>" in wrong.text
    # The image refused, the words were not written either: nothing half-written.
    assert not [
        c for c in apis.calls if c.url.path.endswith("/payment-instructions") and c.method == "PUT"
    ]
    long = browser.post(
        "/console/programs/p-1/payment", data={**typed, "zh": "字" * 2001}, headers=EN
    )
    assert long.status_code == 422 and 'id="zh-error"' in long.text
    assert [c.method for c in apis.calls if c.method in ("PUT", "DELETE")] == ["PUT"]


def test_the_payment_page_tells_the_scholarship_decision(browser, apis) -> None:
    opened(browser, apis)
    for decision, says in (
        ("granted", "Your scholarship request was granted"),
        ("declined", "could not be granted this time"),
    ):
        apis.answer(
            "GET",
            "/registrations/r-1/payment",
            {**PAY, "amount_due_minor": 30000, "scholarship_status": decision},
        )
        page = browser.get("/my/r-1/payment", headers=EN).text
        assert says in page and "¥300.00" in page, decision
    apis.answer("GET", "/registrations/r-1/payment", PAY)
    assert "scholarship" not in browser.get("/my/r-1/payment", headers=EN).text.lower()


def test_a_coordinator_says_why_they_decide_a_scholarship_or_a_transfer(browser, apis) -> None:
    nothing_else(apis)
    asked = {"registration_id": "r-7", "price_minor": 90000, "currency": "CNY"}
    apis.answer("GET", "/scholarships", [asked])
    apis.answer("POST", "/scholarships/r-7/decline", {"status": "declined"})
    apis.answer("POST", "/manual-confirmations/m-2/reject", {"status": "rejected"})
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/payments", headers=EN)
    assert 'for="why-decline-r-7"' in page.text and 'id="why-decline-r-7"' in page.text
    csrf = csrf_of(page.text)
    browser.post("/console/scholarships/r-7/decline", data={"csrf": csrf, "reason": " full "})
    (declined,) = apis.posted("/scholarships/r-7/decline")
    assert FakeApis.body(declined) == {"reason": "full"}
    browser.post("/console/confirmations/m-2/reject", data={"csrf": csrf, "reason": "no transfer"})
    (rejected,) = apis.posted("/manual-confirmations/m-2/reject")
    assert FakeApis.body(rejected) == {"reason": "no transfer"}


def test_a_payment_decision_shows_its_why_in_the_history() -> None:
    from web.domain.history import payment_lines

    case = {
        "scholarship": {
            "status": "declined",
            "requested_at": "2031-01-01T00:00:00Z",
            "decided_at": "2031-01-02T00:00:00Z",
            "decided_by": ANA,
            "why": "the budget is spent",
        },
        "manual": [
            {
                "status": "rejected",
                "marked_at": "2031-01-03T00:00:00Z",
                "marked_by": "acct_b",
                "decided_at": "2031-01-04T00:00:00Z",
                "decided_by": ANA,
                "why": "no such transfer",
            }
        ],
    }
    whys = {line.what: line.why for line in payment_lines(case)}
    assert whys["payment.scholarship_declined"] == "the budget is spent"
    assert whys["payment.manual_rejected"] == "no such transfer"
    assert whys["payment.marked_received"] is None


def test_a_groups_make_up_is_set_from_its_page(browser, apis) -> None:
    group_page_answers(apis)
    sign_in(browser, "ana@example.org")
    page = browser.get("/console/groups/c-1", headers=EN)
    assert "Group make-up" in page.text and "Not set yet" in page.text
    apis.answer("PUT", "/cohorts/c-1/composition", {"composition": "women", "told": 2})
    done = browser.post(
        "/console/groups/c-1/composition",
        data={"csrf": csrf_of(page.text), "composition": "women"},
    )
    assert done.headers["location"] == "/console/groups/c-1#composition"
    (put,) = [c for c in apis.calls if c.method == "PUT"]
    assert FakeApis.body(put) == {"composition": "women"}
    assert put.headers["Authorization"].startswith("Bearer ")
