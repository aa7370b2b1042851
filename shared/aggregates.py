"""Aggregates with an embedded outbox and inbox: one document, one conditional write per change.

An aggregate document carries, besides its state:

- ``version``: bumped by every change; each change is written on condition that it is
  still the version the change was decided on (compare-and-set);
- ``outbox``: the envelopes its changes caused, not yet published (shared/outbox.py
  publishes them in order and ``$pull``s them);
- ``inbox``: the ids of the last events applied to it, so a redelivery is a no-op.

A change is decided by a pure function of the current document (and, with a codec,
of its parsed state) and written with one ``update_one({_id, version})`` that sets
the new state, appends the events and records the applied event id. A writer that
lost the race to another process reads again and decides again; one that keeps
losing gives up with :class:`ConcurrentModification` (the API answers 409, the
broker retries a handler). Within one process, writers of one aggregate take turns,
so the only races are between processes. No clock takes part: a writer with a wrong
clock cannot overwrite a change it has not seen.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import bson
from pymongo.asynchronous.collection import AsyncCollection

from shared import metrics, tracing
from shared.decisions import Change
from shared.errors import NotFound
from shared.events import Envelope, EventData
from shared.logs import get_logger
from shared.security import FieldCipher

log = get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class AggregateNotFound(LookupError):
    pass


class ConcurrentModification(RuntimeError):
    """Other writers kept changing the aggregate first: nothing was written; try again."""


@dataclass
class Outcome:
    doc: dict[str, Any] | None
    result: Any = None
    duplicate: bool = False
    changed: bool = False
    state: Any = None  # the parsed state right after this decision (with a codec)


class StateCodec(Protocol):
    """How a store parses its documents for decisions, and writes the state back.

    ``copy`` gives a decision a state of its own to change (the parsed state is kept
    for the next decision); ``dump`` gives the fields of the state, and only what
    differs from the document is written (a map key by key, a list's new tail), so a
    large ledger costs what changed in it.
    """

    def load(self, doc: dict[str, Any]) -> Any: ...
    def copy(self, state: Any) -> Any: ...
    def dump(self, state: Any) -> dict[str, Any]: ...


Decide = Callable[[dict[str, Any], Any], "Change | None"]
# (the event, the id of the event that caused it) -> its envelope
Enveloper = Callable[[EventData, "str | None"], Envelope]
OnEvents = Callable[["AggregateStore", str], None]
# (name, *, relayed=True, **AggregateStore options) -> the store: Runtime.store in a
# service, an in-memory one in tests.
StoreFactory = Callable[..., "AggregateStore"]

# correlation id -> the trace context the aggregate's first event of that flow was
# recorded in: later events of the flow continue that trace (shared/tracing.py joined),
# whichever request or event moved it on, so one sign-up is one trace.
TRACES = "traces"
# Fields only this module and the relay write; a decision may not set them.
RESERVED = frozenset(
    {
        "_id",
        "version",
        "outbox",
        "outbox_parked",
        "inbox",
        "has_outbox",
        "updated_at",
        "relay_claim",
        "due_claim",
        TRACES,
    }
)


class AggregateStore:
    """One collection of aggregates of one kind, in one service's database."""

    def __init__(
        self,
        collection: AsyncCollection,
        *,
        service: str,
        inbox_size: int = 500,
        cipher: FieldCipher | None = None,
        codec: StateCodec | None = None,
        enveloper: Enveloper | None = None,
        conflict_budget_s: float = 30.0,
        clock: Callable[[], datetime] = utc_now,
        remember: int = 256,
    ) -> None:
        self.collection = collection
        self.service = service
        self.inbox_size = inbox_size
        self.cipher = cipher
        self.codec = codec
        self.enveloper = enveloper
        self.conflict_budget_s = conflict_budget_s
        self.clock = clock  # for updated_at only: no decision to write depends on a clock
        self.listeners: list[OnEvents] = []
        self._turns: dict[str, _Turn] = {}
        self.remember = remember
        self._known: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def name(self) -> str:
        return self.collection.name

    def key(self, aggregate_id: str) -> str:
        return f"{self.name}:{aggregate_id}"

    async def get(self, aggregate_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": aggregate_id})

    async def require(self, aggregate_id: str, field: str, message: str) -> dict[str, Any]:
        """The aggregate, or a NotFound refusal naming ``field``."""
        doc = await self.get(aggregate_id)
        if doc is None:
            raise NotFound(field, message)
        return doc

    async def create(
        self,
        doc: dict[str, Any],
        events: Sequence[Envelope] = (),
        *,
        emit: Sequence[EventData] = (),
        caused_by: str | None = None,
    ) -> None:
        """Insert a new aggregate with its first events (raises DuplicateKeyError if it exists)."""
        now = self.clock()
        envelopes, traces = self._envelopes(emit, caused_by, {})
        outbox = [self._outbox_entry(e) for e in [*events, *envelopes]]
        created = {
            **doc,
            **({TRACES: traces} if traces else {}),
            "version": 1,
            "created_at": doc.get("created_at", now),
            "updated_at": now,
            "outbox": outbox,
            "has_outbox": bool(outbox),
            "inbox": [],
        }
        await self.collection.insert_one(created)
        metrics.DB_WRITES.labels(self.service, "insert").inc()
        # Its first change here, as a rule the next thing to happen to it, needs no read.
        del created["outbox"]
        self._remember(doc["_id"], self._as_stored(created))
        if outbox:
            self._announce(doc["_id"])

    async def mutate(
        self, aggregate_id: str, decide: Decide, *, event_id: str | None = None
    ) -> Outcome:
        """Apply ``decide`` to the current document in one conditional write.

        With ``event_id``, the change applies that event: a second delivery of the same
        event returns ``duplicate=True`` and changes nothing. ``decide`` must be pure:
        it runs again when another process changed the aggregate first.
        """
        loop = asyncio.get_running_loop()
        async with self._turn(aggregate_id):
            # Counted from our turn: waiting behind this process's own writers is no conflict.
            give_up_at = loop.time() + self.conflict_budget_s
            delay = 0.002
            known = self._known.pop(aggregate_id, None)
            while True:
                if known is None:
                    doc = await self.get(aggregate_id)
                    if doc is None:
                        raise AggregateNotFound(aggregate_id)
                else:
                    doc = known
                base = self.codec.load(doc) if self.codec else None
                try:
                    outcome, update = self._decide(doc, base, decide, event_id)
                except Exception:
                    if known is None:
                        raise
                    known = None  # refused on what we remember: it may be stale, so read
                    continue
                if update is None:
                    if known is not None:
                        # Nothing to write, so no condition would tell us that what we
                        # remember is stale: decide again on a fresh read.
                        known = None
                        continue
                    self._remember(aggregate_id, doc)
                    return outcome
                written = await self.collection.update_one(
                    {"_id": aggregate_id, "version": doc["version"]}, update
                )
                metrics.DB_WRITES.labels(self.service, "update").inc()
                if written.matched_count == 1:
                    outcome.doc = self._written(doc, update)
                    self._remember(aggregate_id, outcome.doc)
                    if "outbox" in update.get("$push", {}):
                        self._announce(aggregate_id)
                    return outcome
                metrics.WRITE_CONFLICTS.labels(self.service, self.name).inc()
                if known is not None:
                    known = None  # another process wrote since we did: read, decide again
                    continue
                if loop.time() >= give_up_at:
                    log.warning(
                        "giving up on a write: the aggregate kept changing", store=self.name
                    )
                    raise ConcurrentModification(self.key(aggregate_id))
                # Jittered, so two processes that collided do not collide again in step.
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.05)

    def _as_stored(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` as the server would give them back (through BSON: milliseconds...)."""
        return bson.decode(bson.encode(values), codec_options=self.collection.codec_options)

    def _remember(self, aggregate_id: str, doc: dict[str, Any]) -> None:
        """Keep the aggregate as this process last saw it: its next change here, with
        nobody writing in between, needs no read (the version condition checks that)."""
        self._known[aggregate_id] = doc
        while len(self._known) > self.remember:
            self._known.popitem(last=False)

    def _decide(
        self, doc: dict[str, Any], base: Any, decide: Decide, event_id: str | None
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """The outcome of ``decide`` on ``doc`` and the update that writes it (None: no write).

        ``base`` (the parsed state of ``doc``) is not changed: the decision gets a copy.
        """
        if event_id is not None and event_id in doc.get("inbox", []):
            return Outcome(doc, duplicate=True, state=base), None
        state = self.codec.copy(base) if self.codec else None
        change = decide(doc, state)
        if change is None and event_id is None:
            return Outcome(doc, state=base), None
        change = change or Change()
        reserved = RESERVED & change.set.keys()
        if reserved:
            raise ValueError(f"a decision may not set {sorted(reserved)}")
        fields = {**change.set, **(self.codec.dump(state) if self.codec else {})}
        now = self.clock()
        sets, unsets, appends = changed_fields(doc, fields)
        caused = change.events or change.emit
        if not (sets or unsets or appends or caused or event_id is not None):
            return Outcome(doc, change.result, state=state), None
        update: dict[str, Any] = {
            "$set": {**sets, "version": doc["version"] + 1, "updated_at": now}
        }
        if unsets:
            update["$unset"] = dict.fromkeys(unsets, "")
        pushes: dict[str, Any] = {name: {"$each": tail} for name, tail in appends.items()}
        envelopes, traces = self._envelopes(change.emit, event_id, doc.get(TRACES) or {})
        entries = [self._outbox_entry(e) for e in [*change.events, *envelopes]]
        for flow, traceparent in traces.items():
            update["$set"][f"{TRACES}.{flow}"] = traceparent
        if entries:
            pushes["outbox"] = {"$each": entries}
            update["$set"]["has_outbox"] = True
        if event_id is not None:
            pushes["inbox"] = {"$each": [event_id], "$slice": -self.inbox_size}
        if pushes:
            update["$push"] = pushes
        return Outcome(None, change.result, changed=True, state=state), update

    def _written(self, doc: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        """``doc`` as ``update`` left it on the server, read back as a read would give it.

        The update goes through BSON first, so what is remembered has the server's
        precision (milliseconds, not microseconds). The outbox is left out: it is the
        relay's to empty, and what this process saw of it is soon stale; so are the
        relay's and due work's claims, which no decision may read.
        """
        update = self._as_stored(update)
        after = {k: v for k, v in doc.items() if k != "outbox"}
        for path, value in update.get("$set", {}).items():
            _set_path(after, path, value)
        for path in update.get("$unset", {}):
            _set_path(after, path, _MISSING)
        for name, push in update.get("$push", {}).items():
            if name == "outbox":
                continue
            items = [*after.get(name, []), *push["$each"]]
            if "$slice" in push:
                items = items[push["$slice"] :]
            after[name] = items
        return after

    @asynccontextmanager
    async def _turn(self, aggregate_id: str) -> AsyncIterator[None]:
        """Writers of one aggregate in this process go one at a time, in arrival order."""
        turn = self._turns.get(aggregate_id)
        if turn is None:
            turn = self._turns[aggregate_id] = _Turn()
        turn.waiting += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.waiting -= 1
            if turn.waiting == 0:
                self._turns.pop(aggregate_id, None)

    async def remove_published(self, aggregate_id: str, event_ids: set[str]) -> None:
        """Drop published events from the outbox (one ``$pull``; writers are not disturbed)."""
        await self.collection.update_one(
            {"_id": aggregate_id}, {"$pull": {"outbox": {"id": {"$in": sorted(event_ids)}}}}
        )
        metrics.DB_WRITES.labels(self.service, "update").inc()

    async def park(self, aggregate_id: str, entries: list[dict[str, Any]]) -> None:
        """Move outbox entries that cannot be published to ``outbox_parked`` (one update;
        an entry already moved is not moved twice)."""
        ids = [entry["id"] for entry in entries]
        await self.collection.update_one(
            {"_id": aggregate_id, "outbox.id": {"$all": ids}},
            {
                "$pull": {"outbox": {"id": {"$in": ids}}},
                "$push": {"outbox_parked": {"$each": entries}},
            },
        )

    def _envelopes(
        self, emit: Sequence[EventData], caused_by: str | None, traces: dict[str, str]
    ) -> tuple[list[Envelope], dict[str, str]]:
        """The envelopes of ``emit``, each in its flow's trace (``traces``), and the
        traces of flows this aggregate records its first event of."""
        if emit and self.enveloper is None:
            raise RuntimeError(f"{self.name}: events to emit but no enveloper for the store")
        envelopes: list[Envelope] = []
        started: dict[str, str] = {}
        for data in emit:
            envelope = self.enveloper(data, caused_by)  # type: ignore[misc]
            flow = envelope.correlationid
            kept = traces.get(flow) or started.get(flow)
            if kept is None:
                if envelope.traceparent:
                    started[flow] = envelope.traceparent
            elif not tracing.same_trace(kept, envelope.traceparent):
                with tracing.joined(kept, f"{self.name} change"):
                    traceparent = tracing.current_traceparent()
                envelope = envelope.model_copy(update={"traceparent": traceparent})
            envelopes.append(envelope)
        return envelopes, started

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

    def envelope(self, entry: dict[str, Any]) -> Envelope:
        """One outbox entry as the envelope to publish (opened if sealed)."""
        entry = dict(entry)
        sealed = entry.pop("sealed_data", None)
        if sealed is not None:
            if self.cipher is None:
                raise RuntimeError("sealed outbox entry but no cipher configured")
            entry["data"] = json.loads(self.cipher.decrypt(sealed, context=f"outbox:{entry['id']}"))
        return Envelope.model_validate(entry)

    def envelopes(self, doc: dict[str, Any]) -> list[Envelope]:
        return [self.envelope(entry) for entry in doc.get("outbox", [])]

    def _announce(self, aggregate_id: str) -> None:
        for listener in self.listeners:
            listener(self, aggregate_id)


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


def changed_fields(
    doc: dict[str, Any], fields: dict[str, Any]
) -> tuple[dict[str, Any], list[str], dict[str, list[Any]]]:
    """The ``$set``, ``$unset`` and ``$push`` that turn ``doc``'s ``fields`` into the given values.

    A field whose value is unchanged is left out; a map whose keys can be paths is
    changed key by key, and a list that only grew gets its new tail appended, so a
    ledger of a thousand entries costs the entries that changed, not the thousand.
    """
    sets: dict[str, Any] = {}
    unsets: list[str] = []
    appends: dict[str, list[Any]] = {}
    for name, value in fields.items():
        old = doc.get(name, _MISSING)
        if old == value:
            continue
        if isinstance(old, dict) and isinstance(value, dict) and old and _pathable(old, value):
            for key, item in value.items():
                if old.get(key, _MISSING) != item:
                    sets[f"{name}.{key}"] = item
            unsets += [f"{name}.{key}" for key in old if key not in value]
        elif (
            isinstance(old, list)
            and isinstance(value, list)
            and old
            and len(value) > len(old)
            and value[: len(old)] == old
        ):
            appends[name] = value[len(old) :]
        else:
            sets[name] = value
    return sets, unsets, appends


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with _MISSING, remove) a dotted path, copying the maps along it."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        child = dict(node.get(part) or {})
        node[part] = child
        node = child
    if value is _MISSING:
        node.pop(last, None)
    else:
        node[last] = value


def _pathable(*maps: dict[str, Any]) -> bool:
    return all(
        isinstance(k, str) and k and "." not in k and not k.startswith("$") for m in maps for k in m
    )


_MISSING = object()
