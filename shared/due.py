"""Time-driven work: poll for what is due, claim each item with a lease, run it.

The due item is a document whose own field says when it is due (a cohort's next
hold expiry, a reminder's send time), so scheduling is part of the same write as
the state that causes it. Claiming uses shared/locks.py: two replicas never run
the same item at once, and a replica that dies mid-run frees it when the lease ends.
The work itself must be idempotent (it re-reads and re-decides under the
aggregate's lock), since a claim can end between the work and its bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from shared import metrics
from shared.locks import Locks
from shared.logs import get_logger

log = get_logger(__name__)

FindDue = Callable[[datetime], Awaitable[list[str]]]
RunDue = Callable[[str], Awaitable[None]]


class DueRunner:
    def __init__(
        self,
        locks: Locks,
        *,
        service: str,
        kind: str,
        find_due: FindDue,
        run: RunDue,
        poll_s: float = 1.0,
    ) -> None:
        self.locks = locks
        self.service = service
        self.kind = kind
        self.find_due = find_due
        self.run = run
        self.poll_s = poll_s
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"due-{self.kind}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=10)
            self._task.cancel()

    async def run_once(self) -> int:
        ran = 0
        for item_id in await self.find_due(datetime.now(UTC)):
            if self._stopping.is_set():
                break
            async with self.locks.try_hold(f"due:{self.kind}:{item_id}") as lease:
                if lease is None:
                    continue
                try:
                    await self.run(item_id)
                    ran += 1
                    metrics.JOBS_RUN.labels(self.service, self.kind, "ok").inc()
                except Exception as exc:
                    metrics.JOBS_RUN.labels(self.service, self.kind, "failed").inc()
                    log.warning(
                        "due work failed; will retry", kind=self.kind, error=type(exc).__name__
                    )
        return ran

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("due poll failed", kind=self.kind, error=type(exc).__name__)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.poll_s)
            except TimeoutError:
                pass
