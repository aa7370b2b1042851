"""The outbox relay: publishes the events aggregates carry, in order, then removes them.

Woken at once by a write (the store announces the aggregate) and also polling, so
events written by a process that died before publishing go out when any replica
next polls. Each aggregate's outbox is claimed with a lease (``outbox:<key>``) so
two replicas never publish the same events at the same moment; the relay keeps a
claim while it has work for the aggregate and lets it go after ``idle_s``.
Published events are removed with the aggregate's next write (or within
``remove_within_s``); until then the claim holder skips them. A crash between the
publish and the removal publishes them again, which consumers' inboxes absorb.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pymongo import ASCENDING, IndexModel

from shared import metrics
from shared.aggregates import AggregateStore
from shared.locks import Lease, LeaseLost, Locks, LockTimeout
from shared.logs import get_logger
from shared.messaging import Broker, PublishError

log = get_logger(__name__)

FIRST_RETRY_S = 1.0  # after a failed publish; doubling up to 30 s

# On every relayed store: what _poll looks for.
PENDING_OUTBOX = IndexModel([("has_outbox", ASCENDING)], name="pending_outbox")


class OutboxRelay:
    def __init__(
        self,
        broker: Broker,
        locks: Locks,
        stores: list[AggregateStore],
        *,
        service: str,
        poll_s: float = 1.0,
        concurrency: int = 16,
        idle_s: float = 2.0,
        remove_within_s: float = 0.2,
    ) -> None:
        self.broker = broker
        self.locks = locks
        self.stores = {s.name: s for s in stores}
        self.service = service
        self.poll_s = poll_s
        self._hints: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._active: set[tuple[str, str]] = set()
        self._stopping = False
        # Aggregates whose publish failed wait before the next try: key -> (when, delay).
        self._backoff: dict[tuple[str, str], tuple[float, float]] = {}
        self.idle_s = idle_s
        self.remove_within_s = remove_within_s
        self._claims: dict[tuple[str, str], Lease] = {}
        self._last_used: dict[tuple[str, str], float] = {}
        self._removing: dict[tuple[str, str], set[str]] = {}
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
        await self._release_claims(everything=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not self._stopping:
            try:
                if loop.time() >= next_poll:
                    await self._poll()
                    next_poll = loop.time() + self.poll_s
                # Aggregates whose publish failed come back when their wait is over,
                # without waiting for the next poll.
                now = loop.time()
                self._hints |= {key for key, (at, _) in self._backoff.items() if at <= now}
                hints, self._hints = self._hints, set()
                self._wake.clear()
                await asyncio.gather(*(self._flush(name, agg_id) for name, agg_id in hints))
                await self._release_claims()
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
        pending = 0
        oldest: datetime | None = None
        for store in self.stores.values():
            async for doc in store.collection.find({"has_outbox": True}, {"_id": 1, "outbox": 1}):
                pending += len(doc.get("outbox", []))
                for event in doc.get("outbox", []):
                    t = datetime.fromisoformat(event["time"])
                    oldest = t if oldest is None or t < oldest else oldest
                self._hints.add((store.name, doc["_id"]))
        metrics.OUTBOX_PENDING.labels(self.service).set(pending)
        lag = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.OUTBOX_LAG.labels(self.service).set(lag)

    async def _flush(self, store_name: str, aggregate_id: str) -> None:
        key = (store_name, aggregate_id)
        waiting = self._backoff.get(key)
        if waiting is not None and asyncio.get_running_loop().time() < waiting[0]:
            return  # _run brings it back once the wait is over
        if key in self._active:
            self._hints.add(key)  # being flushed now; look again after
            return
        self._active.add(key)
        try:
            async with self._slots:
                failed = await self._flush_one(self.stores[store_name], aggregate_id)
            if failed:
                delay = min(30.0, (waiting[1] * 2) if waiting else FIRST_RETRY_S)
                self._backoff[key] = (asyncio.get_running_loop().time() + delay, delay)
            else:
                self._backoff.pop(key, None)
        finally:
            self._active.discard(key)

    async def _claim(self, key: tuple[str, str]) -> Lease | None:
        lease = self._claims.get(key)
        if lease is not None:
            try:
                lease.check()
                return lease
            except LeaseLost:
                await self._let_go(key)
        store = self.stores[key[0]]
        try:
            lease = await self.locks.acquire(f"outbox:{store.lock_key(key[1])}")
        except LockTimeout:
            return None  # another replica is publishing these; polling looks again
        self._claims[key] = lease
        return lease

    async def _release_claims(self, everything: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        for key in list(self._claims):
            idle = now - self._last_used.get(key, 0.0) > self.idle_s
            if key not in self._active and (everything or (idle and not self._removing.get(key))):
                await self._let_go(key)

    async def _let_go(self, key: tuple[str, str]) -> None:
        lease = self._claims.pop(key, None)
        self._last_used.pop(key, None)
        if lease is not None:
            await self.locks.release(lease)

    async def _flush_one(self, store: AggregateStore, aggregate_id: str) -> bool:
        """Publish the aggregate's pending events; True when a publish failed."""
        key = (store.name, aggregate_id)
        lease = await self._claim(key)
        if lease is None:
            return False
        self._last_used[key] = asyncio.get_running_loop().time()
        # Taken before the read: an event skipped here is either still in the document
        # read below with its removal on its way, or already gone from it.
        skip = set(self._removing.get(key, ()))
        doc = await store.get(aggregate_id)
        if doc is None or not doc.get("outbox"):
            return False
        published: set[str] = set()
        failed = False
        try:
            for envelope in store.envelopes(doc):
                if envelope.id in skip:
                    continue  # published already; its removal is on its way
                lease.check()
                await self.broker.publish(envelope)
                published.add(envelope.id)
        except (PublishError, LeaseLost) as exc:
            log.warning(
                "publish failed; events stay in the outbox",
                aggregate=store.lock_key(aggregate_id),
                error=str(exc),
            )
            failed = True
        if published:
            # Looked up afresh: the set seen before the awaits may have been emptied
            # and dropped by a removal that finished meanwhile.
            self._removing.setdefault(key, set()).update(published)
            done = store.remove_published_later(
                aggregate_id, published, within_s=self.remove_within_s
            )
            done.add_done_callback(lambda _f: self._removed(key, published))
        return failed

    def _removed(self, key: tuple[str, str], ids: set[str]) -> None:
        # Removed, or the removal failed and the events stay: either way stop skipping.
        removing = self._removing.get(key)
        if removing is not None:
            removing -= ids
            if not removing:
                self._removing.pop(key, None)
