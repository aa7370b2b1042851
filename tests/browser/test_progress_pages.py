"""The space between sessions through the pages, in a real browser, over the real system.

A participant whose place is confirmed (a free group that needs no approval: signing
the consent form confirms it) finds "Between sessions" on their registration's page,
answers the program's questionnaire twice and sees both scores in the chart, marks the
first homework done, ticks a milestone (and the word of encouragement arrives by
email), and shares with the facilitator: the coordinator's console shows it on the
group's page, and no longer once the participant stops sharing. Every page passes the
axe-core check and loads nothing from another host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from consent import seed as consent_seed
from playwright.async_api import expect

from tests.browser.conftest import Visitor
from tests.browser.pages_system import PagesSystem
from tests.browser.test_pages_journey import look, sign_in, until_shown
from tests.conftest import short_id
from tests.services import coordinator_headers

pytestmark = pytest.mark.browser


def words(en: str) -> dict[str, str]:
    return {"en": en}


OFTEN = [
    {"value": v, "label": words(w)} for v, w in enumerate(("Never", "Some", "Often", "Always"))
]
PLAN = {
    "based_on": "Written for this test in plain words",
    "questionnaires": [
        {
            "id": "week",
            "title": words("How this week went"),
            "based_on": "Written for this test",
            "items": [
                {"id": "rest", "text": words("I rested badly"), "choices": OFTEN},
                {"id": "urges", "text": words("Urges took my attention"), "choices": OFTEN},
                {"id": "alone", "text": words("I felt cut off"), "choices": OFTEN},
            ],
            "bands": [
                {"up_to": 3, "label": words("A steadier stretch")},
                {"up_to": 6, "label": words("Some strain")},
                {"up_to": 9, "label": words("A heavy stretch")},
            ],
            "when": ["weekly"],
        }
    ],
    "homework": [{"session": 1, "text": words("Write down one thing that helped this week.")}],
    "milestones": [
        {"id": "told-someone", "title": words("Told someone I trust")},
        {"id": "first-week", "title": words("Kept to my plan for a week")},
    ],
}


@pytest.fixture(scope="module")
async def pages(
    mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory
) -> AsyncIterator[PagesSystem]:
    system = PagesSystem(
        mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory.mktemp("progress")
    )
    await system.start()
    try:
        await system.add_coordinators()

        def seed_forms() -> None:
            with httpx.Client(
                base_url=system.url("consent"), headers=coordinator_headers(), timeout=30
            ) as client:
                consent_seed.seed(client)

        await asyncio.to_thread(seed_forms)
        yield system
    finally:
        await system.close()


async def confirmed_participant(pages: PagesSystem, visitor: Visitor, email: str) -> tuple:
    """A free group that needs no approval, its plan set, and a participant who signed
    up and signed the consent form (which confirms the place), on their page."""
    cohort = await pages.open_group(
        f"Between-sessions group {short_id()[:6]}",
        approval_required=False,
        price={"amount_minor": 0, "currency": "CNY"},
    )
    program = await pages.program_of(cohort)
    r = await pages.http.put(
        f"{pages.url('progress')}/programs/{program}/plan", json=PLAN, headers=coordinator_headers()
    )
    assert r.status_code == 200, r.text
    signed_up = await pages.sign_up_by_api(cohort, email)
    consent_email = await pages.email(email, "consent_requested")
    page = visitor.page
    await page.goto(pages.link_in(consent_email, "/consents/"))
    for box in await page.locator("input[name^=clause-]").all():
        await box.check()
    await page.locator("#typed_name").fill("Someone")
    await page.locator("#agree").check()
    await page.get_by_role("button", name="Sign", exact=True).click()
    await page.goto(pages.link_in(consent_email, "/my/"))
    # The place is confirmed, then progress opens the space: each an event away.
    await until_shown(page, "Between sessions", tries=60)
    return cohort, signed_up["registration_id"]


async def answer(page, *values: int) -> None:
    """The questionnaire answered; once answered this week it is folded away, and opened."""
    again = page.locator("details.again summary")
    if await again.count():
        await again.click()
    for item, value in zip(("rest", "urges", "alone"), values, strict=True):
        await page.locator(f"#q-week-{item}-{value}").check()
    await page.get_by_role("button", name="Save my answers").click()


async def test_a_participant_works_between_sessions_and_shares_with_the_facilitator(
    pages, visitor
) -> None:
    email = f"kai-{short_id()[:8]}@example.org"
    participant = await visitor("phone", "en-US")
    cohort, rid = await confirmed_participant(pages, participant, email)
    page = participant.page
    await page.get_by_role("link", name="Between sessions").click()
    await expect(page.get_by_role("heading", name="Between sessions", level=1)).to_be_visible()
    await expect(page.locator("svg.chart")).to_have_count(0)
    await expect(page.get_by_text("Waiting for you now.")).to_be_visible()
    await look(participant, "progress")

    # The questionnaire twice: both scores in the chart and its table, the band named.
    await answer(page, 1, 1, 0)
    await expect(page.locator("svg.chart circle")).to_have_count(1)
    await answer(page, 2, 3, 1)
    await expect(page.locator("svg.chart circle")).to_have_count(2)
    await expect(page.get_by_text("Your latest score: 6. Some strain")).to_be_visible()
    rows = page.locator("table.scores tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("A steadier stretch")
    await look(participant, "progress-chart")

    # Homework done, with a private note kept.
    homework = page.locator("#homework-1")
    await homework.get_by_label("I have done this").check()
    await homework.get_by_label("My journal (private)").fill("Walked to the river after work.")
    await homework.get_by_role("button", name="Save").click()
    await expect(page.locator("#homework-1-done")).to_be_checked()
    await expect(page.locator("#homework-1-journal")).to_have_value(
        "Walked to the river after work."
    )

    # A milestone ticked: a short word of encouragement by email.
    await page.get_by_label("Told someone I trust").check()
    await page.get_by_role("button", name="Save my milestones").click()
    await expect(page.get_by_text("1 of 2 reached")).to_be_visible()
    note = await pages.email(email, "milestone_reached")
    assert "Told someone I trust" in note.text

    # Shared with the facilitator: the console's group page shows it.
    sharing = page.locator("#sharing")
    for label in ("My scores", "Which homework I have done", "The milestones I have reached"):
        await sharing.get_by_label(label).check()
    await sharing.get_by_label("Share with my facilitator").check()
    await sharing.get_by_role("button", name="Save what I share").click()
    await expect(page.locator("#share-with_facilitator")).to_be_checked()
    await look(participant, "progress-shared")

    coordinator = await visitor("desktop", "en-US")
    await sign_in(pages, coordinator, "ana@example.org")
    console = coordinator.page
    await console.goto(f"{pages.web_url}/console/groups/{cohort}")
    shared = console.locator(f"#shared-{rid}")
    await expect(shared).to_contain_text("Someone")
    await expect(shared).to_contain_text("Some strain")
    await expect(shared).to_contain_text("Homework done after sessions: 1")
    await expect(shared).to_contain_text("Told someone I trust")
    await look(coordinator, "console-group-between-sessions")

    # Sharing stopped: gone from the console at once.
    await sharing.get_by_label("Share with my facilitator").uncheck()
    await sharing.get_by_role("button", name="Save what I share").click()
    await expect(page.locator("#share-with_facilitator")).not_to_be_checked()
    await console.reload()
    await expect(console.locator("#between-sessions")).to_be_visible()
    await expect(console.locator(f"#shared-{rid}")).to_have_count(0)
    await expect(console.get_by_text("Nobody shares anything with you just now.")).to_be_visible()
