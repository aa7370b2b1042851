"""The benchmark's clients answer admission control's 503 as a client does: again, later."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from holdspace_bench import load


async def test_a_503_with_retry_after_is_sent_again_and_counted() -> None:
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.json_response({"ok": True}, status=202)

    async def no_retry_after(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_post("/x", handler)
    app.router.add_get("/down", no_retry_after)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            status, text, refused = await load.send(session, "POST", f"http://127.0.0.1:{port}/x")
            assert (status, refused) == (202, 2) and '"ok"' in text
            # Without Retry-After a 503 is an answer, not an invitation to try again.
            status, text, refused = await load.send(session, "GET", f"http://127.0.0.1:{port}/down")
            assert (status, text, refused) == (503, "down", 0)
    finally:
        await runner.cleanup()
    assert calls["n"] == 3


async def test_released_at_once_starts_every_client_and_times_from_the_opening() -> None:
    import asyncio

    gate = asyncio.Event()
    ran: list[int] = []

    async def one(i: int) -> None:
        await gate.wait()
        await asyncio.sleep(0.05)
        ran.append(i)

    wall = await load.released_at_once(one, 5, gate)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert 0.05 <= wall < 5.0  # the clients ran together, after the gate opened
