"""Aggregates with an embedded outbox and inbox: one document, one write per change.

An aggregate document carries, besides its state:

- ``version``: bumped by every change; the update is conditional on it;
- ``outbox``: the envelopes its changes caused, not yet published (the relay
  publishes them in order and removes them);
- ``inbox``: the ids of the last events applied to it, so a redelivery is a no-op.

A change is decided by a pure function of the current document (and, with a
codec, of its parsed state) and written with
one ``update_one({_id, version})`` that sets the new state, appends the events
and records the applied event id. Every change holds the aggregate's lock first
(see shared/locks.py for why FerretDB needs it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection

from shared import metrics
from shared.events import Envelope
from shared.locks import Locks
from shared.logs import get_logger
from shared.security import FieldCipher

log = get_logger(__name__)


class AggregateNotFound(LookupError):
    pass


class ConcurrentModification(RuntimeError):
    """The version changed under us: on MongoDB another writer won; try again."""


@dataclass
class Change:
    """What a decision does to an aggregate: fields to set, events caused, a result."""

    set: dict[str, Any] = field(default_factory=dict)
    events: list[Envelope] = field(default_factory=list)
    result: Any = None


@dataclass
class Outcome:
    doc: dict[str, Any] | None
    result: Any = None
    duplicate: bool = False
    changed: bool = False
    state: Any = None  # the parsed state right after this decision (with a codec)


class StateCodec(Protocol):
    """How a store keeps a parsed form of its documents across a batch of decisions.

    Parsing a large document once per batch instead of once per decision is what
    keeps a rush of changes to one aggregate linear. A decision gets its own
    ``copy`` of the state to change; it becomes the state only if the decision
    succeeds, and ``dump`` gives the fields to write once the batch is decided.
    """

    def load(self, doc: dict[str, Any]) -> Any: ...
    def copy(self, state: Any) -> Any: ...
    def dump(self, state: Any) -> dict[str, Any]: ...


Decide = Callable[[dict[str, Any], Any], "Change | None"]
OnEvents = Callable[["AggregateStore", str], None]


class AggregateStore:
    """One collection of aggregates of one kind, in one service's database.

    Changes to one aggregate queue up in the process and are written in batches:
    the first caller takes the lock, applies every queued decision in order to the
    document in memory and writes the result once (group commit). Each caller gets
    its own result or its own exception; a failed decision changes nothing.
    """

    def __init__(
        self,
        collection: AsyncCollection,
        locks: Locks,
        *,
        service: str,
        inbox_size: int = 500,
        cipher: FieldCipher | None = None,
        max_batch: int = 200,
        atomic_updates: bool = True,
        codec: StateCodec | None = None,
    ) -> None:
        self.collection = collection
        self.locks = locks
        self.service = service
        self.inbox_size = inbox_size
        self.cipher = cipher
        self.max_batch = max_batch
        self.yield_s = 0.015
        self.atomic_updates = atomic_updates
        self.codec = codec
        self.listeners: list[OnEvents] = []
        self._queues: dict[str, list[_Pending]] = {}
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return self.collection.name

    def lock_key(self, aggregate_id: str) -> str:
        return f"{self.name}:{aggregate_id}"

    def _expect(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The filter of a write: the version too where the server can compare-and-set.

        FerretDB 1.x cannot (its update is a read, then a write-back by ``_id``), so
        there the held lock alone makes the write safe, and a filter of ``_id`` alone
        keeps its fast path: any other key makes it parse every document of the
        collection (internal/backends/sqlite/query.go pushes down ``_id`` only).
        """
        if self.atomic_updates:
            return {"_id": doc["_id"], "version": doc["version"]}
        return {"_id": doc["_id"]}

    async def get(self, aggregate_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": aggregate_id})

    async def create(self, doc: dict[str, Any], events: Sequence[Envelope] = ()) -> None:
        """Insert a new aggregate with its first events (raises DuplicateKeyError if it exists)."""
        now = datetime.now(UTC)
        outbox = [self._outbox_entry(e) for e in events]
        await self.collection.insert_one(
            {
                **doc,
                "version": 1,
                "created_at": doc.get("created_at", now),
                "updated_at": now,
                "outbox": outbox,
                "has_outbox": bool(outbox),
                "inbox": [],
            }
        )
        metrics.DB_WRITES.labels(self.service, "insert").inc()
        if outbox:
            self._announce(doc["_id"])

    async def mutate(
        self, aggregate_id: str, decide: Decide, *, event_id: str | None = None
    ) -> Outcome:
        """Apply ``decide`` to the current document in one conditional write.

        With ``event_id``, the change applies that event: a second delivery of the same
        event returns ``duplicate=True`` and changes nothing. ``decide`` must be pure:
        it may run again if the write has to be retried.
        """
        return await self._enqueue(
            aggregate_id, _Pending(decide, event_id, asyncio.get_running_loop().create_future())
        )

    async def remove_published(self, aggregate_id: str, event_ids: set[str]) -> None:
        """Drop published events from the outbox, in the next write of the aggregate."""
        try:
            await self.remove_published_later(aggregate_id, event_ids, within_s=0)
        except AggregateNotFound:
            pass

    def remove_published_later(
        self, aggregate_id: str, event_ids: set[str], *, within_s: float
    ) -> asyncio.Future:
        """Drop published events with the aggregate's next write, or after ``within_s``.

        Under load the removal rides along with a write that happens anyway; when
        idle it costs one write per ``within_s`` instead of one per publish.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(None, None, loop.create_future(), event_ids)
        self._queues.setdefault(aggregate_id, []).append(pending)
        if within_s <= 0:
            self._kick(aggregate_id)
        else:
            loop.call_later(within_s, self._kick, aggregate_id)
        # A failed removal only means the events stay and go out again: mark its error
        # as seen, so asyncio does not report it as never retrieved.
        pending.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return pending.future

    async def _enqueue(self, aggregate_id: str, pending: _Pending) -> Outcome:
        self._queues.setdefault(aggregate_id, []).append(pending)
        self._kick(aggregate_id)
        return await pending.future

    def _kick(self, aggregate_id: str) -> None:
        if aggregate_id not in self._draining and self._queues.get(aggregate_id):
            self._draining.add(aggregate_id)
            task = asyncio.get_running_loop().create_task(self._drain(aggregate_id))
            self._tasks.add(task)  # a task nobody references can be collected mid-flight
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, aggregate_id: str) -> None:
        try:
            while self._queues.get(aggregate_id):
                queue = self._queues[aggregate_id]
                batch, self._queues[aggregate_id] = (
                    queue[: self.max_batch],
                    queue[self.max_batch :],
                )
                try:
                    await self._apply(aggregate_id, batch)
                except Exception as exc:
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                if self._queues.get(aggregate_id):
                    # More is queued: let another replica waiting for this aggregate's
                    # lease in first (it polls), and let this batch grow meanwhile.
                    await asyncio.sleep(self.yield_s)
        finally:
            self._draining.discard(aggregate_id)
            if not self._queues.get(aggregate_id):
                self._queues.pop(aggregate_id, None)

    async def _apply(self, aggregate_id: str, batch: list[_Pending]) -> None:
        for _ in range(3):
            async with self.locks.hold(self.lock_key(aggregate_id)) as lease:
                doc = await self.get(aggregate_id)
                if doc is None:
                    raise AggregateNotFound(aggregate_id)
                current = doc
                codec = self.codec
                state = codec.load(doc) if codec else None
                state_changed = False
                results: list[Outcome | BaseException] = []
                events: list[Envelope] = []
                sets: dict[str, Any] = {}
                inbox = list(doc.get("inbox", []))
                published: set[str] = set()
                for p in batch:
                    if p.published is not None:
                        published |= p.published
                        results.append(Outcome(current))
                        continue
                    if p.event_id is not None and p.event_id in inbox:
                        results.append(Outcome(current, duplicate=True, state=state))
                        continue
                    work = codec.copy(state) if codec else None
                    try:
                        change = p.decide(current, work)
                        reserved = _RESERVED & (change.set.keys() if change else set())
                        if reserved:
                            raise ValueError(f"a decision may not set {sorted(reserved)}")
                    except Exception as exc:  # this caller's refusal; the others go on
                        results.append(exc)
                        continue
                    if change is None and p.event_id is None:
                        results.append(Outcome(current, state=state))
                        continue
                    if change is not None and codec:
                        state, state_changed = work, True
                    change = change or Change()
                    current = {**current, **change.set}
                    sets.update(change.set)
                    events += change.events
                    if p.event_id is not None:
                        inbox.append(p.event_id)
                    results.append(Outcome(current, change.result, changed=True, state=state))
                if state_changed:
                    sets.update(codec.dump(state))
                if sets or events or published or inbox != doc.get("inbox", []):
                    update: dict[str, Any] = {
                        **sets,
                        "version": doc["version"] + 1,
                        "updated_at": datetime.now(UTC),
                    }
                    if events or published:
                        kept = [e for e in doc.get("outbox", []) if e["id"] not in published]
                        update["outbox"] = [*kept, *(self._outbox_entry(e) for e in events)]
                        update["has_outbox"] = bool(update["outbox"])
                    if inbox != doc.get("inbox", []):
                        # Capped by hand: FerretDB 1.x ignores $push with $slice (tests/compat).
                        update["inbox"] = inbox[-self.inbox_size :]
                    lease.check()
                    res = await self.collection.update_one(self._expect(doc), {"$set": update})
                    metrics.DB_WRITES.labels(self.service, "update").inc()
                    if res.matched_count != 1:
                        log.warning("aggregate changed under us; retrying", aggregate=self.name)
                        continue
                    if events:
                        self._announce(aggregate_id)
                for p, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        p.future.set_exception(result)
                    else:
                        p.future.set_result(result)
                return
        raise ConcurrentModification(self.lock_key(aggregate_id))

    def _outbox_entry(self, envelope: Envelope) -> dict[str, Any]:
        entry = envelope.model_dump(mode="json")
        if self.cipher is None:
            return entry
        # Internal events may carry contact data: at rest they are sealed like any
        # other personal field; id, type and time stay readable for operators.
        sealed = self.cipher.encrypt(json.dumps(entry["data"]), context=f"outbox:{entry['id']}")
        entry["data"] = {}
        entry["sealed_data"] = sealed
        return entry

    def envelopes(self, doc: dict[str, Any]) -> list[Envelope]:
        out = []
        for entry in doc.get("outbox", []):
            entry = dict(entry)
            sealed = entry.pop("sealed_data", None)
            if sealed is not None:
                if self.cipher is None:
                    raise RuntimeError("sealed outbox entry but no cipher configured")
                entry["data"] = json.loads(
                    self.cipher.decrypt(sealed, context=f"outbox:{entry['id']}")
                )
            out.append(Envelope.model_validate(entry))
        return out

    def _announce(self, aggregate_id: str) -> None:
        for listener in self.listeners:
            listener(self, aggregate_id)


_RESERVED = frozenset({"_id", "version", "outbox", "inbox", "has_outbox", "updated_at"})


@dataclass
class _Pending:
    decide: Decide | None
    event_id: str | None
    future: asyncio.Future
    published: set[str] | None = None  # an outbox removal from the relay
