"""The pages under more requests than one process takes, and what an operator scrapes."""

from __future__ import annotations

import asyncio

import httpx
from web.accounts import Accounts
from web.app import create_app
from web.clients import Services
from web.settings import WebSettings

from tests.web.fake_apis import FakeApis


async def test_a_request_past_the_bound_gets_a_busy_page_at_once_in_the_readers_language(
    accounts: Accounts, apis: FakeApis
) -> None:
    released = asyncio.Event()
    entered = asyncio.Event()

    async def slow_registration(request: httpx.Request) -> httpx.Response:
        entered.set()
        await released.wait()
        return apis.handle(request)

    settings = WebSettings(http_max_in_flight=1, http_max_waiting=0)
    app = create_app(
        settings,
        services=Services(settings, transport=httpx.MockTransport(slow_registration)),
        accounts=accounts,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
        ) as browser,
    ):
        first = asyncio.create_task(browser.get("/"))
        await asyncio.wait_for(entered.wait(), 5)
        busy = await asyncio.wait_for(browser.get("/", headers={"Accept-Language": "zh-CN"}), 5)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert busy.headers["content-type"].startswith("text/html")
        assert "Holdspace 此刻有点忙" in busy.text  # the page, in Chinese, not a JSON body
        assert busy.headers["Cache-Control"] == "no-store"  # the pages' headers still apply
        scrape = await asyncio.wait_for(browser.get("/metrics"), 5)  # never held back
        released.set()
        assert (await first).status_code == 200
        after = await browser.get("/metrics")
    assert scrape.status_code == 200
    too_large = await _post_too_large(app)
    assert too_large.status_code == 413  # past even the pages' larger bound: refused unread
    assert too_large.headers["content-type"].startswith("text/html")
    assert "您发送的内容太大" in too_large.text  # a page in the reader's language, not JSON
    assert 'holdspace_http_refused_total{reason="queue_full",service="web"}' in scrape.text
    # Every request counted by route, the refused one too (it never reached a route).
    for route, status in (("/", "200"), ("unmatched", "503")):
        assert (
            f'holdspace_http_requests_total{{method="GET",route="{route}",service="web",'
            f'status="{status}"}}'
        ) in after.text


async def _post_too_large(app) -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        return await client.post(
            "/", content=b"x" * (2 * 1024 * 1024 + 1), headers={"Accept-Language": "zh-CN"}
        )
