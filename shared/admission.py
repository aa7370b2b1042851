"""Admission control: how many requests one process works on at once, and what the rest get.

Without a bound, every request a burst brings is taken on at once: each gets a share of
the one event loop and of the database pool, all of them slow down together, latency
grows with the queue, clients time out and retry, and the retries add to the queue. With
it, a process works on at most ``max_in_flight`` requests; up to ``max_waiting`` more wait
at most ``wait_s`` for a slot, first come first served; every other request is answered
at once with 503, ``Retry-After`` and a problem document, without reading its body. A
request's time in the process is then bounded by the wait plus the work of the requests
ahead of it, whatever the offered rate; what the process cannot take is refused in
microseconds instead of timing out in minutes.

The probes and the scrape (``/healthz``, ``/readyz``, ``/metrics``) are never held back:
an operator and an orchestrator see the process, and its saturation, under any load.
Refusals are counted in ``holdspace_http_refused_total{service,reason}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import metrics
from shared.problems import problem

BYPASS = metrics.OPERATIONS_PATHS
# What a refused request is told to wait: long enough for the requests that filled the
# slots to finish, short enough that a client's retry is not a visible stall.
RETRY_AFTER_S = 1


class Admission:
    """Pure ASGI middleware: at most ``max_in_flight`` requests at once in this process.

    ``in_flight`` and ``waiting`` are what it holds now (tests and metrics read them).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_in_flight: int,
        max_waiting: int,
        wait_s: float,
        retry_after_s: int = RETRY_AFTER_S,
        bypass: frozenset[str] = BYPASS,
        refusal: Callable[[Scope, int], Response] | None = None,
    ) -> None:
        if max_in_flight < 1 or max_waiting < 0 or wait_s < 0 or retry_after_s < 1:
            raise ValueError("admission: max_in_flight, retry_after_s >= 1; the rest >= 0")
        self.app = app
        self.service = service
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.bypass = bypass
        self.refusal = refusal  # (scope, retry_after_s) -> the answer; a problem document if None
        self.in_flight = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.bypass:
            await self.app(scope, receive, send)
            return
        refused = await self._admit()
        if refused is not None:
            metrics.HTTP_REFUSED.labels(self.service, refused).inc()
            await self._refuse(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            # However the request ended: answered, failed, cancelled, client gone.
            self.in_flight -= 1
            self._slots.release()

    async def _admit(self) -> str | None:
        """None once this request holds a slot; otherwise why it gets none."""
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: taken without waiting
            return None
        if self.waiting >= self.max_waiting or self.wait_s == 0:
            return "queue_full"
        self.waiting += 1
        try:
            # The semaphore's waiters are served in order, and a slot handed over just as
            # the wait runs out is given back, never lost (asyncio.Semaphore.acquire).
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            return "wait_timeout"
        finally:
            self.waiting -= 1
        return None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.refusal is not None:
            response = self.refusal(scope, self.retry_after_s)
            response.headers["Retry-After"] = str(self.retry_after_s)
            await response(scope, receive, send)
            return
        response = problem(
            503,
            "Service Unavailable",
            f"too many requests at once; nothing was done, retry in {self.retry_after_s} s",
            retry_after=self.retry_after_s,
        )
        response.headers["Retry-After"] = str(self.retry_after_s)
        await response(scope, receive, send)
