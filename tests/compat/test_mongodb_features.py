"""Every MongoDB feature Holdspace relies on, pinned against the live server.

Runs PyMongo's AsyncMongoClient against whatever ``mongodb_url`` gives: the embedded
server (mongo-java-server 1.47.0 behind deploy/embedded-mongo) on our machines,
MongoDB where a Docker engine or MONGODB_URL provides one. Every test here must
pass on both; none is expected to fail anywhere.

What the embedded server lacks that a real MongoDB has (measured 2026-12-04 with
PyMongo 4.20; the code relies on none of it, and this is the one list of it):

================================  ============================================
MongoDB feature                   mongo-java-server 1.47.0 (our launcher)
================================  ============================================
wire version, hello               reports wire 8 and has no ``hello``; the
                                  launcher declares 6.0 / wire 17 (PyMongo 4.20
                                  refuses < 9) and drivers fall back to isMaster
sessions, transactions,           none: "Sessions are not supported by this
retryable writes                  deployment"; writes are not retried by the
                                  driver (Holdspace's idempotent writes are)
secondary (non-unique) indexes    accepted and listed, never used: a query on any
                                  field but ``_id`` or a unique key reads every
                                  document. Polls (due work, the relay's look for
                                  pending events, operators' views) pay that;
                                  writes do not (next line)
a filter of ``_id`` and more      stock reads every document; the launcher looks
                                  the document up by ``_id`` and checks the rest
                                  (IdFirstPlanner), so a compare-and-set costs one
                                  document (pinned below by scannedObjects)
explain                           no such command (scannedObjects is kept by the
                                  launcher instead, for the planner's decisions)
replies under concurrent writes   stock encodes live documents after releasing its
                                  lock (a findAndModify post-image could include
                                  another write); the launcher snapshots replies
                                  under a read/write lock (pinned below)
durability                        stock H2 store commits once a second, and
                                  serializes documents with Java serialization;
                                  the launcher keeps the memory store and a
                                  journal of the commands applied, written before
                                  each reply (tests/integration/
                                  test_embedded_mongo.py); no fsync: it survives
                                  kill -9, not a power cut
binary subtypes 3-8               the server drops the connection; subtype 128
                                  reads back as 0 (Holdspace stores subtype 0
                                  only, a payment QR code image; sealed values
                                  are text)
update pipelines (``[{$set}]``)   refused
change streams                    refused
TTL and text indexes, collation,  accepted and ignored
``$jsonSchema`` validators
replication, write concern        one node: ``w: majority`` is accepted and
                                  means this node
================================  ============================================
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

CONCURRENT_CALLERS = 300
SEATS = 8


def at(minutes: int) -> datetime:
    # Millisecond precision: BSON dates have no microseconds.
    return datetime(2026, 12, 2, 11, 30, tzinfo=UTC) + timedelta(minutes=minutes)


SAMPLE = {
    "when": at(0),
    "nested": {"level1": {"level2": {"value": "deep", "count": 3}}},
    "sessions": [
        {"starts_at": at(0), "ends_at": at(90), "tz": "Asia/Shanghai"},
        {"starts_at": at(7 * 24 * 60), "ends_at": at(7 * 24 * 60 + 90), "tz": "Asia/Shanghai"},
    ],
    "blob": bytes(range(256)),  # stored as BSON binary subtype 0, read back as bytes
    "money": {"amount_minor": 90000, "currency": "CNY"},
    "flag": True,
    "nothing": None,
    "big": 2**53,
    "unicode": "支持小组 — support",
}


async def test_insert_round_trip_keeps_types(db) -> None:
    await db.docs.insert_one({"_id": "a", **SAMPLE})
    got = await db.docs.find_one({"_id": "a"})
    assert got == {"_id": "a", **SAMPLE}
    assert got["when"].tzinfo is not None
    assert isinstance(got["blob"], bytes) and got["blob"] == bytes(range(256))


async def test_set_round_trip_keeps_types(db) -> None:
    await db.docs.insert_one({"_id": "a"})
    await db.docs.update_one({"_id": "a"}, {"$set": SAMPLE})
    assert await db.docs.find_one({"_id": "a"}) == {"_id": "a", **SAMPLE}


async def test_update_operators_keep_types(db) -> None:
    await db.docs.insert_one({"_id": "a", "n": 1, "items": [], "gone": "x", "low": at(10)})
    await db.docs.update_one(
        {"_id": "a"},
        {
            "$inc": {"n": 2, "new_counter": 1},
            "$push": {"items": {"id": "i1", "at": at(1), "blob": b"\x01\x02"}},
            "$unset": {"gone": ""},
            "$min": {"low": at(5)},
            "$max": {"high": at(20)},
            "$setOnInsert": {"ignored": True},
        },
    )
    got = await db.docs.find_one({"_id": "a"})
    assert got["n"] == 3 and got["new_counter"] == 1
    assert got["items"] == [{"id": "i1", "at": at(1), "blob": b"\x01\x02"}]
    assert "gone" not in got and "ignored" not in got
    assert got["low"] == at(5) and got["high"] == at(20)


async def test_upsert_on_unique_key_inserts_once(db) -> None:
    for _ in range(2):
        await db.docs.update_one(
            {"_id": "k"}, {"$setOnInsert": {"created": at(0)}, "$inc": {"hits": 1}}, upsert=True
        )
    assert await db.docs.find_one({"_id": "k"}) == {"_id": "k", "created": at(0), "hits": 2}


async def test_unique_index_refuses_duplicate(db) -> None:
    await db.regs.create_index([("cohort_id", ASCENDING), ("email_hash", ASCENDING)], unique=True)
    await db.regs.insert_one({"cohort_id": "c1", "email_hash": "h1"})
    await db.regs.insert_one({"cohort_id": "c2", "email_hash": "h1"})
    with pytest.raises(DuplicateKeyError):
        await db.regs.insert_one({"cohort_id": "c1", "email_hash": "h1"})
    assert await db.regs.count_documents({}) == 2


async def test_unique_index_under_concurrent_inserts_has_one_winner(db) -> None:
    await db.keys.create_index([("scope", ASCENDING), ("key", ASCENDING)], unique=True)

    async def insert(i: int) -> bool:
        try:
            await db.keys.insert_one({"scope": "cohort", "key": "seat-1", "by": i})
            return True
        except DuplicateKeyError:
            return False

    wins = await asyncio.gather(*(insert(i) for i in range(CONCURRENT_CALLERS)))
    assert sum(wins) == 1
    assert await db.keys.count_documents({}) == 1


async def test_unique_index_refuses_an_update_and_concurrent_updates_have_one_winner(db) -> None:
    # Verifying an email address moves a registration's dedupe_key from its own
    # ("unverified:<id>") to the cohort's one key for the address: the first wins.
    await db.regs.create_index([("dedupe_key", ASCENDING)], unique=True)
    ids = [f"r{i}" for i in range(CONCURRENT_CALLERS)]
    await db.regs.insert_many([{"_id": r, "dedupe_key": f"unverified:{r}"} for r in ids])

    async def verify(rid: str) -> bool:
        try:
            await db.regs.update_one(
                {"_id": rid, "verified_at": None},
                {"$set": {"dedupe_key": "c1:h1", "verified_at": True}},
            )
            return True
        except DuplicateKeyError:
            return False

    wins = await asyncio.gather(*(verify(r) for r in ids))
    assert sum(wins) == 1
    assert await db.regs.count_documents({"dedupe_key": "c1:h1"}) == 1
    assert await db.regs.count_documents({"verified_at": None}) == CONCURRENT_CALLERS - 1


async def test_delete_one_under_concurrency_has_one_winner(db) -> None:
    await db.claims.insert_one({"_id": "job-1"})
    counts = await asyncio.gather(
        *(db.claims.delete_one({"_id": "job-1"}) for _ in range(CONCURRENT_CALLERS))
    )
    assert sum(r.deleted_count for r in counts) == 1


async def test_conditional_find_one_and_update_has_exactly_capacity_winners(db) -> None:
    await db.cohorts.insert_one({"_id": "c", "held": 0, "holders": []})

    async def take(i: int) -> dict | None:
        return await db.cohorts.find_one_and_update(
            {"_id": "c", "held": {"$lt": SEATS}, "holders.rid": {"$ne": f"r{i}"}},
            {"$inc": {"held": 1}, "$push": {"holders": {"rid": f"r{i}"}}},
            return_document=ReturnDocument.AFTER,
        )

    results = await asyncio.gather(*(take(i) for i in range(CONCURRENT_CALLERS)))
    winners = [r for r in results if r is not None]
    final = await db.cohorts.find_one({"_id": "c"})
    # Every caller told "you won" must be in the ledger, and the ledger is capped.
    assert final["held"] == len(final["holders"]) == SEATS
    assert len(winners) == SEATS
    # Each winner is handed the document as its own update left it, not a later one.
    assert sorted(w["held"] for w in winners) == list(range(1, SEATS + 1))
    assert all(len(w["holders"]) == w["held"] for w in winners)


async def test_concurrent_pushes_to_one_document_are_all_kept(db) -> None:
    """The embedded outbox appends events from concurrent writers: none may vanish."""
    await db.aggs.insert_one({"_id": "a", "outbox": []})
    await asyncio.gather(
        *(
            db.aggs.update_one({"_id": "a"}, {"$push": {"outbox": {"id": f"e{i}"}}})
            for i in range(CONCURRENT_CALLERS)
        )
    )
    final = await db.aggs.find_one({"_id": "a"})
    assert len(final["outbox"]) == CONCURRENT_CALLERS


async def test_one_connection_serializes_conditional_updates(mongodb_url: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongodb_url, maxPoolSize=1)
    try:
        coll = client[f"test_serial_{id(client)}"].c
        await coll.insert_one({"_id": "c", "held": 0})
        results = await asyncio.gather(
            *(
                coll.update_one({"_id": "c", "held": {"$lt": SEATS}}, {"$inc": {"held": 1}})
                for _ in range(CONCURRENT_CALLERS)
            )
        )
        assert sum(r.modified_count for r in results) == SEATS
        assert (await coll.find_one({"_id": "c"}))["held"] == SEATS
    finally:
        await client.drop_database(coll.database.name)
        await client.close()


WAITLIST = [{"rid": f"r{i}", "seq": i + 1, "at": at(i)} for i in range(3)]


async def test_push_and_pull_exact_subdocuments(db) -> None:
    await db.cohorts.insert_one({"_id": "c", "waitlist": []})
    for entry in WAITLIST:
        await db.cohorts.update_one({"_id": "c"}, {"$push": {"waitlist": entry}})
    await db.cohorts.update_one({"_id": "c"}, {"$pull": {"waitlist": WAITLIST[1]}})
    got = await db.cohorts.find_one({"_id": "c"})
    assert got["waitlist"] == [WAITLIST[0], WAITLIST[2]]


async def test_push_each_keeps_order_and_pull_all_removes_exact_entries(db) -> None:
    """The embedded outbox: append several events in order, remove the published ones."""
    await db.aggs.insert_one({"_id": "a", "outbox": [], "inbox": []})
    events = [{"id": f"e{i}", "type": "t", "at": at(i)} for i in range(4)]
    await db.aggs.update_one(
        {"_id": "a", "inbox": {"$ne": "ev-in-1"}},
        {"$push": {"outbox": {"$each": events}, "inbox": "ev-in-1"}},
    )
    await db.aggs.update_one({"_id": "a"}, {"$pullAll": {"outbox": events[:2]}})
    got = await db.aggs.find_one({"_id": "a"})
    assert [e["id"] for e in got["outbox"]] == ["e2", "e3"]
    assert got["inbox"] == ["ev-in-1"]


async def test_pull_by_condition_on_subdocuments(db) -> None:
    await db.cohorts.insert_one({"_id": "c", "waitlist": WAITLIST})
    await db.cohorts.update_one({"_id": "c"}, {"$pull": {"waitlist": {"rid": "r1"}}})
    assert (await db.cohorts.find_one({"_id": "c"}))["waitlist"] == [WAITLIST[0], WAITLIST[2]]


async def test_pull_with_in_on_scalars(db) -> None:
    await db.aggs.insert_one({"_id": "a", "inbox": ["x", "y", "z"]})
    await db.aggs.update_one({"_id": "a"}, {"$pull": {"inbox": {"$in": ["x", "z"]}}})
    assert (await db.aggs.find_one({"_id": "a"}))["inbox"] == ["y"]


async def test_push_with_slice_caps_the_inbox(db) -> None:
    await db.aggs.insert_one({"_id": "a", "inbox": []})
    for i in range(6):
        await db.aggs.update_one(
            {"_id": "a"}, {"$push": {"inbox": {"$each": [f"ev{i}"], "$slice": -3}}}
        )
    assert (await db.aggs.find_one({"_id": "a"}))["inbox"] == ["ev3", "ev4", "ev5"]


async def test_ne_and_nin_on_arrays(db) -> None:
    await db.aggs.insert_many(
        [
            {"_id": "a", "inbox": ["e1", "e2"], "holders": [{"rid": "r1"}]},
            {"_id": "b", "inbox": [], "holders": []},
        ]
    )
    # The inbox guard: a document that already applied e1 does not match.
    assert [d["_id"] async for d in db.aggs.find({"inbox": {"$ne": "e1"}})] == ["b"]
    assert [d["_id"] async for d in db.aggs.find({"inbox": {"$nin": ["e2", "e9"]}})] == ["b"]
    assert [d["_id"] async for d in db.aggs.find({"holders.rid": {"$ne": "r1"}})] == ["b"]
    assert [d["_id"] async for d in db.aggs.find({"holders.rid": {"$nin": ["r1"]}})] == ["b"]
    # The relay's query: documents with pending events.
    assert [d["_id"] async for d in db.aggs.find({"inbox": {"$ne": []}})] == ["a"]
    applied = await db.aggs.update_one(
        {"_id": "a", "inbox": {"$ne": "e1"}}, {"$push": {"inbox": "e1"}}
    )
    assert applied.matched_count == 0


async def test_dot_notation_updates_nested_fields(db) -> None:
    await db.docs.insert_one({"_id": "a", "lease": {"owner": None, "until": at(0)}, "stats": {}})
    await db.docs.update_one(
        {"_id": "a", "lease.owner": None},
        {"$set": {"lease.owner": "relay-1", "lease.until": at(5)}, "$inc": {"stats.sent": 1}},
    )
    got = await db.docs.find_one({"_id": "a"})
    assert got["lease"] == {"owner": "relay-1", "until": at(5)}
    assert got["stats"] == {"sent": 1}
    unchanged = await db.docs.update_one(
        {"_id": "a", "lease.owner": None}, {"$set": {"lease.owner": "relay-2"}}
    )
    assert unchanged.matched_count == 0
    await db.docs.update_one({"_id": "a"}, {"$unset": {"lease.owner": ""}})
    assert "owner" not in (await db.docs.find_one({"_id": "a"}))["lease"]


async def test_sort_and_range_queries_on_datetimes(db) -> None:
    await db.jobs.create_index([("due_at", ASCENDING)])
    await db.jobs.insert_many([{"_id": f"j{i}", "due_at": at(i * 10)} for i in range(6)])
    due = [d["_id"] async for d in db.jobs.find({"due_at": {"$lte": at(25)}}).sort("due_at", 1)]
    assert due == ["j0", "j1", "j2"]
    window = db.jobs.find({"due_at": {"$gt": at(10), "$lt": at(50)}}).sort("due_at", DESCENDING)
    assert [d["_id"] async for d in window] == ["j4", "j3", "j2"]
    first = await db.jobs.find_one({"due_at": {"$gte": at(0)}}, sort=[("due_at", ASCENDING)])
    assert first["_id"] == "j0"


async def test_lease_claim_with_or_on_expired_or_missing(db) -> None:
    """A due-job claim: free (no lease) or lease expired, and due."""
    await db.jobs.insert_many(
        [
            {"_id": "free", "due_at": at(0), "lease_until": None},
            {"_id": "expired", "due_at": at(0), "lease_until": at(1)},
            {"_id": "held", "due_at": at(0), "lease_until": at(100)},
        ]
    )
    now = at(50)
    query = {"due_at": {"$lte": now}, "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
    claimable = sorted([d["_id"] async for d in db.jobs.find(query)])
    assert claimable == ["expired", "free"]


async def test_find_one_and_update_returns_before_or_after(db) -> None:
    await db.docs.insert_one({"_id": "a", "n": 1})
    before = await db.docs.find_one_and_update({"_id": "a"}, {"$inc": {"n": 1}})
    after = await db.docs.find_one_and_update(
        {"_id": "a"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
    )
    missing = await db.docs.find_one_and_update({"_id": "zz"}, {"$inc": {"n": 1}})
    assert (before["n"], after["n"], missing) == (1, 3, None)


async def test_projection_and_count(db) -> None:
    await db.docs.insert_many([{"_id": i, "secret": "x", "status": "s"} for i in range(5)])
    got = await db.docs.find_one({"_id": 1}, {"secret": 0})
    assert got == {"_id": 1, "status": "s"}
    assert await db.docs.count_documents({"status": "s"}) == 5


async def test_write_concern_majority_is_accepted(mongo_client: AsyncMongoClient, db) -> None:
    coll = db.get_collection("wc")
    assert mongo_client.write_concern.document == {"w": "majority"}
    result = await coll.insert_one({"_id": 1})
    assert result.acknowledged


# --- what the services' stores rely on ---------------------------------------------


async def test_creating_existing_indexes_one_at_a_time_is_idempotent(db) -> None:
    specs = [IndexModel([("a", ASCENDING)], name="by_a"), IndexModel([("b", ASCENDING)], name="b")]
    for _ in range(2):
        for spec in specs:
            await db.things.create_indexes([spec])
    names = {i["name"] async for i in await db.things.list_indexes()}
    assert {"by_a", "b"} <= names


async def test_recreating_several_existing_indexes_in_one_call(db) -> None:
    # shared/mongo.ensure_indexes declares a collection's indexes in one call, at every start.
    specs = [IndexModel([("a", ASCENDING)], name="by_a"), IndexModel([("b", ASCENDING)], name="b")]
    await db.things.create_indexes(specs)
    await db.things.create_indexes(specs)


async def test_map_keyed_by_uuid_round_trips_and_is_replaced_whole(db) -> None:
    # A cohort's ledger is a map from registration id (a UUID, with dashes) to entry.
    rid = "4a0c1b27-3d99-4736-92db-c5ad5fe1cb7f"
    entry = {"status": "pending_review", "since": at(0), "expires_at": None}
    await db.c.insert_one({"_id": "c1", "version": 1, "entries": {rid: entry}, "waitlist": []})
    entries = {rid: {**entry, "status": "confirmed"}, "other-id": entry}
    res = await db.c.update_one(
        {"_id": "c1", "version": 1}, {"$set": {"entries": entries, "version": 2}}
    )
    assert res.matched_count == 1
    stale = await db.c.update_one({"_id": "c1", "version": 1}, {"$set": {"version": 3}})
    assert stale.matched_count == 0
    doc = await db.c.find_one({"_id": "c1"}, {"waitlist": 0})
    assert doc["entries"][rid]["status"] == "confirmed"
    assert set(doc["entries"]) == {rid, "other-id"} and "waitlist" not in doc


async def test_delete_conditioned_on_the_version(db) -> None:
    # How notifications archives a delivery: only if nothing changed it since it was read.
    await db.d.insert_one({"_id": "d1", "version": 3})
    stale = await db.d.delete_one({"_id": "d1", "version": 2})
    current = await db.d.delete_one({"_id": "d1", "version": 3})
    assert (stale.deleted_count, current.deleted_count) == (0, 1)


async def test_in_on_ids_and_boolean_flag_queries(db) -> None:
    await db.r.insert_many([{"_id": f"r{i}", "has_outbox": i % 2 == 0} for i in range(6)])
    picked = [d["_id"] async for d in db.r.find({"_id": {"$in": ["r1", "r4", "zz"]}})]
    flagged = sorted([d["_id"] async for d in db.r.find({"has_outbox": True}, {"_id": 1})])
    assert sorted(picked) == ["r1", "r4"]
    assert flagged == ["r0", "r2", "r4"]


async def test_a_value_in_an_array_or_map_is_replaced_only_if_unchanged(db) -> None:
    # How reseal rewrites one sealed value (shared/reseal.py): by its path through array
    # indexes and map keys (a registration id), on condition that it and the version
    # are still what it read.
    rid = "0b6c1c9e-2f7d-4f7e-9b1a-3c2d1e0f9a8b"
    await db.a.insert_one(
        {
            "_id": "c1",
            "version": 4,
            "manual": [{"why": "old-0"}, {"why": "old-1"}],
            "entries": {rid: {"history": [{"why": "old-h"}]}},
        }
    )
    paths = {"manual.1.why": "new-1", f"entries.{rid}.history.0.why": "new-h"}
    stale = await db.a.update_one(
        {"_id": "c1", "version": 3, "manual.1.why": "old-1"}, {"$set": paths}
    )
    moved = await db.a.update_one(
        {"_id": "c1", "version": 4, "manual.1.why": "someone-else"}, {"$set": paths}
    )
    done = await db.a.update_one(
        {
            "_id": "c1",
            "version": 4,
            "manual.1.why": "old-1",
            f"entries.{rid}.history.0.why": "old-h",
        },
        {"$set": paths, "$inc": {"version": 1}},
    )
    assert (stale.modified_count, moved.modified_count, done.modified_count) == (0, 0, 1)
    doc = await db.a.find_one({"_id": "c1"})
    assert [m["why"] for m in doc["manual"]] == ["old-0", "new-1"] and doc["version"] == 5
    assert doc["entries"][rid]["history"][0]["why"] == "new-h"


async def test_in_on_a_field_with_another_condition_skips_null_and_missing(db) -> None:
    # How payments lists a scoped coordinator's cases: their programs only, never a
    # case whose program is unknown (None, or from before cases had one).
    await db.c.insert_many(
        [
            {"_id": "a1", "program_id": "a", "status": "open"},
            {"_id": "a2", "program_id": "a", "status": "paid"},
            {"_id": "b1", "program_id": "b", "status": "open"},
            {"_id": "n1", "program_id": None, "status": "open"},
            {"_id": "m1", "status": "open"},
        ]
    )
    query = {"status": "open", "program_id": {"$in": ["a", "c"]}}
    assert [d["_id"] async for d in db.c.find(query)] == ["a1"]
    assert await db.c.count_documents({"program_id": {"$in": ["a", "b"]}}) == 3


async def test_descending_sort_on_string_ids_with_limit_finds_the_tail(db) -> None:
    # The consent chain's records are keyed by a zero-padded sequence number.
    await db.chain.insert_many([{"_id": f"{n:012d}", "n": n} for n in (3, 1, 12, 7)])
    tail = await db.chain.find({}).sort("_id", DESCENDING).limit(1).to_list()
    assert [d["n"] for d in tail] == [12]


async def test_equality_on_two_fields(db) -> None:
    await db.req.insert_many(
        [
            {"_id": "a", "status": "signed", "form": "f1"},
            {"_id": "b", "status": "signed", "form": "f2"},
            {"_id": "c", "status": "open", "form": "f1"},
        ]
    )
    found = [d["_id"] async for d in db.req.find({"status": "signed", "form": "f1"})]
    assert found == ["a"]


async def test_lte_on_datetimes_skips_nulls_and_missing_fields(db) -> None:
    await db.due.insert_many(
        [
            {"_id": "past", "due_at": at(-5)},
            {"_id": "future", "due_at": at(5)},
            {"_id": "none", "due_at": None},
            {"_id": "missing"},
        ]
    )
    found = [d["_id"] async for d in db.due.find({"due_at": {"$lte": at(0)}})]
    assert found == ["past"]


async def test_equality_with_a_sort_on_another_field(db) -> None:
    await db.d.insert_many(
        [
            {"_id": "a", "status": "failed", "failed_at": at(3)},
            {"_id": "b", "status": "sent", "failed_at": at(1)},
            {"_id": "c", "status": "failed", "failed_at": at(1)},
        ]
    )
    found = [d["_id"] async for d in db.d.find({"status": "failed"}).sort("failed_at", 1)]
    assert found == ["c", "a"]


async def test_replace_one_with_upsert_on_id(db) -> None:
    first = await db.r.replace_one({"_id": "k"}, {"v": 1}, upsert=True)
    second = await db.r.replace_one({"_id": "k"}, {"v": 2}, upsert=True)
    assert first.upserted_id == "k" and second.matched_count == 1
    assert await db.r.find_one({"_id": "k"}) == {"_id": "k", "v": 2}


async def test_dotted_inclusion_projection_into_a_map(db) -> None:
    # How registration reads one entry of a cohort's ledger without the rest.
    rid = "4a0c1b27-3d99-4736-92db-c5ad5fe1cb7f"
    await db.c.insert_one(
        {"_id": "c", "entries": {rid: {"status": "waitlisted"}, "x": {"status": "held"}}}
    )
    doc = await db.c.find_one({"_id": "c"}, {f"entries.{rid}": 1, "waitlist": 1})
    assert doc == {"_id": "c", "entries": {rid: {"status": "waitlisted"}}}


async def test_list_collection_names_and_limit(db) -> None:
    await db.one.insert_many([{"_id": i} for i in range(5)])
    await db.two.insert_one({"_id": 1})
    assert {"one", "two"} <= set(await db.list_collection_names())
    assert len(await db.one.find({}).limit(2).to_list()) == 2


async def test_compound_index_and_equality_with_a_date_range(db) -> None:
    await db.cases.create_indexes([IndexModel([("status", 1), ("expires_at", 1)], name="due")])
    await db.cases.insert_many(
        [
            {"_id": "a", "status": "requested", "expires_at": at(-1)},
            {"_id": "b", "status": "requested", "expires_at": at(1)},
            {"_id": "c", "status": "confirmed", "expires_at": at(-1)},
        ]
    )
    due = [
        d["_id"]
        async for d in db.cases.find({"status": "requested", "expires_at": {"$lte": at(0)}})
    ]
    assert due == ["a"]
    assert "due" in {i["name"] async for i in await db.cases.list_indexes()}


# --- what the compare-and-set write, the relay and due claims rely on (shared/) ------------


async def test_one_compare_and_set_update_sets_paths_in_a_map_and_appends_to_arrays(db) -> None:
    """shared/aggregates.py: one update sets changed map entries by path, unsets removed
    ones, appends to a list, appends events and caps the inbox, if the version holds."""
    rid, gone = "4a0c1b27-3d99-4736-92db-c5ad5fe1cb7f", "9f1c7d55-0c55-4b8e-9d7c-1c2f0e0c4b11"
    await db.c.insert_one(
        {
            "_id": "c1",
            "version": 4,
            "entries": {gone: {"status": "held"}, "keep": {"status": "held"}},
            "waitlist": ["w1"],
            "outbox": [{"id": "e0"}],
            "inbox": ["i1", "i2", "i3"],
        }
    )
    update = {
        "$set": {f"entries.{rid}": {"status": "waitlisted", "since": at(1)}, "version": 5},
        "$unset": {f"entries.{gone}": ""},
        "$push": {
            "waitlist": {"$each": ["w2", "w3"]},
            "outbox": {"$each": [{"id": "e1"}, {"id": "e2"}]},
            "inbox": {"$each": ["i4"], "$slice": -3},
        },
    }
    stale = await db.c.update_one({"_id": "c1", "version": 3}, update)
    current = await db.c.update_one({"_id": "c1", "version": 4}, update)
    assert (stale.matched_count, current.matched_count) == (0, 1)
    doc = await db.c.find_one({"_id": "c1"})
    assert doc["entries"] == {
        "keep": {"status": "held"},
        rid: {"status": "waitlisted", "since": at(1)},
    }
    assert doc["waitlist"] == ["w1", "w2", "w3"]
    assert [e["id"] for e in doc["outbox"]] == ["e0", "e1", "e2"]
    assert doc["inbox"] == ["i2", "i3", "i4"] and doc["version"] == 5


async def test_compare_and_set_from_many_connections_loses_no_update(mongodb_url: str) -> None:
    clients = [AsyncMongoClient(mongodb_url, tz_aware=True) for _ in range(4)]
    coll = [c[f"test_cas_{id(clients)}"].aggs for c in clients]
    try:
        await coll[0].insert_one({"_id": "a", "version": 1, "n": 0})

        async def increment(k: int) -> int:
            attempts = 0
            while True:
                attempts += 1
                doc = await coll[k % 4].find_one({"_id": "a"})
                done = await coll[k % 4].update_one(
                    {"_id": "a", "version": doc["version"]},
                    {"$set": {"n": doc["n"] + 1, "version": doc["version"] + 1}},
                )
                if done.matched_count == 1:
                    return attempts

        attempts = await asyncio.gather(*(increment(k) for k in range(120)))
        final = await coll[0].find_one({"_id": "a"})
        assert final["n"] == 120 and final["version"] == 121
        assert sum(attempts) > 120, "the writers never raced: the test proves nothing"
    finally:
        await clients[0].drop_database(coll[0].database.name)
        for c in clients:
            await c.close()


async def test_an_update_by_id_and_version_examines_one_document(
    mongo_client: AsyncMongoClient, db
) -> None:
    """A compare-and-set must cost the same however large its collection grows.

    Read from serverStatus ``metrics.queryExecutor.scannedObjects`` (MongoDB's count of
    documents examined; the embedded server's launcher keeps it for what it plans).
    """
    await db.big.insert_many([{"_id": f"d{i:05d}", "version": 1} for i in range(5000)])

    async def scanned() -> int:
        status = await mongo_client.admin.command("serverStatus")
        return int(status["metrics"]["queryExecutor"]["scannedObjects"])

    before = await scanned()
    for i in range(50):
        done = await db.big.update_one(
            {"_id": f"d{i * 97:05d}", "version": 1}, {"$set": {"version": 2}}
        )
        assert done.matched_count == 1
    missed = await db.big.update_one({"_id": "d00000", "version": 1}, {"$set": {"version": 3}})
    claimed = await db.big.find_one_and_update(
        {"_id": "d00001", "$or": [{"claim": None}, {"claim.until": {"$lte": at(0)}}]},
        {"$set": {"claim": {"by": "me", "until": at(5)}}},
    )
    examined = await scanned() - before
    assert missed.matched_count == 0 and claimed is not None
    assert examined <= 3 * 52, f"{examined} documents examined for 52 writes by _id"


async def test_a_claim_on_a_free_missing_or_run_out_field(db) -> None:
    """shared/outbox.py and shared/due.py: claim where free (null or absent) or run out."""
    await db.a.insert_many(
        [
            {"_id": "absent"},
            {"_id": "null", "claim": None},
            {"_id": "run-out", "claim": {"by": "dead", "until": at(-1)}},
            {"_id": "held", "claim": {"by": "other", "until": at(10)}},
            {"_id": "mine", "claim": {"by": "me", "until": at(10)}},
        ]
    )
    taken = []
    for doc_id in ("absent", "null", "run-out", "held", "mine"):
        doc = await db.a.find_one_and_update(
            {
                "_id": doc_id,
                "$or": [{"claim": None}, {"claim.until": {"$lte": at(0)}}, {"claim.by": "me"}],
            },
            {"$set": {"claim": {"by": "me", "until": at(15)}}},
            projection={"claim": 1},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            assert doc == {"_id": doc_id, "claim": {"by": "me", "until": at(15)}}
            taken.append(doc_id)
    assert taken == ["absent", "null", "run-out", "mine"]
    # Freeing is conditional on the claim being ours; a null claim matches no owner.
    freed = await db.a.update_one({"_id": "held", "claim.by": "me"}, {"$set": {"claim": None}})
    await db.a.update_one({"_id": "null", "claim.by": "me"}, {"$set": {"claim": None}})
    none_owner = await db.a.update_one({"_id": "null", "claim.by": "me"}, {"$set": {"x": 1}})
    assert (freed.matched_count, none_owner.matched_count) == (0, 0)


async def test_emptying_an_outbox_only_when_it_holds_exactly_the_published_events(db) -> None:
    """The relay's last step: one update empties the outbox if it holds just what was
    published (length and every id), else pulls those ids; later appends survive."""
    await db.o.insert_one(
        {"_id": "a", "outbox": [{"id": "e1"}, {"id": "e2"}], "has_outbox": True, "claim": "me"}
    )
    exact = {"_id": "a", "claim": "me", "outbox": {"$size": 2}, "outbox.id": {"$all": ["e1", "e2"]}}
    # Another relay pulled e1 and a writer appended e3: same length, not the same events.
    await db.o.update_one({"_id": "a"}, {"$pull": {"outbox": {"id": {"$in": ["e1"]}}}})
    await db.o.update_one({"_id": "a"}, {"$push": {"outbox": {"$each": [{"id": "e3"}]}}})
    emptied = await db.o.update_one(exact, {"$set": {"outbox": [], "has_outbox": False}})
    assert emptied.matched_count == 0
    await db.o.update_one(
        {"_id": "a", "claim": "me"},
        {"$set": {"claim": None}, "$pull": {"outbox": {"id": {"$in": ["e1", "e2"]}}}},
    )
    doc = await db.o.find_one({"_id": "a"})
    assert doc["outbox"] == [{"id": "e3"}] and doc["claim"] is None

    await db.o.update_one({"_id": "a"}, {"$set": {"claim": "me"}})
    only_e3 = {"_id": "a", "claim": "me", "outbox": {"$size": 1}, "outbox.id": {"$all": ["e3"]}}
    emptied = await db.o.update_one(only_e3, {"$set": {"outbox": [], "has_outbox": False}})
    assert emptied.matched_count == 1
    assert await db.o.find_one({"_id": "a"}, {"outbox": 1}) == {"_id": "a", "outbox": []}


async def test_clearing_a_pending_flag_only_on_an_empty_outbox(db) -> None:
    await db.o.insert_many(
        [
            {"_id": "empty", "outbox": [], "has_outbox": True},
            {"_id": "full", "outbox": [{"id": "e1"}], "has_outbox": True},
        ]
    )
    for doc_id in ("empty", "full"):
        await db.o.update_one(
            {"_id": doc_id, "outbox": {"$size": 0}}, {"$set": {"has_outbox": False}}
        )
    flags = {d["_id"]: d["has_outbox"] async for d in db.o.find({}, {"has_outbox": 1})}
    assert flags == {"empty": False, "full": True}
    nonempty = [d["_id"] async for d in db.o.find({"outbox.0": {"$exists": True}}, {"_id": 1})]
    assert nonempty == ["full"]


async def test_projection_of_a_field_of_array_elements(db) -> None:
    # The relay's poll reads only the times of pending events, not their (sealed) data.
    await db.o.insert_one(
        {
            "_id": "a",
            "outbox": [{"id": "e1", "time": "t1", "data": {"x": 1}}, {"id": "e2", "time": "t2"}],
        }
    )
    doc = await db.o.find_one({"_id": "a"}, {"_id": 1, "outbox.time": 1})
    assert doc == {"_id": "a", "outbox": [{"time": "t1"}, {"time": "t2"}]}


async def test_a_mark_that_only_moves_forward(db) -> None:
    """registration's reconciler: $max with upsert, from replicas that may be behind."""
    await db.m.update_one({"_id": "admission"}, {"$max": {"checked_until": at(5)}}, upsert=True)
    await db.m.update_one({"_id": "admission"}, {"$max": {"checked_until": at(2)}}, upsert=True)
    await db.m.update_one({"_id": "admission"}, {"$max": {"checked_until": at(9)}}, upsert=True)
    assert (await db.m.find_one({"_id": "admission"}))["checked_until"] == at(9)


async def test_range_on_creation_time_with_a_projection(db) -> None:
    await db.r.insert_many(
        [{"_id": f"r{i}", "cohort_id": "c", "created_at": at(i), "secret": "x"} for i in range(5)]
    )
    found = [
        d
        async for d in db.r.find(
            {"created_at": {"$gte": at(1), "$lt": at(4)}},
            {"_id": 1, "cohort_id": 1, "created_at": 1},
        )
    ]
    assert sorted(d["_id"] for d in found) == ["r1", "r2", "r3"]
    assert all("secret" not in d for d in found)


async def test_upsert_refused_when_a_newer_document_exists(db) -> None:
    """notifications' reminder offsets: a later change wins; an upsert behind it fails
    on the _id instead of overwriting."""
    await db.p.update_one(
        {"_id": "p1", "$or": [{"updated_at": None}, {"updated_at": {"$lte": at(5)}}]},
        {"$set": {"offsets": [1], "updated_at": at(5)}},
        upsert=True,
    )
    with pytest.raises(DuplicateKeyError):
        await db.p.update_one(
            {"_id": "p1", "$or": [{"updated_at": None}, {"updated_at": {"$lte": at(3)}}]},
            {"$set": {"offsets": [2], "updated_at": at(3)}},
            upsert=True,
        )
    assert (await db.p.find_one({"_id": "p1"}))["offsets"] == [1]


async def test_equality_with_null_matches_null_and_missing_fields_only(db) -> None:
    # Safety alerts waiting for a coordinator are found by {"acknowledged": None}.
    await db.docs.insert_many(
        [
            {"_id": "null", "acknowledged": None},
            {"_id": "missing"},
            {"_id": "done", "acknowledged": {"by": "ana@example.org"}},
        ]
    )
    found = await db.docs.find({"acknowledged": None}).sort("_id", 1).to_list()
    assert [d["_id"] for d in found] == ["missing", "null"]


async def test_operations_under_a_deadline_carry_max_time_ms_and_succeed(db) -> None:
    # The database gate's probe runs under a deadline (shared/mongo.py DatabaseGate): the
    # driver then sends maxTimeMS with every command, which the server must accept.
    with pymongo.timeout(5):
        await db.docs.insert_one({"_id": "a", "n": 1})
        written = await db.docs.update_one({"_id": "a", "n": 1}, {"$inc": {"n": 1}})
        found = await db.docs.find({"n": {"$gte": 1}}).to_list()
        changed = await db.docs.find_one_and_update(
            {"_id": "a"}, {"$set": {"m": 1}}, return_document=ReturnDocument.AFTER
        )
    assert written.modified_count == 1
    assert [d["n"] for d in found] == [2] and changed["m"] == 1


async def test_a_deadline_already_spent_fails_as_a_timeout_and_writes_nothing(db) -> None:
    with pytest.raises(PyMongoError) as raised, pymongo.timeout(0.000001):
        await asyncio.sleep(0.01)
        await db.docs.insert_one({"_id": "late"})
    assert raised.value.timeout  # what shared/mongo.py unreachable() reads
    assert await db.docs.find_one({"_id": "late"}) is None


async def test_entries_moved_from_one_array_to_another_in_one_update(db) -> None:
    # The relay sets aside an outbox entry it cannot open (shared/outbox.py _finish,
    # AggregateStore.park), and ops finds documents holding such entries.
    await db.aggs.insert_many(
        [
            {"_id": "a", "outbox": [{"id": "e1"}, {"id": "e2"}, {"id": "e3"}]},
            {"_id": "empty", "outbox": [], "outbox_parked": []},
            {"_id": "missing", "outbox": []},
        ]
    )
    moved = await db.aggs.update_one(
        {"_id": "a", "outbox.id": {"$all": ["e2"]}},
        {
            "$pull": {"outbox": {"id": {"$in": ["e2"]}}},
            "$push": {"outbox_parked": {"$each": [{"id": "e2", "error": "DecryptionError"}]}},
        },
    )
    assert moved.modified_count == 1
    doc = await db.aggs.find_one({"_id": "a"})
    assert [e["id"] for e in doc["outbox"]] == ["e1", "e3"]
    assert doc["outbox_parked"] == [{"id": "e2", "error": "DecryptionError"}]
    again = await db.aggs.update_one(
        {"_id": "a", "outbox.id": {"$all": ["e2"]}}, {"$pull": {"outbox": {"id": "e2"}}}
    )
    assert again.matched_count == 0  # moved once, never twice
    found = db.aggs.find({"outbox_parked": {"$exists": True, "$ne": []}}, {"_id": 1})
    assert [d["_id"] async for d in found] == ["a"]


async def test_a_time_range_matches_no_document_whose_time_is_null_or_missing(db) -> None:
    # Budgets with no reservation to check carry check_at None (payments/scholarships.py).
    now = datetime.now(UTC)
    await db.budgets.insert_many(
        [
            {"_id": "due", "check_at": now - timedelta(seconds=1)},
            {"_id": "later", "check_at": now + timedelta(minutes=1)},
            {"_id": "none", "check_at": None},
            {"_id": "missing"},
        ]
    )
    due = db.budgets.find({"check_at": {"$lte": now}}, {"_id": 1})
    assert [d["_id"] async for d in due] == ["due"]


async def test_exclusion_projection_of_a_nested_field_beside_top_level_ones(db) -> None:
    # How registration reads a cohort without its ledger or who was told of its make-up.
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await db.c.insert_one(
        {
            "_id": "c",
            "entries": {"r1": {}},
            "composition": {"kind": "mixed", "withdraw_by": at, "unmet": ["r1"]},
            "label": "x",
        }
    )
    await db.c.insert_one({"_id": "d", "label": "y"})
    found = [d async for d in db.c.find({}, {"entries": 0, "composition.unmet": 0}).sort("_id", 1)]
    assert found == [
        {"_id": "c", "composition": {"kind": "mixed", "withdraw_by": at}, "label": "x"},
        {"_id": "d", "label": "y"},
    ]


async def test_equality_on_a_string_and_a_boolean_with_a_nested_inclusion_projection(db) -> None:
    # How registration finds who in a cohort asked for a single-gender group.
    await db.r.insert_many(
        [
            {"_id": "a", "cohort_id": "c", "wish": True, "sealed": {"gender": "g", "name": "n"}},
            {"_id": "b", "cohort_id": "c", "wish": False, "sealed": {"gender": "g"}},
            {"_id": "c", "cohort_id": "c", "wish": True, "sealed": {"name": "n"}, "v": 2},
            {"_id": "d", "cohort_id": "e", "wish": True, "sealed": {"gender": "g"}},
        ]
    )
    found = [
        d async for d in db.r.find({"cohort_id": "c", "wish": True}, {"sealed.gender": 1, "v": 1})
    ]
    assert sorted(found, key=lambda d: d["_id"]) == [
        {"_id": "a", "sealed": {"gender": "g"}},
        {"_id": "c", "sealed": {}, "v": 2},
    ]


async def test_a_move_is_recorded_once_and_finished_with_a_set_and_an_unset(db) -> None:
    # registration/moves.py: {"moving": None} records one move at a time; finishing
    # points the registration at the target and clears the record in one update.
    await db.docs.insert_one({"_id": "r", "cohort_id": "a"})
    mark = {"$set": {"moving": {"to": "b", "by": "coord"}, "moving_since": at(0)}}
    first = await db.docs.update_one({"_id": "r", "moving": None}, mark)
    second = await db.docs.update_one({"_id": "r", "moving": None}, mark)
    assert (first.modified_count, second.modified_count) == (1, 0)
    stuck = await db.docs.find({"moving_since": {"$lt": at(1)}}).to_list()
    assert [d["_id"] for d in stuck] == ["r"]
    await db.docs.update_one(
        {"_id": "r"},
        {"$set": {"cohort_id": "b"}, "$unset": {"moving": "", "moving_since": ""}},
    )
    assert await db.docs.find_one({"_id": "r"}) == {"_id": "r", "cohort_id": "b"}


async def test_ne_on_a_scalar_matches_a_missing_field_and_update_many_sets_every_match(db) -> None:
    # notifications re-arms an acknowledged safety alert for a new flag with
    # {"flag_id": {"$ne": id}} (alerts from before the field have none); progress
    # erasure ends every share with the erased person in one update_many.
    await db.docs.insert_many(
        [
            {"_id": "old", "peer_id": "r1"},
            {"_id": "same", "flag_id": "f1", "peer_id": "r1"},
            {"_id": "other", "flag_id": "f0", "peer_id": "r2"},
        ]
    )
    found = await db.docs.find({"flag_id": {"$ne": "f1"}}).sort("_id", 1).to_list()
    assert [d["_id"] for d in found] == ["old", "other"]
    result = await db.docs.update_many({"peer_id": "r1"}, {"$set": {"peer_id": None}})
    assert result.matched_count == 2 and result.modified_count == 2
    assert await db.docs.count_documents({"peer_id": None}) == 2
    assert (await db.docs.find_one({"_id": "other"}))["peer_id"] == "r2"
