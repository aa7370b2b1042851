"""Time-driven work: poll for what is due, claim each item, run it.

The due item is a document whose own field says when it is due (a cohort's next
hold expiry, a reminder's send time), so scheduling is part of the same write as
the state that causes it. Before running an item a replica claims it with one
conditional update of the item's ``due_claim`` ``{by, until}``, where it is free or
run out; it frees the claim when done. Two replicas never run an item at the same
moment, and a replica that dies mid-run leaves the claim to run out (``claim_s``).

The claim saves duplicate work; it is not what keeps the work correct. The work
re-reads and decides with a compare-and-set write (shared/aggregates.py), so a claim
taken early by a replica whose clock runs ahead costs a repeated decision, never a
lost or doubled change. Work that claims its items by itself (a delivery's own
``sending`` state) runs without a ``due_claim`` (``claims=None``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection

from shared import metrics
from shared.aggregates import utc_now
from shared.logs import get_logger

log = get_logger(__name__)

FindDue = Callable[[datetime], Awaitable[list[str]]]
RunDue = Callable[[str], Awaitable[None]]


class DueClaims:
    """Claims on the documents of one collection, for one process."""

    def __init__(
        self,
        collection: AsyncCollection,
        *,
        claim_s: float = 60.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.collection = collection
        self.claim_s = claim_s
        self.clock = clock
        self.owner = uuid.uuid4().hex

    async def take(self, item_id: str) -> bool:
        now = self.clock()
        taken = await self.collection.update_one(
            {
                "_id": item_id,
                "$or": [{"due_claim": None}, {"due_claim.until": {"$lte": now}}],
            },
            {
                "$set": {
                    "due_claim": {"by": self.owner, "until": now + timedelta(seconds=self.claim_s)}
                }
            },
        )
        return taken.matched_count == 1

    async def free(self, item_id: str) -> None:
        await self.collection.update_one(
            {"_id": item_id, "due_claim.by": self.owner}, {"$set": {"due_claim": None}}
        )


class DueRunner:
    def __init__(
        self,
        *,
        service: str,
        kind: str,
        find_due: FindDue,
        run: RunDue,
        claims: DueClaims | None,
        poll_s: float = 1.0,
    ) -> None:
        self.service = service
        self.kind = kind
        self.find_due = find_due
        self.run = run
        self.claims = claims
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
            if self.claims is not None and not await self.claims.take(item_id):
                continue  # another replica runs it now
            try:
                await self.run(item_id)
                ran += 1
                metrics.JOBS_RUN.labels(self.service, self.kind, "ok").inc()
            except Exception as exc:
                metrics.JOBS_RUN.labels(self.service, self.kind, "failed").inc()
                log.warning("due work failed; will retry", kind=self.kind, error=type(exc).__name__)
            finally:
                if self.claims is not None:
                    await self._free(item_id)
        return ran

    async def _free(self, item_id: str) -> None:
        try:
            await self.claims.free(item_id)  # type: ignore[union-attr]
        except Exception as exc:  # it runs out by itself
            log.warning("could not free a due claim", kind=self.kind, error=type(exc).__name__)

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
