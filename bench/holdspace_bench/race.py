"""N sign-ups for one 8-seat cohort, then their N verifications at once: exactly 8 must
hold a seat (a sign-up holds nothing until its address is verified, so the
verifications are what race for the seats)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from holdspace_bench import load, payloads, stats
from holdspace_bench.journey import VERIFY, Observer
from holdspace_bench.load import coordinator_headers, create_cohorts
from holdspace_bench.system import System

SEATS = 8


async def seat_race(
    system: System, program_id: str, *, n: int, tag: str, seats: int = SEATS
) -> dict[str, Any]:
    base = system.url("registration")
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        (cohort_id,) = await create_cohorts(
            system, session, program_id, 1, label=f"{tag}-race", capacity=seats
        )
        links = await _signed_up(system, session, cohort_id, n, tag)
        latencies: list[float] = []
        answers: list[tuple[int, dict[str, Any]]] = []
        gate = asyncio.Event()

        async def one(i: int) -> None:
            rid, token = links[i]
            await gate.wait()
            started = time.perf_counter()
            status, text = await _post(
                session,
                f"{base}/registrations/{rid}/verify-email",
                headers={"Authorization": f"Bearer {token}"},
            )
            latencies.append(time.perf_counter() - started)
            try:
                answers.append((status, json.loads(text)))
            except ValueError:
                answers.append((status, {}))

        wall = await load.released_at_once(one, n, gate)
        roster_url = f"{base}/cohorts/{cohort_id}/roster"
        async with session.get(roster_url, headers=coordinator_headers(system)) as r:
            roster = await r.json()
    held = sum(1 for s, b in answers if s == 200 and b.get("status") == "pending_review")
    waitlisted = sum(1 for s, b in answers if s == 200 and b.get("status") == "waitlisted")
    errors = sum(1 for s, _ in answers if s != 200)
    return {
        "sign_ups": n,  # each verified at once: the verifications race
        "seats": seats,
        "held": held,
        "waitlisted": waitlisted,
        "errors": errors,
        "roster_seats_taken": roster.get("seats_taken"),
        "exactly_held": held == seats and roster.get("seats_taken") == seats and errors == 0,
        "wall_s": round(wall, 2),
        "latency": stats.latency_summary(latencies),
    }


async def _post(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    status, text, _ = await load.send(session, "POST", url, **kw)
    return status, text


async def _signed_up(
    system: System, session: aiohttp.ClientSession, cohort_id: str, n: int, tag: str
) -> list[tuple[str, str]]:
    """n sign-ups (not timed), and the registration id and token each emailed link holds."""
    observer = Observer(system)
    await observer.start()
    try:
        base = system.url("registration")
        applications = [payloads.application(f"{tag}-race", i) for i in range(n)]

        async def sign_up(i: int) -> dict[str, Any]:
            status, text = await _post(
                session,
                f"{base}/cohorts/{cohort_id}/registrations",
                json=applications[i],
                headers={"Idempotency-Key": f"{tag}-race-{i}"},
            )
            if status != 202:
                raise RuntimeError(f"sign-up {i}: HTTP {status} {text}")
            return await observer.wait(VERIFY, applications[i]["email"], 120)

        links = await asyncio.gather(*(sign_up(i) for i in range(n)))
        return [(d["registration_id"], d["contact"]["access_token"]) for d in links]
    finally:
        await observer.close()
