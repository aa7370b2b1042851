"""A real browser for the pages: Debian's chromium driven by Playwright, headless.

Contexts are phone-sized or desktop-sized, in a language (Accept-Language and
navigator.language) and a time zone. Every request to a host other than this machine
is refused and recorded, so a test can show that a page loads nothing from elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass
class Visitor:
    """One person's browser: its page, and what it tried to load from elsewhere."""

    context: BrowserContext
    page: Page
    size: str
    elsewhere: list[str] = field(default_factory=list)


OpenVisitor = Callable[..., Awaitable[Visitor]]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run scripts/ensure-browser")
    return path


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def visitor(browser: Browser) -> AsyncIterator[OpenVisitor]:
    """``await visitor("phone", "zh-CN")``: a new browser profile of that size and language."""
    opened: list[Visitor] = []

    async def open_one(
        size: str = "phone", locale: str = "zh-CN", timezone: str = "Asia/Shanghai"
    ) -> Visitor:
        options: dict[str, Any] = dict(PHONE if size == "phone" else DESKTOP)
        context = await browser.new_context(
            locale=locale,
            timezone_id=timezone,
            extra_http_headers={"Accept-Language": f"{locale},{locale.split('-')[0]};q=0.9"},
            # The pages' Content-Security-Policy forbids inline script, and axe-core is
            # injected as one; requests to other hosts are still refused (below).
            bypass_csp=True,
            **options,
        )
        context.set_default_timeout(20_000)
        page = await context.new_page()
        one = Visitor(context, page, size)

        async def only_here(route: Route) -> None:
            host = route.request.url.split("/")[2].split(":")[0]
            if host in LOCAL_HOSTS:
                await route.continue_()
            else:
                one.elsewhere.append(route.request.url)
                await route.abort()

        await context.route("**/*", only_here)
        opened.append(one)
        return one

    yield open_one
    for one in opened:
        await one.context.close()
