"""The outbox relay: publishes the events aggregates carry, in order, then removes them.

Woken at once by a write (the store announces the aggregate) and also polling, so
events written by a process that died before publishing go out when any replica
next polls. To publish an aggregate's events the relay first claims it: one
conditional update sets ``relay_claim`` ``{by, until}`` where it is free or run out,
and returns the outbox. It publishes the events in order with publisher confirms,
then one update ``$pull``s what it published and frees the claim. Two replicas
therefore never publish one aggregate's events at the same moment. A relay that dies
mid-way leaves its claim to run out (``claim_s``); the next one publishes the events
again, which consumers' inboxes absorb.

The claim is the only part that reads a clock, and it only decides who publishes:
a relay with a skewed clock may publish events twice or take a claim early, but it
cannot change or lose an aggregate's state (writers never touch ``relay_claim``, and
the relay never touches anything but the claim and published events).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument

from shared import metrics
from shared.aggregates import AggregateStore, utc_now
from shared.events import Envelope
from shared.logs import get_logger
from shared.messaging import Broker, PublishError

log = get_logger(__name__)

FIRST_RETRY_S = 1.0  # after a failed publish; doubling up to 30 s
CLAIMED_RETRY_S = 0.05  # another replica holds the claim: look again soon, it frees it when done

# On every relayed store: what _poll looks for.
PENDING_OUTBOX = IndexModel([("has_outbox", ASCENDING)], name="pending_outbox")


class OutboxRelay:
    def __init__(
        self,
        broker: Broker,
        stores: list[AggregateStore],
        *,
        service: str,
        poll_s: float = 1.0,
        concurrency: int = 16,
        claim_s: float = 15.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.broker = broker
        self.stores = {s.name: s for s in stores}
        self.service = service
        self.poll_s = poll_s
        self.claim_s = claim_s
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self._hints: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._active: set[tuple[str, str]] = set()
        self._stopping = False
        # Aggregates to look at again later (failed publish, or claimed elsewhere):
        # key -> (when, delay).
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}
        for store in stores:
            store.listeners.append(self.notify)

    def notify(self, store: AggregateStore, aggregate_id: str) -> None:
        self._hints.add((store.name, aggregate_id))
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=10)
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not self._stopping:
            try:
                if loop.time() >= next_poll:
                    await self._poll()
                    next_poll = loop.time() + self.poll_s
                # Aggregates waiting out a back-off come back when it is over, without
                # waiting for the next poll.
                now = loop.time()
                due = {key for key, (at, _) in self._backoff.items() if at <= now}
                hints, self._hints = self._hints | due, set()
                self._wake.clear()
                await asyncio.gather(*(self._flush(name, agg_id) for name, agg_id in hints))
                if not self._hints:
                    wake_at = min([next_poll, *(at for at, _ in self._backoff.values())])
                    timeout = max(0.0, wake_at - loop.time())
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except TimeoutError:
                        pass
            except Exception as exc:  # keep relaying whatever went wrong once
                log.warning("outbox relay pass failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.poll_s)

    async def _poll(self) -> None:
        """Find what is pending (what a dead process left, or a wake-up missed)."""
        pending = 0
        oldest: datetime | None = None
        for store in self.stores.values():
            projection = {"_id": 1, "outbox.time": 1}
            async for doc in store.collection.find({"has_outbox": True}, projection):
                outbox = doc.get("outbox", [])
                if not outbox:
                    # Published and pulled already: clear the flag, unless an event
                    # was added meanwhile (then the condition does not hold).
                    await store.collection.update_one(
                        {"_id": doc["_id"], "outbox": {"$size": 0}}, {"$set": {"has_outbox": False}}
                    )
                    continue
                pending += len(outbox)
                for event in outbox:
                    t = datetime.fromisoformat(event["time"])
                    oldest = t if oldest is None or t < oldest else oldest
                self._hints.add((store.name, doc["_id"]))
        metrics.OUTBOX_PENDING.labels(self.service).set(pending)
        lag = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.OUTBOX_LAG.labels(self.service).set(lag)

    async def _flush(self, store_name: str, aggregate_id: str) -> None:
        key = (store_name, aggregate_id)
        loop = asyncio.get_running_loop()
        waiting = self._backoff.get(key)
        if waiting is not None and loop.time() < waiting[0]:
            return  # _run brings it back once the wait is over
        if key in self._active:
            self._hints.add(key)  # being flushed now; look again after
            return
        self._active.add(key)
        try:
            async with self._slots:
                outcome = await self._flush_one(self.stores[store_name], aggregate_id)
            if outcome == "failed":
                delay = min(30.0, (waiting[1] * 2) if waiting else FIRST_RETRY_S)
                self._backoff[key] = (loop.time() + delay, delay)
            elif outcome == "claimed":
                self._backoff[key] = (loop.time() + CLAIMED_RETRY_S, CLAIMED_RETRY_S)
            else:
                self._backoff.pop(key, None)
        finally:
            self._active.discard(key)

    async def _claim(self, store: AggregateStore, aggregate_id: str) -> dict[str, Any] | None:
        """Claim the aggregate's outbox and read it; None when another relay has it."""
        now = self.clock()
        return await store.collection.find_one_and_update(
            {
                "_id": aggregate_id,
                "$or": [
                    {"relay_claim": None},
                    {"relay_claim.until": {"$lte": now}},
                    {"relay_claim.by": self.owner},
                ],
            },
            {
                "$set": {
                    "relay_claim": {
                        "by": self.owner,
                        "until": now + timedelta(seconds=self.claim_s),
                    }
                }
            },
            projection={"outbox": 1, "relay_claim": 1},
            return_document=ReturnDocument.AFTER,
        )

    async def _flush_one(self, store: AggregateStore, aggregate_id: str) -> str:
        """Publish the aggregate's pending events: "done", "failed" or "claimed" (elsewhere)."""
        doc = await self._claim(store, aggregate_id)
        if doc is None:
            exists = await store.collection.find_one({"_id": aggregate_id}, {"_id": 1})
            return "claimed" if exists is not None else "done"
        until = doc["relay_claim"]["until"]
        published: list[str] = []
        parked: list[dict[str, Any]] = []
        failed = False
        try:
            for entry in doc.get("outbox", []):
                # Stop while the claim still has a margin: past it, another relay may
                # have taken over, and events must not go out of order.
                if self.clock() >= until - timedelta(seconds=self.claim_s / 4):
                    raise PublishError("the claim ran out while publishing")
                envelope = self._open(store, aggregate_id, entry, parked)
                if envelope is not None:
                    await self.broker.publish(envelope)
                    published.append(entry["id"])
        except PublishError as exc:
            log.warning(
                "publish failed; events stay in the outbox",
                aggregate=store.key(aggregate_id),
                error=str(exc),
            )
            failed = True
        await self._finish(store, aggregate_id, published, parked, everything=not failed)
        return "failed" if failed else "done"

    def _open(
        self,
        store: AggregateStore,
        aggregate_id: str,
        entry: dict[str, Any],
        parked: list[dict[str, Any]],
    ) -> Envelope | None:
        """The entry's envelope; None when it cannot be opened or parsed (a retired key,
        a corrupted document): it is then set aside for an operator (``ops outbox``)
        rather than blocking the aggregate's later events for ever."""
        try:
            return store.envelope(entry)
        except Exception as exc:
            log.error(
                "an outbox entry cannot be published; set aside",
                aggregate=store.key(aggregate_id),
                event_id=str(entry.get("id")),
                error=type(exc).__name__,
            )
            metrics.OUTBOX_PARKED.labels(self.service).inc()
            parked.append({**entry, "parked_at": self.clock(), "error": type(exc).__name__})
            return None

    async def _finish(
        self,
        store: AggregateStore,
        aggregate_id: str,
        published: list[str],
        parked: list[dict[str, Any]],
        *,
        everything: bool,
    ) -> None:
        """Remove what was published or set aside and free the claim, in one update while
        the claim is ours."""
        mine = {"_id": aggregate_id, "relay_claim.by": self.owner}
        done = [*published, *(entry["id"] for entry in parked)]
        aside = {"$push": {"outbox_parked": {"$each": parked}}} if parked else {}
        if everything and done:
            # Event ids are unique: an outbox of this length holding every one of them
            # holds nothing else, so emptying it drops nothing unpublished. (Its length
            # alone would not do: a relay that lost its claim may have pulled some
            # while writers appended as many.)
            emptied = await store.collection.update_one(
                {**mine, "outbox": {"$size": len(done)}, "outbox.id": {"$all": done}},
                {"$set": {"outbox": [], "has_outbox": False, "relay_claim": None}, **aside},
            )
            if emptied.matched_count == 1:
                return
        update: dict[str, Any] = {"$set": {"relay_claim": None}, **aside}
        if done:
            update["$pull"] = {"outbox": {"id": {"$in": done}}}
        freed = await store.collection.update_one(mine, update)
        if freed.matched_count == 0 and done:
            # Another relay took over after our claim ran out: the events went out all
            # the same (or cannot), so they go; its claim stays its own.
            await store.remove_published(aggregate_id, set(published))
            if parked:
                await store.park(aggregate_id, parked)
