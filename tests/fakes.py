"""In-memory stand-ins for MongoDB collections and the broker, for handler tests.

Services are built as they are in production (their AggregateStore, their use cases,
their handler registry) on :class:`MemoryCollection` instead of a server, so
idempotency, duplicates and event order can be tested with no database and no broker.
The collection understands exactly the operations the services' handler paths send
(lookups and writes by ``_id``, the conditional update of AggregateStore, equality
filters); anything else raises NotImplementedError rather than answer wrongly.
tests/compat pins the same operations against the real server.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo.errors import DuplicateKeyError

from shared import events as ev
from shared.aggregates import AggregateStore
from shared.events import Envelope
from shared.messaging import Handler

CODEC = CodecOptions(tz_aware=True, tzinfo=UTC)
_OPERATORS = ("$set", "$unset", "$push", "$pull")


@dataclass
class _Result:
    matched_count: int = 0
    modified_count: int = 0
    deleted_count: int = 0


def _stored(value: Any) -> Any:
    """As the server keeps it: through BSON (datetimes to milliseconds, tz-aware)."""
    return bson.decode(bson.encode({"v": value}), codec_options=CODEC)["v"]


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def _unset_path(doc: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.get(part, {})
    doc.pop(last, None)


class _Cursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs

    def sort(self, key: str, direction: int = 1) -> _Cursor:
        self._docs.sort(key=lambda d: (d.get(key) is None, d.get(key)), reverse=direction < 0)
        return self

    def limit(self, n: int) -> _Cursor:
        if n:
            self._docs = self._docs[:n]
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        found, self._docs = self._docs[:length] if length else self._docs, []
        return found

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self._docs:
            raise StopAsyncIteration
        return self._docs.pop(0)


class MemoryCollection:
    """One collection; ``unique`` names fields with a unique index besides ``_id``."""

    codec_options = CODEC

    def __init__(self, name: str, unique: Iterable[str] = ()) -> None:
        self.name = name
        self.unique = tuple(unique)
        self.docs: dict[Any, dict[str, Any]] = {}

    # --- reads ---------------------------------------------------------------------------

    def _matches(self, doc: dict[str, Any], flt: dict[str, Any]) -> bool:
        for key, want in flt.items():
            if key == "$or":
                if not any(self._matches(doc, branch) for branch in want):
                    return False
            elif isinstance(want, dict) and any(k.startswith("$") for k in want):
                if not set(want) <= {"$in", "$lte", "$gte", "$lt", "$ne"}:
                    raise NotImplementedError(f"filter {key}: {want}")
                value = doc.get(key)
                if "$in" in want and value not in want["$in"]:
                    return False
                # As MongoDB on a scalar field: a missing field is not equal to anything.
                if "$ne" in want and value == want["$ne"]:
                    return False
                # As MongoDB: a null or missing field is not compared.
                for op, holds in (
                    ("$lte", lambda a, b: a <= b),
                    ("$gte", lambda a, b: a >= b),
                    ("$lt", lambda a, b: a < b),
                ):
                    if op in want and (value is None or not holds(value, want[op])):
                        return False
            elif key.startswith("$") or "." in key:
                raise NotImplementedError(f"filter {key}")
            elif doc.get(key) != want:
                return False
        return True

    async def find_one(self, flt: dict[str, Any], projection: Any = None) -> dict[str, Any] | None:
        if set(flt) == {"_id"} and not isinstance(flt["_id"], dict):
            found = self.docs.get(flt["_id"])
            return copy.deepcopy(found) if found is not None else None
        for doc in self.docs.values():
            if self._matches(doc, flt):
                return copy.deepcopy(doc)
        return None

    def find(self, flt: dict[str, Any] | None = None, projection: Any = None) -> _Cursor:
        flt = flt or {}
        return _Cursor([copy.deepcopy(d) for d in self.docs.values() if self._matches(d, flt)])

    # --- writes --------------------------------------------------------------------------

    async def insert_one(self, doc: dict[str, Any]) -> None:
        doc = _stored(doc)
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"E11000 duplicate key {self.name} _id")
        for name in self.unique:
            if any(d.get(name) == doc.get(name) for d in self.docs.values()):
                raise DuplicateKeyError(f"E11000 duplicate key {self.name} {name}")
        self.docs[doc["_id"]] = doc

    async def update_one(
        self, flt: dict[str, Any], update: dict[str, Any], upsert: bool = False
    ) -> _Result:
        if (upsert and set(update) != {"$set"}) or not set(update) <= set(_OPERATORS):
            raise NotImplementedError(f"update {sorted(update)} upsert={upsert}")
        doc = self.docs.get(flt.get("_id"))
        if upsert and doc is None:
            await self.insert_one({"_id": flt["_id"], **update["$set"]})
            return _Result(matched_count=0, modified_count=0)
        if upsert and not self._matches(doc, {k: v for k, v in flt.items() if k != "_id"}):
            # As MongoDB: the upsert's insert meets the existing _id.
            raise DuplicateKeyError(f"E11000 duplicate key {self.name} _id")
        if doc is None or not self._matches(doc, {k: v for k, v in flt.items() if k != "_id"}):
            return _Result()
        update = _stored(update)
        for name in self.unique:  # as MongoDB: an update may not break a unique index
            new = update.get("$set", {}).get(name, doc.get(name))
            if any(d.get(name) == new for d in self.docs.values() if d is not doc):
                raise DuplicateKeyError(f"E11000 duplicate key {self.name} {name}")
        for path, value in update.get("$set", {}).items():
            _set_path(doc, path, value)
        for path in update.get("$unset", {}):
            _unset_path(doc, path)
        for name, push in update.get("$push", {}).items():
            items = [*doc.get(name, []), *push["$each"]]
            doc[name] = items[push["$slice"] :] if "$slice" in push else items
        for name, pull in update.get("$pull", {}).items():
            (field, cond), *_ = pull.items()
            doc[name] = [e for e in doc.get(name, []) if e.get(field) not in cond["$in"]]
        return _Result(matched_count=1, modified_count=1)

    async def update_many(self, flt: dict[str, Any], update: dict[str, Any]) -> _Result:
        """Each matching document, as ``update_one`` would change it by its id."""
        ids = [key for key, doc in self.docs.items() if self._matches(doc, flt)]
        for key in ids:
            await self.update_one({"_id": key}, update)
        return _Result(matched_count=len(ids), modified_count=len(ids))

    async def delete_many(self, flt: dict[str, Any]) -> _Result:
        gone = [key for key, doc in self.docs.items() if self._matches(doc, flt)]
        for key in gone:
            del self.docs[key]
        return _Result(deleted_count=len(gone))

    async def delete_one(self, flt: dict[str, Any]) -> _Result:
        doc = self.docs.get(flt.get("_id"))
        if doc is None or not self._matches(doc, {k: v for k, v in flt.items() if k != "_id"}):
            return _Result()
        del self.docs[doc["_id"]]
        return _Result(deleted_count=1)


class MemoryDatabase:
    """``db["name"]`` as on a real database: one collection per name, made on first use."""

    def __init__(self, unique: dict[str, Iterable[str]] | None = None) -> None:
        self._unique = unique or {}
        self.collections: dict[str, MemoryCollection] = {}

    def __getitem__(self, name: str) -> MemoryCollection:
        if name not in self.collections:
            self.collections[name] = MemoryCollection(name, self._unique.get(name, ()))
        return self.collections[name]

    def store(self, name: str, *, relayed: bool = True, **options: Any) -> AggregateStore:
        """As Runtime.store makes it (nothing relays here: MemoryBus takes the outboxes)."""
        return AggregateStore(self[name], service="test", **options)  # type: ignore[arg-type]


class MemoryBus:
    """What the outbox relay would publish: the envelopes waiting in the stores' outboxes,
    in order, each taken once."""

    def __init__(self, *stores: AggregateStore) -> None:
        self.stores = stores

    def take(self, event_type: str | None = None) -> list[Envelope]:
        """The waiting envelopes (of ``event_type``, or all), removed from the outboxes."""
        out = []
        for store in self.stores:
            for doc in store.collection.docs.values():  # type: ignore[attr-defined]
                kept = []
                for entry in doc.get("outbox", []):
                    if event_type is None or entry["type"] == event_type:
                        out.append(store.envelope(entry))
                    else:
                        kept.append(entry)
                doc["outbox"] = kept
        return out


class MemoryConsumer:
    """A service's queue as its consumer sees it: each envelope handed to the handler
    the service's registry bound for its type (``Subscriptions.bind``)."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers

    async def send(self, data: ev.EventData) -> Envelope:
        """Put ``data`` in a new envelope about its registration and deliver it."""
        envelope = ev.registration_enveloper("holdspace/test")(data, None)
        await self.deliver(envelope)
        return envelope

    async def deliver(self, envelope: Envelope) -> None:
        """Deliver ``envelope`` (again, when it was delivered before)."""
        await self.handlers[envelope.type](envelope)


def consent_signed(rid: str, **changes: Any) -> ev.ConsentSigned:
    """A consent.signed as consent publishes it (a 900.00 CNY program unless changed)."""
    values: dict[str, Any] = {
        "registration_id": rid,
        "form_id": "form-1",
        "form_version": 1,
        "text_sha256": "0" * 64,
        "signed_at": datetime.now(UTC),
    }
    return ev.ConsentSigned(**(values | changes))
