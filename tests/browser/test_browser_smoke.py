"""The browser infrastructure itself, against two tiny pages served on 127.0.0.1: the
phone and desktop contexts are what they say, the axe-core check passes a good page and
fails a bad one, requests to this machine go through and requests elsewhere are refused
and recorded, and a screenshot is of the whole page."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.browser import axe
from tests.browser.axe import check_accessibility, screenshots

pytestmark = pytest.mark.browser

GOOD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A good page</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>Sign up</h1>
<form><label for="name">Your name</label> <input id="name" name="name" type="text">
<button type="submit">Send</button></form>
<p style="height: 3000px">A tall paragraph.</p>
</main><script src="/local.js"></script></body></html>"""

BAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A bad page</title></head>
<body><main><h1>Sign up</h1>
<input id="name" name="name" type="text">
<img src="/pixel.gif">
</main></body></html>"""

ELSEWHERE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loads from elsewhere</title>
<script src="https://example.com/tracker.js"></script></head>
<body><main><h1>Hello</h1></main><script src="/local.js"></script></body></html>"""

LOCAL_JS = "document.documentElement.dataset.local = 'ran';"
PIXEL = bytes.fromhex(  # a 1x1 GIF
    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
)


@dataclass
class Site:
    url: str
    accept_language: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    seen = Site(url="")

    def html(body: str):  # type: ignore[no-untyped-def]
        async def handler(request: web.Request) -> web.Response:
            seen.accept_language.append(request.headers.get("Accept-Language", ""))
            return web.Response(text=body, content_type="text/html")

        return handler

    async def local_js(_: web.Request) -> web.Response:
        return web.Response(text=LOCAL_JS, content_type="text/javascript")

    async def pixel(_: web.Request) -> web.Response:
        return web.Response(body=PIXEL, content_type="image/gif")

    app = web.Application()
    app.router.add_get("/good", html(GOOD))
    app.router.add_get("/bad", html(BAD))
    app.router.add_get("/elsewhere", html(ELSEWHERE))
    app.router.add_get("/local.js", local_js)
    app.router.add_get("/pixel.gif", pixel)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    seen.url = f"http://127.0.0.1:{port}"
    try:
        yield seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("size", "locale", "timezone", "width", "ratio", "touch"),
    [
        ("phone", "zh-CN", "Asia/Shanghai", 390, 2, True),
        ("desktop", "en-US", "Europe/Berlin", 1280, 1, False),
    ],
)
async def test_a_good_page_passes_in_each_viewport(
    site: Site, visitor, size, locale, timezone, width, ratio, touch
) -> None:
    one = await visitor(size, locale, timezone)
    site.accept_language.clear()
    await one.page.goto(f"{site.url}/good")

    await check_accessibility(one.page, context_label=f"good page, {size}")
    assert one.elsewhere == []
    # The local script came through the route that refuses other hosts.
    assert await one.page.evaluate("document.documentElement.dataset.local") == "ran"
    seen = await one.page.evaluate(
        """() => ({
            width: window.innerWidth,
            ratio: window.devicePixelRatio,
            touch: navigator.maxTouchPoints > 0,
            language: navigator.language,
            timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
        })"""
    )
    assert seen == {
        "width": width,
        "ratio": ratio,
        "touch": touch,
        "language": locale,
        "timezone": timezone,
    }
    assert site.accept_language and site.accept_language[0].startswith(locale)


@pytest.mark.parametrize("size", ["phone", "desktop"])
async def test_a_page_with_serious_violations_fails_the_check(site: Site, visitor, size) -> None:
    one = await visitor(size, "en-US")
    await one.page.goto(f"{site.url}/bad")
    with pytest.raises(AssertionError) as failed:
        await check_accessibility(one.page, context_label=f"bad page, {size}")
    message = str(failed.value)
    assert message.startswith(f"bad page, {size}: ")
    assert "image-alt (critical)" in message and "['img']" in message
    assert "label (critical)" in message and "['#name']" in message


async def test_a_request_to_another_host_is_refused_and_recorded(site: Site, visitor) -> None:
    one = await visitor("phone", "zh-CN")
    await one.page.goto(f"{site.url}/elsewhere")
    assert one.elsewhere == ["https://example.com/tracker.js"]
    assert await one.page.evaluate("document.documentElement.dataset.local") == "ran"
    # A fetch made by the page's own script is refused and recorded as well.
    refused = await one.page.evaluate(
        "fetch('http://example.org/beacon').then(() => 'loaded', () => 'refused')"
    )
    assert refused == "refused"
    assert one.elsewhere == ["https://example.com/tracker.js", "http://example.org/beacon"]


async def test_screenshots_are_the_whole_page_at_both_sizes_only_when_asked(
    site: Site, visitor, tmp_path, monkeypatch
) -> None:
    one = await visitor("phone", "en-US")
    await one.page.goto(f"{site.url}/good")
    monkeypatch.delenv(axe.SCREENSHOTS_ENV, raising=False)
    await screenshots(one.page, "good")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(axe.SCREENSHOTS_ENV, str(tmp_path / "shots"))
    await screenshots(one.page, "good")
    sizes = {}
    for name in ("good-phone.png", "good-desktop.png"):
        png = (tmp_path / "shots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        sizes[name] = struct.unpack(">II", png[16:24])
    width, height = sizes["good-phone.png"]
    assert width == 390 * 2 and height > 3000 * 2  # the tall paragraph, at scale factor 2
    assert sizes["good-desktop.png"][0] == 1280 * 2
    assert one.page.viewport_size == {"width": 390, "height": 844}  # given back
