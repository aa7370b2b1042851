"""A wish for a single-gender group, end to end: the recovery group (mixed, no refunds)
takes it; the coordinator sets the cohort's make-up once known; the applicant whose wish
it does not meet is told by email, sees the window on "my registration", withdraws
within it and payments records the refund the program sets for that case.

The recovery group's FAQ: people uncomfortable in a mixed group should still apply, may
get a single-gender group, and may withdraw if it turns out mixed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.e2e.harness import System
from tests.e2e.journey import WAIT_S, Applicant, Journey
from tests.integration.helpers_messaging import eventually


def templates_to(journey: Journey, a: Applicant) -> list[str]:
    return [r.template for r in journey.mail_of().get(a.email, [])]


async def test_an_unmet_wish_for_a_single_gender_group_is_told_and_refunded_on_withdrawal(
    system: System, program_id: str
) -> None:
    journey = Journey(system, program_id, "composition")
    journey.applicants = journey.applicants[:3]
    ann, bo, cy = journey.applicants
    await journey.open_cohort()
    wish = await journey.sign_up_one(ann, gender="woman", single_gender_preference=True)
    assert wish == "pending_review"
    assert await journey.sign_up_one(bo, gender="man") == "pending_review"
    await journey.approve([ann, bo])
    await journey.sign_consents([ann, bo])
    await journey.pay([ann, bo], {})
    await journey.expect_enrolled([ann, bo])

    composition = f"{system.url('registration')}/cohorts/{journey.cohort_id}/composition"
    for _ in range(2):  # setting the same make-up again tells nobody twice
        r = await journey.request(
            "PUT", composition, json={"composition": "mixed"}, headers=journey.coordinator
        )
        assert r.status_code == 200, r.text
        assert r.json()["composition"] == "mixed" and r.json()["told"] == 1
    bad = await journey.request(
        "PUT", composition, json={"composition": "all"}, headers=journey.coordinator
    )
    assert bad.status_code == 422 and "composition" in bad.text

    await eventually(
        lambda: "composition_unmet" in templates_to(journey, ann),
        timeout=WAIT_S,
        what="the email to the applicant whose wish is unmet",
    )
    told = [r for r in journey.mail_of()[ann.email] if r.template == "composition_unmet"]
    assert told[0].subject == "An update about your group"
    assert "it will be a mixed group" in told[0].text
    assert "refunded in full" in told[0].text

    mine = await journey.request(
        "GET",
        f"{system.url('registration')}/registrations/{ann.registration_id}",
        headers={"Authorization": f"Bearer {ann.token}"},
    )
    notice = mine.json()["composition_notice"]
    assert notice["composition"] == "mixed" and notice["refundable"] is True
    window = datetime.fromisoformat(notice["withdraw_by"]) - datetime.now(UTC)
    assert timedelta(days=6) < window <= timedelta(days=7)  # the program's 7 days

    r = await journey.request(
        "POST",
        f"{system.url('registration')}/registrations/{ann.registration_id}/withdraw",
        headers={"Authorization": f"Bearer {ann.token}"},
    )
    assert r.status_code == 200 and r.json()["status"] == "withdrawn", r.text
    refund = await eventually(
        lambda: system.spy.latest("payment.refund_due", ann.registration_id),
        timeout=WAIT_S,
        what="the refund the program sets for an unmet wish",
    )
    assert refund.data["reason_code"] == "withdrawn"

    # A latecomer who asks for a single-gender group after the make-up was set is told
    # too, with a window of their own.
    late = await journey.sign_up_one(cy, gender="man", single_gender_preference=True)
    assert late == "pending_review"
    await eventually(
        lambda: "composition_unmet" in templates_to(journey, cy),
        timeout=WAIT_S,
        what="the email to the latecomer whose wish is unmet",
    )
    theirs = await journey.request(
        "GET",
        f"{system.url('registration')}/registrations/{cy.registration_id}",
        headers={"Authorization": f"Bearer {cy.token}"},
    )
    assert theirs.json()["composition_notice"]["composition"] == "mixed"

    await asyncio.sleep(1)  # time for a second notice, or one to bo, to show up
    assert templates_to(journey, ann).count("composition_unmet") == 1
    assert templates_to(journey, cy).count("composition_unmet") == 1
    assert "composition_unmet" not in templates_to(journey, bo)
    assert len(system.spy.of("registration.composition_unmet", journey.ids)) == 2
