"""Open-loop load: requests sent on a schedule, latency measured from the intended send
time, so a slow server cannot hide its queueing behind a slower client. Also the
coordinator's set-up calls (program, cohorts, consent forms) and the sign-up step of the
rising-rate ramp.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from consent import seed as consent_seed

from holdspace_bench import payloads, stats
from holdspace_bench.system import System, dead_letters, wait_drained
from shared.security import Role, issue_token

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


def new_session(limit: int = 2000) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit), timeout=HTTP_TIMEOUT
    )


def coordinator_headers(system: System) -> dict[str, str]:
    token = issue_token(
        system.jwt_secret, role=Role.coordinator, subject="bench", ttl_seconds=7200, programs="*"
    )
    return {"Authorization": f"Bearer {token}"}


# --- set-up ------------------------------------------------------------------------------


async def create_program(system: System, session: aiohttp.ClientSession) -> str:
    url = f"{system.url('registration')}/programs"
    async with session.post(url, json=payloads.PROGRAM, headers=coordinator_headers(system)) as r:
        body = await r.json()
        if r.status != 201:
            raise RuntimeError(f"creating the program: {r.status} {body}")
    return body["program_id"]


async def create_cohorts(
    system: System,
    session: aiohttp.ClientSession,
    program_id: str,
    count: int,
    *,
    label: str,
    capacity: int | None = None,
    parallel: int = 8,
) -> list[str]:
    url = f"{system.url('registration')}/programs/{program_id}/cohorts"
    headers = coordinator_headers(system)
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> str:
        async with gate:
            spec = payloads.cohort_spec(f"{label}-{i}", capacity)
            async with session.post(url, json=spec, headers=headers) as r:
                body = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"creating a cohort: {r.status} {body}")
                return body["cohort_id"]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def seed_consent_forms(system: System) -> list[str]:
    headers = coordinator_headers(system)
    with httpx.Client(base_url=system.url("consent"), headers=headers, timeout=60) as client:
        return consent_seed.seed(client)


# --- the open loop -----------------------------------------------------------------------


@dataclass
class OpenLoopResult:
    offered_per_s: float
    duration_s: float
    sent: int = 0
    ok_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    send_lag_s: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)  # monotonic times
    started_at: float = 0.0
    load_ended_at: float = 0.0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def open_loop(
    rate_per_s: float,
    duration_s: float,
    send: Callable[[int, float], Awaitable[str | None]],
    *,
    grace_s: float | None = None,
) -> OpenLoopResult:
    """Call ``send(i, intended)`` at each scheduled moment, without waiting for answers.

    ``send`` returns None on success or a short error kind. Latency runs from the
    intended moment to the answer, whatever delayed the sending. With ``grace_s``, what
    has not finished that long after the last send is cancelled and counted as an error.
    """
    result = OpenLoopResult(rate_per_s, duration_s)
    loop = asyncio.get_running_loop()
    offsets = stats.schedule(rate_per_s, duration_s)
    start = loop.time() + 0.05
    result.started_at = time.monotonic() + 0.05
    tasks: list[asyncio.Task] = []

    async def one(i: int, intended: float) -> None:
        try:
            failure = await send(i, intended)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        if failure is None:
            result.ok_latencies.append(loop.time() - intended)
            result.completions.append(time.monotonic())
        else:
            result.error(failure)

    for i, offset in enumerate(offsets):
        intended = start + offset
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        result.send_lag_s.append(max(0.0, loop.time() - intended))
        tasks.append(loop.create_task(one(i, intended)))
        result.sent += 1
    result.load_ended_at = time.monotonic()
    if tasks:
        _, unfinished = await asyncio.wait(tasks, timeout=grace_s)
        for task in unfinished:  # still running ``grace_s`` after the last was sent
            task.cancel()
            result.error("unfinished")
        if unfinished:
            await asyncio.wait(unfinished)
    return result


# --- the sign-up step of the ramp ----------------------------------------------------------


def cohorts_needed(sign_ups: int, per_cohort: int) -> int:
    return max(1, math.ceil(sign_ups / per_cohort))


async def sign_up_step(
    system: System,
    session: aiohttp.ClientSession,
    cohorts: list[str],
    *,
    rate_per_s: float,
    duration_s: float,
    tag: str,
    drain_timeout_s: float,
    stable_s: float = 6.0,
) -> dict[str, Any]:
    base = system.url("registration")
    statuses: dict[str, int] = {}

    async def send(i: int, _intended: float) -> str | None:
        cohort_id = cohorts[i % len(cohorts)]
        async with session.post(
            f"{base}/cohorts/{cohort_id}/registrations",
            json=payloads.application(tag, i),
            headers={"Idempotency-Key": f"{tag}-{i}"},
        ) as r:
            body = await r.read()
            if r.status != 202:
                return f"HTTP {r.status}"
        status = _status_of(body)
        statuses[status] = statuses.get(status, 0) + 1
        return None

    result = await open_loop(rate_per_s, duration_s, send)
    depth: list[tuple[float, int]] = []
    drained, drain_s, queues = await wait_drained(
        system,
        session,
        timeout_s=drain_timeout_s,
        since=result.load_ended_at,
        samples=depth,
        stable_s=stable_s,
    )
    dead = dead_letters(queues)
    kept, why = stats.kept_up(
        dead_letters=dead,
        sent=result.sent,
        errors=result.errors,
        drained=drained,
        drain_s=drain_s,
        duration_s=duration_s,
    )
    achieved = stats.steady_rate(result.completions)
    return {
        "offered_per_s": rate_per_s,
        "duration_s": duration_s,
        "sent": result.sent,
        "achieved_per_s": None if achieved is None else round(achieved, 1),
        "latency": stats.latency_summary(result.ok_latencies, failed=result.errors),
        "errors": result.errors,
        "error_kinds": result.error_kinds,
        "statuses": statuses,
        "send_lag_p99_ms": _ms(stats.percentile(result.send_lag_s, 99)),
        "drained": drained,
        "drain_s": None if drain_s is None else round(drain_s, 1),
        "queues_not_empty": [q["name"] for q in queues if q.get("messages")],
        "dead_letters": dead,
        "depth_after_load": depth,
        "kept_up": kept,
        "why": why,
        "cohorts": len(cohorts),
    }


def _status_of(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("status", "unknown"))
    except ValueError:
        return "unreadable"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def send(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, str, int]:
    """A request's status and text, and how many times it was refused first: a 503 with
    Retry-After (admission control: nothing was done) is sent again when told, spread
    out, as a client does."""
    for refused in range(60):
        async with session.request(method, url, **kw) as r:
            status, text = r.status, await r.text()
            retry_after = r.headers.get("Retry-After")
        if status != 503 or retry_after is None:
            return status, text, refused
        await asyncio.sleep(int(retry_after) * (1 + random.random()))
    return status, text, refused


async def released_at_once(
    one: Callable[[int], Awaitable[None]], n: int, gate: asyncio.Event
) -> float:
    """``one(0)`` to ``one(n - 1)`` started, each waiting on ``gate``; then the gate
    opened at once. The seconds from the opening until the last one ended."""
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    gate.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - started
