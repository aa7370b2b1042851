"""The database grown to 100,000 registrations, for the data-size phase of a repetition.

Real sign-ups at the system's own pace would take hours, so the run's own data is
copied instead: every document of every service's database (registrations, cohorts
and their ledgers, payments, consents, deliveries, progress, inboxes), as many times as
it takes. Each copy is a consistent world of its own: every id in it (the services'
ids are UUIDs, as strings, values or keys) is mapped to a new UUID derived from the old
one and the copy's number, so a copied registration points at its copied cohort and
its copied payment. Values of unique indexes that hold no id get the copy's number
appended. The copies are of finished work (the queues are drained first), so nothing
in them is due: they are the data a busy year leaves behind (finished deliveries in
notifications' delivery log, where it would have moved them).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bson import BSON, ObjectId
from pymongo import MongoClient
from pymongo.errors import BulkWriteError

TARGET_REGISTRATIONS = 100_000
DUPLICATE_KEY = 11000
BATCH = 1_000
MAX_BATCH_BYTES = 8_000_000
NAMESPACE = uuid.UUID("6f0c3f3e-4b7e-4c55-9a57-5d1c0a6b2e10")
UUID_IN_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# Notifications moves a finished delivery to its delivery log a while after it is done
# (sending.py, archive); the copies stand for a busy year's deliveries, long past that.
# Copied into the working set, they would be archived during the next phase's idle
# baseline, which the phase's net counts take out. So they go where they would be.
ARCHIVED = {("notifications", "deliveries"): "delivery_log"}
ARCHIVABLE = frozenset({"sent", "dropped", "cancelled"})  # notifications.domain.delivery
NOT_ARCHIVED_FIELDS = ("sealed", "outbox", "inbox", "has_outbox", "relay_claim", "due_claim")


def archived_copy(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery log's record of a copied delivery if it is finished, else None."""
    if doc.get("status") not in ARCHIVABLE or doc.get("outbox"):
        return None
    return {k: v for k, v in doc.items() if k not in NOT_ARCHIVED_FIELDS}


def copies_needed(existing: int, target: int) -> int:
    """Copies of the existing data that bring the count to at least ``target``."""
    if existing <= 0 or existing >= target:
        return 0
    return math.ceil(target / existing) - 1


def mapped_id(value: str, copy: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{value}/{copy}"))


def _text(value: str, copy: int) -> str:
    if "-" not in value:  # most strings: no UUID can be in them
        return value
    return UUID_IN_TEXT.sub(lambda m: mapped_id(m.group(0), copy), value)


def copied(value: Any, copy: int) -> Any:
    """``value`` with every UUID in it (values, keys, inside text) mapped for ``copy``."""
    if isinstance(value, str):
        return _text(value, copy)
    if isinstance(value, dict):
        return {_text(k, copy): copied(v, copy) for k, v in value.items()}
    if isinstance(value, list):
        return [copied(v, copy) for v in value]
    return value


def copied_document(doc: dict[str, Any], copy: int, unique_fields: list[str]) -> dict[str, Any]:
    out = copied(doc, copy)
    _id = doc.get("_id")
    if isinstance(_id, ObjectId):
        out["_id"] = ObjectId()
    elif out.get("_id") == _id:
        out["_id"] = f"{_id}~{copy}"
    for path in unique_fields:
        before, after = _get(doc, path), _get(out, path)
        if isinstance(after, str) and after == before:
            _set(out, path, f"{after}~{copy}")
    return out


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc[part]
    doc[last] = value


def _unique_fields(collection) -> list[str]:
    fields: list[str] = []
    for index in collection.list_indexes():
        if index.get("unique") and index["name"] != "_id_":
            fields += list(index["key"].keys())
    return fields


def _insert(coll, docs: list[dict[str, Any]], *, may_exist: bool) -> int:
    """Insert ``docs``; returns how many were. ``may_exist``: a delivery being archived as
    the originals were read was in both the working set and the log, so its copy may be
    in the log already (the same id): that one is skipped, any other error raised."""
    try:
        return len(coll.insert_many(docs, ordered=False).inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not may_exist or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return exc.details.get("nInserted", len(docs) - len(errors))


def once_each(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each document once, as last seen. The services run while the database grows: a
    cursor over a collection they change can return a document twice (a write moved it),
    and two copies of it would collide on their mapped ids."""
    return list({doc["_id"]: doc for doc in docs}.values())


def _batches(
    docs: Iterator[dict[str, Any]], size: int, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """At most ``size`` documents and about ``max_bytes`` of BSON per insert: the embedded
    server refuses a message over its 48 MB, and a consent request is about 50 KB."""
    batch: list[dict[str, Any]] = []
    weight = 0
    for doc in docs:
        batch.append(doc)
        weight += len(BSON.encode(doc))
        if len(batch) >= size or weight >= max_bytes:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


def grow(
    mongodb_url: str,
    db_prefix: str,
    *,
    target: int = TARGET_REGISTRATIONS,
    skip: tuple[str, ...] = ("raw",),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Copy every service database under ``db_prefix`` until the registration service
    holds at least ``target`` registrations. Blocking: run it in a thread."""
    started = time.monotonic()
    client: MongoClient = MongoClient(mongodb_url)
    try:
        names = [
            n
            for n in client.list_database_names()
            if n.startswith(db_prefix) and n[len(db_prefix) :] not in skip
        ]
        registrations = client[f"{db_prefix}registration"]["registrations"]
        before = registrations.count_documents({})
        copies = copies_needed(before, target)
        log(f"    {before} registrations: {copies} copies of {len(names)} databases")
        inserted: dict[str, int] = {}
        for name in names:
            db = client[name]
            for coll_name in db.list_collection_names():
                coll = db[coll_name]
                # Small batches: the embedded server does not cut a reply at its own
                # 48 MB message limit, and some documents are 50 KB.
                originals = once_each(coll.find({}, batch_size=100))
                if not originals:
                    continue
                unique = _unique_fields(coll)
                docs = (
                    copied_document(doc, k, unique)
                    for k in range(1, copies + 1)
                    for doc in originals
                )
                service = name[len(db_prefix) :]
                archive = ARCHIVED.get((service, coll_name))
                for batch in _batches(docs, BATCH):
                    records = [archived_copy(d) if archive else None for d in batch]
                    working = [d for d, r in zip(batch, records, strict=True) if r is None]
                    logged = [r for r in records if r is not None]
                    for where, part in ((coll_name, working), (archive, logged)):
                        if part:
                            key = f"{service}.{where}"
                            added = _insert(db[where], part, may_exist=where == archive)
                            inserted[key] = inserted.get(key, 0) + added
                log(f"    {service}.{coll_name}: {len(originals) * copies} documents copied")
        after = registrations.count_documents({})
    finally:
        client.close()
    seconds = time.monotonic() - started
    total = sum(inserted.values())
    return {
        "target": target,
        "registrations_before": before,
        "registrations_after": after,
        "copies": copies,
        "documents_inserted": total,
        "by_collection": inserted,
        "seconds": round(seconds, 1),
        "documents_per_s": round(total / seconds, 1) if seconds else None,
    }
