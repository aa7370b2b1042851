"""The payments service as a real process, next to the real registration service.

Both run under uvicorn against the real broker and database. The tests play the
providers (their own RSA key pairs, signing as WeChat Pay and Alipay document it, the
generic webhook's HMAC), publish the consent events the consent service would, read
payments' database to check what it stored and listen to the internal exchange for
the payment events it publishes. The happy paths drive a real registration to
``confirmed`` through payment.confirmed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared import events as ev
from shared.security import ALL_PROGRAMS, Role, issue_token
from tests.bus import TestBus
from tests.conftest import short_id
from tests.integration.helpers_messaging import eventually
from tests.integration.payments_providers import (
    GENERIC_SECRET,
    Alipay,
    WechatPay,
    generic_body,
    generic_headers,
)
from tests.integration.registration_api import RegistrationApi
from tests.services import TEST_JWT_SECRET, ServiceProcess, service_env


def coordinator(subject: str) -> dict[str, str]:
    # Issued at import: valid for longer than a slow suite takes to reach these tests.
    token = issue_token(
        TEST_JWT_SECRET,
        role=Role.coordinator,
        subject=subject,
        ttl_seconds=4 * 3600,
        programs=ALL_PROGRAMS,
    )
    return {"Authorization": f"Bearer {token}"}


MAKER = coordinator("coordinator-lin")
CHECKER = coordinator("coordinator-wang")


class PaySystem(TestBus):
    def __init__(self, env: dict[str, str], registration: ServiceProcess, payments: ServiceProcess):
        super().__init__(env)
        self.registration = registration
        self.payments = payments
        self.wechat = WechatPay()
        self.alipay = Alipay()
        self.events: list[dict[str, Any]] = []
        self.http: httpx.AsyncClient | None = None
        self.replica: ServiceProcess | None = None

    async def listen_payments(self) -> None:
        self.events = await self.listen("internal", "payment.#")

    def payment_events(self, rid: str, type_: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["data"]["registration_id"] == rid and (type_ is None or e["type"] == type_)
        ]

    async def wait_event(self, rid: str, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        found = await eventually(
            lambda: self.payment_events(rid, type_), timeout=timeout, what=f"{type_} for {rid}"
        )
        return found[-1]["data"]


@pytest.fixture(scope="module")
async def paysys(mongodb_url, rabbitmq_url, tmp_path_factory) -> AsyncIterator[PaySystem]:
    log_dir = tmp_path_factory.mktemp("payments")
    wechat, alipay = WechatPay(), Alipay()
    env = service_env(
        mongodb_url,
        rabbitmq_url,
        short_id(),
        GENERIC_WEBHOOK_SECRET=GENERIC_SECRET,
        **wechat.env(),
        **alipay.env(),
    )
    registration = ServiceProcess("registration", env, log_dir).start()
    payments = ServiceProcess("payments", env, log_dir).start()
    # A second replica competes for the same queue, database and webhooks.
    replica = ServiceProcess("payments", env, log_dir).start()
    system = PaySystem(env, registration, payments)
    system.replica = replica
    system.wechat, system.alipay = wechat, alipay
    await system.listen_payments()
    system.http = httpx.AsyncClient(base_url=payments.url, timeout=30)
    yield system
    await system.http.aclose()
    await system.close_bus()
    replica.stop()
    payments.stop()
    registration.stop()


@pytest.fixture
def http(paysys: PaySystem) -> httpx.AsyncClient:
    assert paysys.http is not None
    return paysys.http


@pytest.fixture
def paydb(paysys: PaySystem, mongo_client):
    return mongo_client[f"{paysys.env['HOLDSPACE_DB_PREFIX']}payments"]


@pytest.fixture
async def regapi(paysys: PaySystem) -> AsyncIterator[RegistrationApi]:
    async with httpx.AsyncClient(base_url=paysys.registration.url, timeout=30) as client:
        yield RegistrationApi(client, paysys)


@pytest.fixture(scope="module")
async def cohort(paysys: PaySystem) -> str:
    """One paid cohort (900 RMB, no refund, no review) for the happy paths."""
    async with httpx.AsyncClient(base_url=paysys.registration.url, timeout=30) as client:
        api = RegistrationApi(client)
        program_id = await api.program(approval_required=False, scholarships_allowed=True)
        return await api.cohort(program_id)


def consent_signed(
    rid: str,
    *,
    price: int | None = 90000,
    currency: str = "CNY",
    refundable: bool = False,
    hold: timedelta = timedelta(hours=1),
) -> ev.ConsentSigned:
    return ev.ConsentSigned(
        registration_id=rid,
        form_id="form-1",
        form_version=1,
        text_sha256="0" * 64,
        signed_at=datetime.now(UTC),
        price=ev.Money(amount_minor=price, currency=currency) if price is not None else None,
        refundable=refundable,
        hold_expires_at=datetime.now(UTC) + hold,
    )


async def requested(paysys: PaySystem, **kwargs: Any) -> dict[str, Any]:
    """A payment request for a registration only payments knows of (events only)."""
    rid = str(uuid.uuid4())
    await paysys.publish(consent_signed(rid, **kwargs))
    return await paysys.wait_event(rid, "payment.requested")


async def signed_up_and_requested(
    paysys: PaySystem, api: RegistrationApi, cohort_id: str, n: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real registration, consent signed: awaiting payment, with its request."""
    registration = await api.signed_up(cohort_id, n)
    assert registration["status"] == "awaiting_consent"
    rid = registration["registration_id"]
    await paysys.publish(consent_signed(rid, hold=timedelta(minutes=30)))
    request = await paysys.wait_event(rid, "payment.requested")
    await wait_status(api, registration, "awaiting_payment")
    return registration, request


