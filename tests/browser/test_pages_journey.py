"""The recovery-group journey through the pages only, in a real browser.

An applicant on a phone in Chinese signs up, a coordinator signs in on a desktop in
English and approves, the applicant signs consent from the link in the email, and
finds their registration waiting for payment from the link every email carries, pays
by transfer that two coordinators confirm, and then sees how to join. A
second applicant, in English, answers a safety question yes: the crisis lines come
first, and the flag is at the top of the console. Every page passes the axe-core
check (no serious or critical violation) and loads nothing from another host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from consent import seed as consent_seed
from playwright.async_api import expect

from tests.browser.axe import check_accessibility, screenshots
from tests.browser.conftest import Visitor
from tests.browser.pages_system import COORDINATORS, PagesSystem
from tests.conftest import short_id
from tests.services import coordinator_headers

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
async def pages(
    mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory
) -> AsyncIterator[PagesSystem]:
    system = PagesSystem(mongodb_url, rabbitmq_url, mongo_client, tmp_path_factory.mktemp("pages"))
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


async def look(visitor: Visitor, name: str) -> None:
    """What every page owes everyone: no serious accessibility fault, nothing loaded
    from another host. Screenshots when HOLDSPACE_SCREENSHOTS names a folder."""
    await check_accessibility(visitor.page, name)
    assert visitor.elsewhere == [], f"{name} loaded {visitor.elsewhere}"
    await screenshots(visitor.page, name)


async def sign_in(pages: PagesSystem, coordinator: Visitor, email: str, *, check=False) -> None:
    page = coordinator.page
    await page.goto(f"{pages.web_url}/console")
    await expect(page).to_have_url(f"{pages.web_url}/console/sign-in?next=/console")
    if check:
        await look(coordinator, "console-sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(COORDINATORS[email][1])
    await page.get_by_role("button", name="Coordinator sign-in").click()
    await expect(page).to_have_url(f"{pages.web_url}/console")


async def fill_sign_up(page, name: str, email: str, *, safety: str) -> None:
    await page.locator("#name").fill(name)
    await page.locator("#email").fill(email)
    await page.locator("#age_attested").check()
    for radio in await page.locator(f"input[type=radio][value={safety}]").all():
        await radio.check()


async def confirm_email(pages: PagesSystem, applicant: Visitor, email: str, *, check=False):
    """The applicant opens the link in the email and presses the button on that page."""
    link = pages.link_in(await pages.email(email, "verify_email"), "/my/")
    page = applicant.page
    await page.goto(link)
    await expect(page).not_to_have_url(link)  # the token leaves the address bar
    button = page.get_by_role("button", name="确认我的邮箱")
    await expect(button).to_be_visible()
    if check:
        await look(applicant, "verify-email")
    await button.click()
    await expect(button).to_have_count(0)


async def test_a_chinese_applicant_signs_up_is_approved_and_signs_consent(pages, visitor) -> None:
    cohort = await pages.open_group(
        "Six-week online recovery group",
        translation={"title": "六周线上康复小组", "description": "最多八位成年人的封闭小组。"},
    )
    email = f"lin-{short_id()[:8]}@example.org"
    applicant = await visitor("phone", "zh-CN")
    page = applicant.page

    await page.goto(f"{pages.web_url}/")
    await expect(page.get_by_role("heading", name="开放报名的小组")).to_be_visible()
    await look(applicant, "groups")
    await page.locator(f'a[href="/groups/{cohort}"]').click()
    await expect(page.get_by_role("heading", name="报名")).to_be_visible()
    # Held in English, read in Chinese: the organisers' translation, their own words beside.
    await expect(page.get_by_role("heading", level=1)).to_have_text("六周线上康复小组")
    await expect(page.locator(".own-title")).to_have_text("Six-week online recovery group")
    await expect(page.get_by_text("最多八位成年人的封闭小组。")).to_be_visible()
    await look(applicant, "group")

    # The privacy notice left unticked: the service refuses, the page says which field.
    await fill_sign_up(page, "小林", email, safety="no")
    await page.get_by_role("button", name="提交报名").click()
    await expect(page.locator("#privacy_notice_accepted-error")).to_have_text(
        "报名前请接受隐私说明。"
    )
    await look(applicant, "sign-up-error")
    await page.locator("#privacy_notice_accepted").check()
    await page.get_by_role("button", name="提交报名").click()
    await expect(page.get_by_role("heading", name="请查看您的邮箱")).to_be_visible()
    await look(applicant, "check-email")
    await confirm_email(pages, applicant, email, check=True)
    await expect(page.get_by_text("等待协调员审核")).to_be_visible()
    await look(applicant, "my-registration")

    coordinator = await visitor("desktop", "en-US")
    await sign_in(pages, coordinator, "ana@example.org", check=True)
    card = coordinator.page.locator("li.card", has_text=email)
    await expect(card).to_be_visible()
    await look(coordinator, "console")
    await card.get_by_role("button", name="Approve").click()
    await expect(coordinator.page.locator("li.card", has_text=email)).to_have_count(0)

    # How to pay this program: the organisation's words and its QR code (any PNG will do).
    qr_png = await coordinator.page.screenshot(clip={"x": 0, "y": 0, "width": 96, "height": 96})
    await coordinator.page.get_by_role("link", name="Programs and cohorts").click()
    program_card = coordinator.page.locator(
        "li.card", has=coordinator.page.locator(f'a[href="/console/groups/{cohort}"]')
    )
    await program_card.get_by_role("link", name="How to pay").click()
    await coordinator.page.get_by_label("In Chinese").fill("请用微信扫码付款给“心灵空间”。")
    await coordinator.page.locator("#qr").set_input_files(
        {"name": "qr.png", "mimeType": "image/png", "buffer": qr_png}
    )
    await look(coordinator, "console-how-to-pay")
    await coordinator.page.get_by_role("button", name="Save how to pay").click()
    await expect(coordinator.page).to_have_url(f"{pages.web_url}/console/programs")
    await look(coordinator, "console-programs")
    await coordinator.page.goto(f"{pages.web_url}/console")

    consent_email = await pages.email(email, "consent_requested")
    assert "知情同意书" in consent_email.subject
    await page.goto(pages.link_in(consent_email, "/consents/"))
    await expect(page.get_by_role("heading", name="知情同意书", exact=True)).to_be_visible()
    await look(applicant, "consent")
    for box in await page.locator("input[name^=clause-]").all():
        await box.check()
    await page.locator("#typed_name").fill("小林")
    await page.locator("#agree").check()
    await page.get_by_role("button", name="签署", exact=True).click()
    await expect(page.get_by_role("heading", name="同意书回执")).to_be_visible()
    await look(applicant, "consent-receipt")

    # Another browser, from the link in the email: the registration waits for payment.
    later = await visitor("phone", "zh-CN")
    page = later.page
    await page.goto(pages.link_in(consent_email, "/my/"))
    await until_shown(page, "已签署同意书：等待付款")
    assert "?t=" not in page.url  # the token left the address bar

    # Paying by transfer: the amount and reference, then "I have paid".
    await page.get_by_role("link", name="支付小组费用").click()
    await until_shown(page, "付款编号")
    reference = (await page.locator(".reference").inner_text()).strip()
    await expect(page.get_by_text("请用微信扫码付款给“心灵空间”。")).to_be_visible()
    qr = page.get_by_role("img", name="本机构的收款二维码")
    await expect(qr).to_be_visible()
    assert await qr.evaluate("img => img.naturalWidth") > 0  # the image itself loaded
    await look(later, "payment")
    await page.get_by_role("button", name="我已付款").click()
    await expect(page.get_by_text("谢谢：我们正在核对您的转账。", exact=False)).to_be_visible()

    # One coordinator marks it received, a second approves: only then does it count.
    await coordinator.page.get_by_role("link", name="Payments").click()
    mark = coordinator.page.locator("li.card", has_text=reference)
    await expect(mark).to_contain_text("says they paid")
    await mark.get_by_label("Where you saw it (optional; sealed)").fill("ICBC statement line 14")
    await mark.get_by_role("button", name="Mark as received").click()
    await expect(coordinator.page.get_by_text("waiting for another coordinator")).to_be_visible()
    await look(coordinator, "console-payments")
    second = await visitor("desktop", "en-US")
    await sign_in(pages, second, "bo@example.org")
    await second.page.goto(f"{pages.web_url}/console/payments")
    approve = second.page.locator("li.card", has_text=reference)
    await approve.get_by_role("button", name="Approve: the money arrived").click()
    await expect(second.page.locator("li.card", has_text=reference)).to_have_count(0)

    # The group's roster opens the registration's record: who did what, from both services.
    await second.page.goto(f"{pages.web_url}/console/groups/{cohort}")
    await look(second, "console-group")
    await second.page.locator("li.card", has_text=email).get_by_role("link", name="小林").click()
    history = second.page.locator("table.history")
    await expect(history).to_contain_text("Signed up")
    # Each decision names the coordinator's account by its name (the token says its id).
    await expect(history.locator("tr", has_text="Approved").first).to_contain_text("Ana")
    marked = history.locator("tr", has_text="Transfer marked as received")
    await expect(marked).to_contain_text("Ana")
    await expect(history.locator("tr", has_text="Transfer approved")).to_contain_text("Bo")
    await look(second, "console-registration")

    # The coordinator says how to join; only the confirmed participant is shown it.
    await second.page.goto(f"{pages.web_url}/console/groups/{cohort}")
    await second.page.get_by_role("link", name="Set how participants join").click()
    await second.page.get_by_label("Platform").fill("腾讯会议")
    await second.page.get_by_label("Meeting link").fill("https://meeting.tencent.com/dm/hs")
    await second.page.get_by_label("Meeting ID").fill("123 456 789")
    await second.page.get_by_label("Passcode").fill("8642")
    await look(second, "console-joining")
    await second.page.get_by_role("button", name="Save how to join").click()
    await expect(second.page.locator("section", has_text="How participants join")).to_contain_text(
        "123 456 789"
    )

    await page.get_by_role("link", name="返回我的报名").click()
    await until_shown(page, "已确认：您已获得名额")
    joining = page.locator("#joining-details")
    await expect(joining).to_contain_text("腾讯会议")
    await expect(joining).to_contain_text("8642")
    await expect(joining.get_by_role("link", name="打开会议链接")).to_have_attribute(
        "href", "https://meeting.tencent.com/dm/hs"
    )
    await look(later, "confirmed")

    # Later, withdrawing: the refund policy is stated before anything is done.
    await page.get_by_role("link", name="退出这个小组").click()
    await expect(page.get_by_text("退款")).to_be_visible()
    await look(later, "withdraw")
    await page.get_by_role("button", name="是的，退出").click()
    await until_shown(page, "已退出")


async def until_shown(page, text: str, tries: int = 40) -> None:
    """Reload until ``text`` shows: the services apply events a moment after the click."""
    for _ in range(tries):
        if await page.get_by_text(text, exact=False).count():
            break
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(page.get_by_text(text, exact=False).first).to_be_visible()


async def test_a_positive_safety_answer_shows_the_crisis_lines_and_flags_the_console(
    pages, visitor
) -> None:
    cohort = await pages.open_group("Six-week online recovery group")
    email = f"sam-{short_id()[:8]}@example.org"
    applicant = await visitor("phone", "en-US", timezone="Europe/London")
    page = applicant.page
    await page.goto(f"{pages.web_url}/groups/{cohort}")
    await fill_sign_up(page, "Sam", email, safety="yes")
    await page.locator("#privacy_notice_accepted").check()
    await page.get_by_role("button", name="Sign up").click()
    await expect(page.get_by_role("heading", name="If you need help now")).to_be_visible()
    await expect(page.get_by_text("12356").first).to_be_visible()
    await look(applicant, "crisis")

    coordinator = await visitor("desktop", "en-US")
    await sign_in(pages, coordinator, "bo@example.org")
    flags = coordinator.page.locator(
        "section", has=coordinator.page.get_by_role("heading", name="Safety flags")
    )
    await expect(flags.locator("li.card", has_text=email)).to_be_visible()
    first_card = coordinator.page.locator("li.card").first
    await expect(first_card).to_contain_text("Safety flag")

    # Until a coordinator says they have it, the alert is sent again to every coordinator.
    await until_shown(coordinator.page, "sent again to every coordinator")
    card = flags.locator("li.card", has_text=email)
    await look(coordinator, "console-flag")
    await card.get_by_role("button", name="I am handling this").click()
    await expect(flags.locator("li.card", has_text=email)).to_contain_text("Bo is handling this")


async def test_a_waitlisted_applicant_takes_the_place_offered(pages, visitor) -> None:
    cohort = await pages.open_group("一个名额的小组", capacity=1)
    first = await pages.sign_up_by_api(cohort, f"first-{short_id()[:8]}@example.org")
    email = f"wei-{short_id()[:8]}@example.org"
    applicant = await visitor("phone", "zh-CN")
    page = applicant.page
    await page.goto(f"{pages.web_url}/groups/{cohort}")
    await expect(page.get_by_text("已满：可加入候补名单").first).to_be_visible()
    await fill_sign_up(page, "小魏", email, safety="no")
    await page.locator("#privacy_notice_accepted").check()
    await page.get_by_role("button", name="提交报名").click()
    await expect(page.get_by_role("heading", name="请查看您的邮箱")).to_be_visible()
    await confirm_email(pages, applicant, email)
    await expect(page.get_by_text("在候补名单中", exact=True)).to_be_visible()
    await expect(page.get_by_text("您在候补名单中的位置：第 1 位")).to_be_visible()

    # The seat holder withdraws: the place is offered to the first on the waitlist.
    r = await pages.http.post(
        f"{pages.url('registration')}/registrations/{first['registration_id']}/withdraw",
        headers={"Authorization": f"Bearer {first['access_token']}"},
    )
    assert r.status_code == 200, r.text
    offer = await pages.email(email, "seat_offered")
    other_phone = await visitor("phone", "zh-CN")
    await other_phone.page.goto(pages.link_in(offer, "/my/"))
    await until_shown(other_phone.page, "有一个名额留给您")
    await look(other_phone, "offer")
    await other_phone.page.get_by_role("button", name="接受名额").click()
    await expect(other_phone.page.get_by_text("有一个名额留给您")).to_have_count(0)
    await expect(other_phone.page.locator(".status strong")).not_to_have_text("在候补名单中")


async def test_a_coordinator_sets_up_a_group_that_applicants_then_see(pages, visitor) -> None:
    coordinator = await visitor("desktop", "en-US")
    await sign_in(pages, coordinator, "ana@example.org")
    page = coordinator.page
    await page.get_by_role("link", name="Programs and cohorts").click()
    await page.get_by_role("link", name="New program").click()
    title = f"Evening circle {short_id()[:6]}"
    await page.get_by_label("Title (on the pages)").fill(title)
    await page.get_by_label("Discreet name (in emails and calendars)").fill("Evening circle")
    await page.get_by_label("Facilitator").fill("Lin, counsellor")
    await page.get_by_label("Price", exact=True).fill("nine hundred")
    await page.get_by_label("Consent form").fill("recovery-group-consent")
    await page.get_by_role("button", name="Create the program").click()
    await expect(page.locator("#price-error")).to_be_visible()  # named, nothing created
    await look(coordinator, "console-new-program")
    await page.get_by_label("Price", exact=True).fill("900")
    await page.get_by_role("button", name="Create the program").click()
    card = page.locator("li.card", has_text=title)
    await card.get_by_role("link", name="New cohort").click()
    first = (datetime.now(UTC) + timedelta(days=20)).date()
    await page.get_by_label("Label").fill("Spring evenings")
    await page.get_by_label("Date of the first session").fill(first.isoformat())
    await page.get_by_label("Sign-up closes on").fill((first - timedelta(days=3)).isoformat())
    await look(coordinator, "console-new-cohort")
    await page.get_by_role("button", name="Create the cohort").click()
    await expect(page.locator("li.card", has_text=title)).to_contain_text("Spring evenings")

    applicant = await visitor("phone", "en-US")
    await applicant.page.goto(f"{pages.web_url}/")
    await expect(applicant.page.get_by_role("link", name=title)).to_be_visible()


async def test_the_pages_own_script_runs_under_their_content_security_policy(
    pages, browser
) -> None:
    context = await browser.new_context(locale="en-US", timezone_id="Europe/Berlin")
    try:
        page = await context.new_page()
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)
        await page.goto(f"{pages.web_url}/crisis")
        await expect(page.get_by_role("heading", name="If you need help now")).to_be_visible()
        cookies = {c["name"]: c["value"] for c in await context.cookies()}
        assert cookies.get("tz") == "Europe%2FBerlin"  # site.js ran
        assert refused == []
    finally:
        await context.close()
