"""A facilitator with a scholarship, end to end through every service: the facilitators'
session as the seed sets it up (a cohort per session, 150 CNY, no approval, a question
about how one works with groups, scholarships from a budget per session).

The facilitator asks for a scholarship at sign-up and signs the consent; payments waits
for the coordinator's decision; the grant is emailed with the amount left to pay, which
is what the payment request asks; paid, the place is confirmed. Moved to the next
session, the grant moves to that session's budget, and the former one gets it back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from registration import seed as registration_seed

from tests.e2e.harness import System
from tests.e2e.journey import WAIT_S, Journey
from tests.integration.helpers_messaging import eventually

SHANGHAI_EVENING = "T19:00:00+08:00"


async def budget(journey: Journey, cohort_id: str, **set_to: Any) -> dict[str, Any]:
    url = f"{journey.system.url('payments')}/cohorts/{cohort_id}/scholarship-budget"
    method, body = ("PUT", set_to) if set_to else ("GET", None)
    r = await journey.request(method, url, json=body, headers=journey.coordinator)
    assert r.status_code == 200, r.text
    return r.json()


async def facilitator_sessions(journey: Journey) -> list[str]:
    """The facilitators' session as the seed defines it, with two dates ahead."""
    registration = journey.system.url("registration")
    r = await journey.request(
        "POST",
        f"{registration}/programs",
        json=registration_seed.FACILITATOR_SESSION,
        headers=journey.coordinator,
    )
    assert r.status_code == 201, r.text
    journey.program_id = r.json()["program_id"]
    now = datetime.now(UTC)
    days = [(now + timedelta(days=d)).date().isoformat() for d in (30, 90)]
    sessions = [
        {
            "starts_at": f"{day}{SHANGHAI_EVENING}",
            "ends_at": f"{day}{SHANGHAI_EVENING}".replace("T19:", "T20:").replace(":00+", ":30+"),
            "timezone": "Asia/Shanghai",
        }
        for day in days
    ]
    r = await journey.request(
        "POST",
        f"{registration}/programs/{journey.program_id}/cohorts",
        json={
            "sessions": sessions,
            "registration_opens_at": (now - timedelta(hours=1)).isoformat(),
            "registration_closes_at": (now + timedelta(days=20)).isoformat(),
        },
        headers=journey.coordinator,
    )
    assert r.status_code == 201, r.text
    cohort_ids = r.json()["cohort_ids"]
    assert len(cohort_ids) == 2  # one cohort per session: signed up for alone
    return cohort_ids


async def test_a_facilitator_with_a_scholarship_pays_what_is_left_and_keeps_it_when_moved(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "scholarship")  # program_id: consent forms seeded
    journey.applicants = journey.applicants[:1]
    (fay,) = journey.applicants
    first, second = await facilitator_sessions(journey)
    journey.cohort_id = first
    await budget(journey, first, amount_minor=45000, currency="CNY")  # the seed's 3 places
    await budget(journey, second, amount_minor=45000, currency="CNY")

    status = await journey.sign_up_one(
        fay,
        safety_answers={},
        intake_answers={"work_with_groups": "therapist"},
        scholarship_requested=True,
        scholarship_reason="Between contracts this season",
    )
    assert status == "awaiting_consent"  # no approval for this program
    await journey.sign_consents([fay])
    rid = fay.registration_id

    payments = system.url("payments")

    async def waiting() -> bool:
        r = await journey.request("GET", f"{payments}/scholarships", headers=journey.coordinator)
        return rid in {s["registration_id"] for s in r.json()}

    await eventually(waiting, timeout=WAIT_S, what="the request waiting for a decision")
    assert system.spy.latest("payment.requested", rid) is None  # nothing to pay yet

    r = await journey.request(
        "POST",
        f"{payments}/scholarships/{rid}/grant",
        json={"amount_due_minor": 5000, "reason": "as agreed on the phone"},
        headers=journey.coordinator,
    )
    assert r.status_code == 200, r.text
    request = await journey.payment_request(fay)
    assert request["amount"] == {"amount_minor": 5000, "currency": "CNY"}

    def told() -> Any:
        mail = journey.mail_of().get(fay.email, [])
        found = [m for m in mail if m.template == "payment_requested"]
        assert found, "no payment request email yet"
        return found[0]

    email = await eventually(told, timeout=WAIT_S, what="the decision reaching the facilitator")
    assert "Your scholarship request was granted" in email.text
    assert "50.00 CNY" in email.text  # the amount left to pay, never the reason
    assert "on the phone" not in email.text

    body = system.wechat.body(out_trade_no=request["reference"], total=5000)
    r = await journey.request(
        "POST",
        f"{payments}/webhooks/wechatpay",
        content=body,
        headers=system.wechat.headers(body),
        retry_any=True,
    )
    assert r.status_code == 200, r.text
    await journey.expect_enrolled([fay])
    assert (await budget(journey, first))["granted_minor"] == 10000

    # Moved to the next session: the grant follows to that session's budget.
    r = await journey.request(
        "POST",
        f"{system.url('registration')}/registrations/{rid}/move",
        json={"cohort_id": second},
        headers=journey.coordinator,
    )
    assert r.status_code == 200 and r.json()["status"] == "confirmed", r.text

    async def carried() -> bool:
        return (await budget(journey, second))["granted_minor"] == 10000

    await eventually(carried, timeout=WAIT_S, what="the grant on the new session's budget")
    assert (await budget(journey, first))["granted_minor"] == 0