async def wait_status(api: RegistrationApi, registration: dict, status: str) -> None:
    async def check() -> bool:
        current = await api.status(registration)
        assert current["status"] == status, current
        return True

    await eventually(check, timeout=10, interval=0.1, what=f"registration {status}")


async def case_of(paydb, rid: str) -> dict[str, Any]:
    return await paydb.cases.find_one({"_id": rid})


async def wechat_post(paysys: PaySystem, http: httpx.AsyncClient, body: bytes, **kw: Any):
    return await http.post(
        "/webhooks/wechatpay", content=body, headers=paysys.wechat.headers(body, **kw)
    )


async def alipay_post(http: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
    return await http.post(
        "/webhooks/alipay",
        content=Alipay.form(params),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )


async def generic_post(http: httpx.AsyncClient, body: bytes, **kw: Any) -> httpx.Response:
    return await http.post("/webhooks/generic", content=body, headers=generic_headers(body, **kw))


async def settle_quietly() -> None:
    """Time for anything wrongly published to reach the listener before counting events."""
    await asyncio.sleep(0.7)


async def mismatch_count(http: httpx.AsyncClient, kind: str) -> float:
    text = (await http.get("/metrics")).text
    pattern = rf'holdspace_payment_mismatches_total\{{[^}}]*kind="{kind}"[^}}]*\}} ([0-9.e+]+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


# --- the three ways of confirming, each driving a real registration to confirmed ---------------


async def test_wechatpay_notification_confirms_the_registration(
    paysys, http, regapi, cohort, paydb
) -> None:
    registration, request = await signed_up_and_requested(paysys, regapi, cohort, 1)
    assert request["amount"] == {"amount_minor": 90000, "currency": "CNY"}
    assert "900.00 CNY" in request["instructions"] and request["reference"].startswith("HS-")
    body = paysys.wechat.body(out_trade_no=request["reference"], total=90000)
    r = await wechat_post(paysys, http, body)
    assert r.status_code == 200 and r.json()["code"] == "SUCCESS"
    confirmed = await paysys.wait_event(registration["registration_id"], "payment.confirmed")
    assert (confirmed["method"], confirmed["amount"]["amount_minor"]) == ("wechatpay", 90000)
    assert confirmed["payment_id"] == request["payment_id"]
    await wait_status(regapi, registration, "confirmed")
    case = await case_of(paydb, registration["registration_id"])
    assert case["status"] == "confirmed" and case["confirmed"]["method"] == "wechatpay"
    # Nothing that names the payer is kept.
    assert "oUpF8uMuAJO" not in json.dumps(case, default=str)


async def test_alipay_notification_confirms_the_registration(paysys, http, regapi, cohort) -> None:
    registration, request = await signed_up_and_requested(paysys, regapi, cohort, 2)
    params = paysys.alipay.params(out_trade_no=request["reference"], total_amount="900.00")
    r = await alipay_post(http, params)
    assert (r.status_code, r.text) == (200, "success")
    confirmed = await paysys.wait_event(registration["registration_id"], "payment.confirmed")
    assert confirmed["method"] == "alipay"
    await wait_status(regapi, registration, "confirmed")


async def test_generic_webhook_confirms_the_registration(paysys, http, regapi, cohort) -> None:
    registration, request = await signed_up_and_requested(paysys, regapi, cohort, 3)
    body = generic_body(reference=request["reference"], amount_minor=90000)
    r = await generic_post(http, body)
    assert r.status_code == 200 and r.json()["outcome"] == "confirmed"
    confirmed = await paysys.wait_event(registration["registration_id"], "payment.confirmed")
    assert confirmed["method"] == "generic"
    await wait_status(regapi, registration, "confirmed")


async def test_a_manual_transfer_counts_only_after_a_second_coordinator(
    paysys, http, regapi, cohort, paydb
) -> None:
    registration, request = await signed_up_and_requested(paysys, regapi, cohort, 4)
    rid = registration["registration_id"]
    mark = {
        "reference": request["reference"].lower(),  # as typed from a bank statement
        "amount_minor": 90000,
        "currency": "CNY",
        "evidence": "ICBC statement line 2025-05-01, transfer note names the reference",
    }
    r = await http.post("/manual-confirmations", json=mark, headers=MAKER)
    assert r.status_code == 201, r.text
    confirmation_id = r.json()["confirmation_id"]
    assert r.json()["status"] == "pending"
    pending = (await http.get("/manual-confirmations", headers=CHECKER)).json()
    assert rid in [p["registration_id"] for p in pending]
    stored = await case_of(paydb, rid)
    assert "ICBC" not in json.dumps(stored, default=str)  # the evidence is sealed at rest
    pending_event = await paysys.wait_event(rid, "payment.confirmation_pending")
    assert pending_event["confirmation_id"] == confirmation_id
    assert pending_event["amount"] == {"amount_minor": 90000, "currency": "CNY"}
    again = await http.post("/manual-confirmations", json=mark, headers=MAKER)
    assert again.status_code in (201, 409)
    await settle_quietly()
    assert len(paysys.payment_events(rid, "payment.confirmation_pending")) == 1

    before = await case_of(paydb, rid)
    own = await http.post(f"/manual-confirmations/{confirmation_id}/approve", headers=MAKER)
    assert own.status_code == 403
    after = await case_of(paydb, rid)
    assert (after["status"], after["version"]) == ("requested", before["version"])
    await settle_quietly()
    assert paysys.payment_events(rid, "payment.confirmed") == []
    assert (await regapi.status(registration))["status"] == "awaiting_payment"

    why = "seen on the ICBC statement of 3 March"
    ok = await http.post(
        f"/manual-confirmations/{confirmation_id}/approve", json={"reason": why}, headers=CHECKER
    )
    assert ok.status_code == 200 and ok.json()["payment_status"] == "confirmed", ok.text
    confirmed = await paysys.wait_event(rid, "payment.confirmed")
    assert confirmed["method"] == "manual"
    await wait_status(regapi, registration, "confirmed")
    again = await http.post(f"/manual-confirmations/{confirmation_id}/approve", headers=CHECKER)
    assert again.status_code == 200
    view = (await http.get(f"/payments/{request['payment_id']}", headers=CHECKER)).json()
    assert view["manual"][0]["evidence"].startswith("ICBC")
    assert view["manual"][0]["marked_by"] == "coordinator-lin"
    assert view["manual"][0]["decided_by"] == "coordinator-wang"
    assert view["manual"][0]["why"] == why  # kept beside who decided...
    assert why not in json.dumps(await case_of(paydb, rid), default=str)  # ...sealed at rest
    await settle_quietly()
    assert len(paysys.payment_events(rid, "payment.confirmed")) == 1


# --- refused or flagged, never a state change, never a 500 -------------------------------------


async def assert_untouched(paysys: PaySystem, paydb, request: dict[str, Any]) -> None:
    case = await case_of(paydb, request["registration_id"])
    assert case["status"] == "requested" and case["claims"] == [] and case["confirmed"] is None
    await settle_quietly()
    assert paysys.payment_events(request["registration_id"], "payment.confirmed") == []


async def test_bad_signatures_are_refused_with_no_state_change(paysys, http, paydb) -> None:
    from tests.integration.payments_providers import new_private_key

    request = await requested(paysys)
    ref = request["reference"]
    forger = new_private_key()

    body = paysys.wechat.body(out_trade_no=ref, total=90000)
    forged = await wechat_post(paysys, http, body, key=forger)
    assert forged.status_code == 401 and forged.json()["code"] == "FAIL"
    headers = paysys.wechat.headers(body)
    tampered = body.replace(b'"summary"', b'"Summary"')
    r = await http.post("/webhooks/wechatpay", content=tampered, headers=headers)
    assert r.status_code == 401 and r.json() == {"code": "FAIL", "message": r.json()["message"]}
    unsigned = await http.post("/webhooks/wechatpay", content=body)
    assert unsigned.status_code == 401

    params = paysys.alipay.params(out_trade_no=ref, total_amount="900.00", key=forger)
    r = await alipay_post(http, params)
    assert (r.status_code, r.text) == (401, "fail")
    good = paysys.alipay.params(out_trade_no=ref, total_amount="0.01")
    r = await alipay_post(http, {**good, "total_amount": "900.00"})  # amount changed in transit
    assert (r.status_code, r.text) == (401, "fail")

    body = generic_body(reference=ref, amount_minor=90000)
    r = await generic_post(http, body, secret="a-forger-guessing-the-secret-" + "x" * 20)
    assert r.status_code == 401
    r = await http.post("/webhooks/generic", content=body)
    assert r.status_code == 401
    await assert_untouched(paysys, paydb, request)
    assert await paydb.notifications.count_documents({"reference": ref}) == 0


async def test_stale_timestamps_are_refused(paysys, http, paydb) -> None:
    request = await requested(paysys)
    old = int(time.time()) - 600
    body = paysys.wechat.body(out_trade_no=request["reference"], total=90000)
    r = await wechat_post(paysys, http, body, timestamp=old)
    assert r.status_code == 400 and r.json()["code"] == "FAIL"
    body = generic_body(reference=request["reference"], amount_minor=90000)
    assert (await generic_post(http, body, timestamp=old)).status_code == 400
    ahead = int(time.time()) + 600
    assert (await generic_post(http, body, timestamp=ahead)).status_code == 400
    await assert_untouched(paysys, paydb, request)


async def test_a_replayed_notification_is_answered_success_and_changes_nothing(
    paysys, http, paydb
) -> None:
    request = await requested(paysys)
    rid = request["registration_id"]
    body = generic_body(reference=request["reference"], amount_minor=90000)
    headers = generic_headers(body)
    first = await http.post("/webhooks/generic", content=body, headers=headers)
    assert first.json()["outcome"] == "confirmed"
    await paysys.wait_event(rid, "payment.confirmed")

    async def published() -> dict:
        case = await case_of(paydb, rid)
        return case if not case["has_outbox"] else {}

    version = (await eventually(published, what="outbox drained"))["version"]
    for _ in range(3):  # the very same signed request again, within the tolerance
        replay = await http.post("/webhooks/generic", content=body, headers=headers)
        assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    wechat_body = paysys.wechat.body(out_trade_no=request["reference"], total=90000)
    for _ in range(2):  # WeChat Pay's retries re-sign the same notification
        assert (await wechat_post(paysys, http, wechat_body)).status_code == 200
    case = await case_of(paydb, rid)
    # The WeChat transaction is a second payment: recorded and flagged, never confirmed again.
    assert case["confirmed"]["method"] == "generic"
    assert [c["flag"] for c in case["claims"]] == [None, "already_paid"]
    assert case["version"] == version + 1
    await settle_quietly()
    assert len(paysys.payment_events(rid, "payment.confirmed")) == 1


async def test_wrong_amount_or_currency_is_flagged_for_a_coordinator(paysys, http, paydb) -> None:
    request = await requested(paysys)
    ref = request["reference"]
    amounts_before = await mismatch_count(http, "amount_mismatch")
    currency_before = await mismatch_count(http, "currency_mismatch")

    short = paysys.wechat.body(out_trade_no=ref, total=45000)
    r = await wechat_post(paysys, http, short)
    assert r.status_code == 200  # received: WeChat Pay must not retry it for a day
    r = await alipay_post(http, paysys.alipay.params(out_trade_no=ref, total_amount="899.99"))
    assert r.text == "success"
    dollars = generic_body(reference=ref, amount_minor=90000, currency="USD")
    r = await generic_post(http, dollars)
    assert r.json()["outcome"] == "flagged"
    await generic_post(http, dollars)  # the same flagged notification again: one flag

    await assert_untouched_but_flagged(paysys, paydb, request, 3)
    announced = await eventually(
        lambda: len(paysys.payment_events(request["registration_id"], "payment.flagged")) == 3,
        what="three payment.flagged events for coordinators",
    )
    assert announced
    kinds = sorted(
        e["data"]["reason_code"]
        for e in paysys.payment_events(request["registration_id"], "payment.flagged")
    )
    assert kinds == ["amount_mismatch", "amount_mismatch", "currency_mismatch"]
    flags = (await http.get("/flags", headers=CHECKER)).json()
    mine = sorted(f["kind"] for f in flags if f["payment_id"] == request["payment_id"])
    assert mine == ["amount_mismatch", "amount_mismatch", "currency_mismatch"]
    assert await mismatch_count(http, "amount_mismatch") == amounts_before + 2
    assert await mismatch_count(http, "currency_mismatch") == currency_before + 1

    flag_id = next(f["flag_id"] for f in flags if f["payment_id"] == request["payment_id"])
    r = await http.post(
        f"/flags/{flag_id}/resolve", json={"note": "asked the payer"}, headers=CHECKER
    )
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert flag_id not in [f["flag_id"] for f in (await http.get("/flags", headers=MAKER)).json()]
    assert (await http.get("/flags", headers={})).status_code == 401

    # The right payment still confirms.
    r = await generic_post(http, generic_body(reference=ref, amount_minor=90000))
    assert r.json()["outcome"] == "confirmed"


async def assert_untouched_but_flagged(paysys, paydb, request, flags: int) -> None:
    case = await case_of(paydb, request["registration_id"])
    assert case["status"] == "requested" and case["confirmed"] is None
    assert len([c for c in case["claims"] if c["flag"]]) == flags
    await settle_quietly()
    assert paysys.payment_events(request["registration_id"], "payment.confirmed") == []


async def test_unknown_reference_is_recorded_and_flagged(paysys, http, paydb) -> None:
    ref = "HS-NOPE-" + short_id()[:4].upper()
    before = await mismatch_count(http, "unknown_reference")
    r = await generic_post(http, generic_body(reference=ref, amount_minor=100))
    assert r.status_code == 200 and r.json()["outcome"] == "flagged"
    r = await alipay_post(http, paysys.alipay.params(out_trade_no=ref, total_amount="1.00"))
    assert r.text == "success"
    flags = [f for f in (await http.get("/flags", headers=CHECKER)).json() if f["reference"] == ref]
    assert sorted(f["method"] for f in flags) == ["alipay", "generic"]
    assert {f["kind"] for f in flags} == {"unknown_reference"}
    assert await paydb.notifications.count_documents({"reference": ref}) == 2
    assert await mismatch_count(http, "unknown_reference") == before + 2
    r = await http.post(
        "/manual-confirmations",
        json={"reference": ref, "amount_minor": 100, "currency": "CNY"},
        headers=MAKER,
    )
    assert r.status_code == 404 and r.json()["field"] == "reference" and r.json()["flag_id"]


async def test_malformed_bodies_are_refused_without_a_500(paysys, http, paydb) -> None:
    request = await requested(paysys)
    signed_garbage = [b"", b"{", b"[]", b'{"id": "x"}', json.dumps({"id": "x", "type": 1}).encode()]
    for body in signed_garbage:
        r = await generic_post(http, body)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    missing = json.loads(generic_body(reference=request["reference"], amount_minor=90000))
    del missing["amount_minor"]
    r = await generic_post(http, json.dumps(missing).encode())
    assert r.status_code == 400 and "amount_minor" in r.json()["detail"]
    negative = generic_body(reference=request["reference"], amount_minor=-5)
    assert (await generic_post(http, negative)).status_code == 400
    nul = generic_body(reference=request["reference"] + "\u0000", amount_minor=90000)
    r = await generic_post(http, nul)
    assert r.status_code == 400 and "reference" in r.json()["detail"]

    for body in (b"not json", b"{}", json.dumps({"resource": {"nonce": 1}}).encode()):
        r = await wechat_post(paysys, http, body)
        assert r.status_code == 400 and r.json()["code"] == "FAIL", r.text
    for body in (b"a=1&a=2", b"\xff", b"%%%"):
        r = await http.post("/webhooks/alipay", content=body)
        assert r.status_code in (400, 401) and r.text == "fail"
    no_amount = paysys.alipay.params(out_trade_no=request["reference"], total_amount="lots")
    r = await alipay_post(http, no_amount)
    assert (r.status_code, r.text) == (400, "fail")
    bad_mark = {"reference": request["reference"], "amount_minor": "lots", "currency": "CNY"}
    r = await http.post("/manual-confirmations", json=bad_mark, headers=MAKER)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "amount_minor"
    for method, path in (
        ("GET", "/payments/%00"),
        ("POST", "/flags/a%00b/resolve"),
        ("PUT", "/cohorts/x%00/scholarship-budget"),
    ):
        r = await http.request(method, path, json={}, headers=MAKER)
        assert r.status_code == 422, (path, r.status_code)
    await assert_untouched(paysys, paydb, request)


async def test_twenty_concurrent_copies_over_two_replicas_confirm_once(paysys, http, paydb) -> None:
    request = await requested(paysys)
    rid = request["registration_id"]
    body = paysys.wechat.body(out_trade_no=request["reference"], total=90000)
    latencies: list[float] = []
    assert paysys.replica is not None

    async def deliver(i: int, replica: httpx.AsyncClient) -> httpx.Response:
        started = time.perf_counter()
        # Half of the copies go to the other replica, as behind a load balancer.
        answer = await wechat_post(paysys, replica if i % 2 else http, body)
        latencies.append(time.perf_counter() - started)
        return answer

    async with httpx.AsyncClient(base_url=paysys.replica.url, timeout=30) as other:
        answers = await asyncio.gather(*(deliver(i, other) for i in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    print(f"20 concurrent notifications: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 5.0  # WeChat Pay's limit for an answer
    await paysys.wait_event(rid, "payment.confirmed")
    await settle_quietly()
    assert len(paysys.payment_events(rid, "payment.confirmed")) == 1
    case = await case_of(paydb, rid)
    assert case["status"] == "confirmed" and len(case["claims"]) == 1


# --- scholarships ---------------------------------------------------------------------------------


async def test_scholarships_within_a_budget_and_only_the_amount_due_is_shown(
    paysys, http, regapi, paydb
) -> None:
    program_id = await regapi.program(
        approval_required=False,
        scholarships_allowed=True,
        price={"amount_minor": 15000, "currency": "CNY"},
    )
    cohort_id = await regapi.cohort(program_id)
    asked = {"scholarship_requested": True, "scholarship_reason": "between jobs (sealed)"}
    reduced = await regapi.signed_up(cohort_id, 11, **asked)
    waived = await regapi.signed_up(cohort_id, 12, **asked)
    declined = await regapi.signed_up(cohort_id, 13, **asked)
    ids = [r["registration_id"] for r in (reduced, waived, declined)]

    async def listed() -> bool:
        found = (await http.get("/scholarships", headers=CHECKER)).json()
        assert set(ids) <= {s["registration_id"] for s in found}
        return True

    await eventually(listed, timeout=10, what="scholarship requests reach payments")
    case = await case_of(paydb, ids[0])
    assert "between jobs" not in json.dumps(case, default=str)

    r = await http.post(
        f"/scholarships/{ids[0]}/grant", json={"amount_due_minor": 5000}, headers=CHECKER
    )
    assert r.status_code == 409 and r.json()["field"] == "cohort_id"  # no budget yet
    budget = {"amount_minor": 20000, "currency": "CNY"}
    r = await http.put(f"/cohorts/{cohort_id}/scholarship-budget", json=budget, headers=CHECKER)
    assert r.status_code == 200 and r.json()["remaining_minor"] == 20000

    r = await http.post(
        f"/scholarships/{ids[0]}/grant", json={"amount_due_minor": 5000}, headers=CHECKER
    )
    assert r.status_code == 200 and r.json()["scholarship"]["status"] == "granted"
    too_much = await http.post(
        f"/scholarships/{ids[1]}/grant", json={"amount_due_minor": 0}, headers=CHECKER
    )
    assert too_much.status_code == 409  # 10000 granted + 15000 > 20000
    assert (await case_of(paydb, ids[1]))["scholarship"]["status"] == "requested"
    budget["amount_minor"] = 30000
    await http.put(f"/cohorts/{cohort_id}/scholarship-budget", json=budget, headers=CHECKER)
    r = await http.post(
        f"/scholarships/{ids[1]}/grant", json={"amount_due_minor": 0}, headers=CHECKER
    )
    assert r.status_code == 200, r.text
    why = "the budget is for facilitators in training"
    r = await http.post(f"/scholarships/{ids[2]}/decline", json={"reason": why}, headers=CHECKER)
    assert r.status_code == 200 and r.json()["scholarship"]["status"] == "declined"
    assert r.json()["scholarship"]["why"] == why
    assert why not in json.dumps(await case_of(paydb, ids[2]), default=str)
    left = (await http.get(f"/cohorts/{cohort_id}/scholarship-budget", headers=CHECKER)).json()
    assert (left["granted_minor"], left["remaining_minor"]) == (25000, 5000)

    for rid in ids:
        await paysys.publish(consent_signed(rid, price=15000))
    first = await paysys.wait_event(ids[0], "payment.requested")
    assert first["amount"]["amount_minor"] == 5000
    assert "50.00 CNY" in first["instructions"] and "150.00" not in first["instructions"]
    third = await paysys.wait_event(ids[2], "payment.requested")
    assert third["amount"]["amount_minor"] == 15000
    await paysys.wait_event(ids[1], "payment.waived")
    await wait_status(regapi, waived, "confirmed")
    # The applicant is told the decision (in payment.requested), never how it was
    # made: no reason, no coordinator, no discount.
    assert (first["scholarship"], third["scholarship"]) == ("granted", "declined")
    for e in paysys.events:
        if e["data"]["registration_id"] in ids:
            told = {k: v for k, v in e["data"].items() if k != "scholarship"}
            assert "scholarship" not in json.dumps({**e, "data": told}).lower()
            assert "coordinator" not in json.dumps(e) and "decided" not in json.dumps(e)
            assert why not in json.dumps(e)

    r = await generic_post(http, generic_body(reference=first["reference"], amount_minor=5000))
    assert r.json()["outcome"] == "confirmed"
    await wait_status(regapi, reduced, "confirmed")

    # A reduction granted but never used (the applicant withdrew) returns to the budget.
    budget["amount_minor"] = 40000
    await http.put(f"/cohorts/{cohort_id}/scholarship-budget", json=budget, headers=CHECKER)
    leaving = await regapi.signed_up(cohort_id, 14, **asked)

    async def asked_for() -> bool:
        case = await case_of(paydb, leaving["registration_id"])
        assert case is not None and case["scholarship_status"] == "requested"
        return True

    await eventually(asked_for, what="fourth request reaches payments")
    r = await http.post(
        f"/scholarships/{leaving['registration_id']}/grant",
        json={"amount_due_minor": 5000},
        headers=CHECKER,
    )
    assert r.status_code == 200, r.text
    assert (await regapi.applicant_post(leaving, "withdraw")).status_code == 200

    async def returned() -> bool:
        now = (await http.get(f"/cohorts/{cohort_id}/scholarship-budget", headers=CHECKER)).json()
        assert now["granted_minor"] == 25000, now
        return True

    await eventually(returned, what="unused reduction back in the budget")
    assert (await case_of(paydb, leaving["registration_id"]))["status"] == "cancelled"


# --- withdrawals, refunds and expiry -------------------------------------------------------


async def paid(paysys: PaySystem, http: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    request = await requested(paysys, **kwargs)
    r = await generic_post(http, generic_body(reference=request["reference"], amount_minor=90000))
    assert r.json()["outcome"] == "confirmed"
    await paysys.wait_event(request["registration_id"], "payment.confirmed")
    return request


def withdrawn(rid: str, refundable: bool) -> ev.RegistrationWithdrawn:
    return ev.RegistrationWithdrawn(
        registration_id=rid, cohort_id="c-1", previous_status="confirmed", refundable=refundable
    )


async def test_withdrawal_follows_the_refund_policy(paysys, http, paydb) -> None:
    kept = await paid(paysys, http)
    await paysys.publish(withdrawn(kept["registration_id"], refundable=False))
    refunded = await paid(paysys, http, refundable=True)
    envelope = await paysys.publish(withdrawn(refunded["registration_id"], refundable=True))
    await paysys.publish(withdrawn(refunded["registration_id"], True), event_id=envelope.id)

    async def recorded() -> bool:
        a = await case_of(paydb, kept["registration_id"])
        b = await case_of(paydb, refunded["registration_id"])
        assert a["refund"] and b["refund"]
        return True

    await eventually(recorded, what="refund decisions recorded")
    no_refund = (await case_of(paydb, kept["registration_id"]))["refund"]
    assert (no_refund["policy"], no_refund["status"]) == ("no_refund", "none")
    listed = (await http.get("/refunds", headers=CHECKER)).json()
    ids = [c["payment_id"] for c in listed]
    assert refunded["payment_id"] in ids and kept["payment_id"] not in ids
    r = await http.post(f"/payments/{refunded['payment_id']}/refund-made", headers=CHECKER)
    assert r.status_code == 200 and r.json()["refund"]["status"] == "made"
    r = await http.post(f"/payments/{kept['payment_id']}/refund-made", headers=CHECKER)
    assert r.status_code == 409


async def test_withdrawal_cancels_an_open_request_and_a_late_consent_asks_nothing(
    paysys, http, paydb
) -> None:
    open_request = await requested(paysys)
    rid = open_request["registration_id"]
    await paysys.publish(withdrawn(rid, refundable=False))
    await eventually(lambda: _status_is(paydb, rid, "cancelled"), what="open request cancelled")
    early = str(uuid.uuid4())
    await paysys.publish(withdrawn(early, refundable=False))
    await eventually(lambda: _status_is(paydb, early, "cancelled"), what="tombstone")
    await paysys.publish(consent_signed(early))
    r = await generic_post(
        http, generic_body(reference=open_request["reference"], amount_minor=90000)
    )
    assert r.json()["outcome"] == "flagged"  # money after withdrawal: a coordinator returns it
    await settle_quietly()
    assert paysys.payment_events(early) == []
    assert paysys.payment_events(rid, "payment.confirmed") == []


async def _status_is(paydb, rid: str, status: str) -> bool:
    case = await case_of(paydb, rid)
    return case is not None and case["status"] == status


async def test_an_unpaid_request_expires_with_the_hold(paysys, http, paydb) -> None:
    request = await requested(paysys, hold=timedelta(seconds=1))
    rid = request["registration_id"]
    await paysys.wait_event(rid, "payment.expired", timeout=10)
    assert (await case_of(paydb, rid))["status"] == "expired"
    body = paysys.wechat.body(out_trade_no=request["reference"], total=90000)
    assert (await wechat_post(paysys, http, body)).status_code == 200
    case = await case_of(paydb, rid)
    assert case["status"] == "expired" and case["claims"][0]["flag"] == "request_closed"


async def test_a_free_price_is_waived(paysys) -> None:
    rid = str(uuid.uuid4())
    await paysys.publish(consent_signed(rid, price=0))
    await paysys.wait_event(rid, "payment.waived")
    await settle_quietly()
    assert paysys.payment_events(rid, "payment.requested") == []
