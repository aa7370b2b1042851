"""Every MongoDB feature Holdspace relies on, pinned against the live server.

Runs PyMongo's AsyncMongoClient against whatever `mongodb_url` gives (FerretDB
1.x here, MongoDB where a Docker engine or MONGODB_URL provides one), so the
same code is known to behave the same on both.

Known defect: FerretDB 1.x applies an update by reading the matching document,
applying the operators in Go and writing the whole document back by `_id`
(internal/handler/msg_update.go and msg_findandmodify.go, then the backend's
UpdateAll: `UPDATE ... SET doc = ? WHERE _id = ?`), with no compare-and-set. Two
concurrent updates of one document from different connections therefore lose
one of them (upstream FerretDB issue #3040). The concurrency checks below are
expected to fail on FerretDB, and only there; on MongoDB they must pass.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from bson import Binary
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

CONCURRENT_CALLERS = 300
SEATS = 8


@pytest.fixture(scope="module")
async def server_is_ferretdb(mongo_client: AsyncMongoClient) -> bool:
    info = await mongo_client.admin.command("buildInfo")
    return "ferretdbVersion" in info or "ferretdbFeatures" in info


LOST_UPDATE = (
    "FerretDB 1.x loses concurrent updates of one document (no compare-and-set "
    "between its read and its write-back; FerretDB #3040)"
)
SILENTLY_IGNORED = "FerretDB 1.x accepts this update form and silently does nothing"


def fails_on_ferretdb(request: pytest.FixtureRequest, is_ferretdb: bool, why: str) -> None:
    """Strict: should FerretDB start passing, the suite says so."""
    if is_ferretdb:
        request.applymarker(pytest.mark.xfail(strict=True, reason=why))


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
    "nonce_and_ciphertext": Binary(b"\x00\x01\xff" * 20, 128),  # user-defined subtype
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
            "$push": {"items": {"id": "i1", "at": at(1), "blob": Binary(b"\x01\x02")}},
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


async def test_delete_one_under_concurrency_has_one_winner(db) -> None:
    await db.claims.insert_one({"_id": "job-1"})
    counts = await asyncio.gather(
        *(db.claims.delete_one({"_id": "job-1"}) for _ in range(CONCURRENT_CALLERS))
    )
    assert sum(r.deleted_count for r in counts) == 1


async def test_conditional_find_one_and_update_has_exactly_capacity_winners(
    db, request, server_is_ferretdb
) -> None:
    fails_on_ferretdb(request, server_is_ferretdb, LOST_UPDATE)
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
    assert sorted(w["held"] for w in winners) == list(range(1, SEATS + 1))


async def test_concurrent_pushes_to_one_document_are_all_kept(
    db, request, server_is_ferretdb
) -> None:
    """The embedded outbox appends events from concurrent writers: none may vanish."""
    fails_on_ferretdb(request, server_is_ferretdb, LOST_UPDATE)
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
    """Pinned so the defect above is understood: it needs two connections to show."""
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


async def test_pull_by_condition_on_subdocuments(db, request, server_is_ferretdb) -> None:
    fails_on_ferretdb(request, server_is_ferretdb, SILENTLY_IGNORED)
    await db.cohorts.insert_one({"_id": "c", "waitlist": WAITLIST})
    await db.cohorts.update_one({"_id": "c"}, {"$pull": {"waitlist": {"rid": "r1"}}})
    assert (await db.cohorts.find_one({"_id": "c"}))["waitlist"] == [WAITLIST[0], WAITLIST[2]]


async def test_pull_with_in_on_scalars(db, request, server_is_ferretdb) -> None:
    fails_on_ferretdb(request, server_is_ferretdb, SILENTLY_IGNORED)
    await db.aggs.insert_one({"_id": "a", "inbox": ["x", "y", "z"]})
    await db.aggs.update_one({"_id": "a"}, {"$pull": {"inbox": {"$in": ["x", "z"]}}})
    assert (await db.aggs.find_one({"_id": "a"}))["inbox"] == ["y"]


async def test_push_with_slice_caps_the_inbox(db, request, server_is_ferretdb) -> None:
    fails_on_ferretdb(request, server_is_ferretdb, SILENTLY_IGNORED)
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
    from pymongo import IndexModel

    specs = [IndexModel([("a", ASCENDING)], name="by_a"), IndexModel([("b", ASCENDING)], name="b")]
    for _ in range(2):
        for spec in specs:
            await db.things.create_indexes([spec])
    names = {i["name"] async for i in await db.things.list_indexes()}
    assert {"by_a", "b"} <= names


async def test_recreating_several_existing_indexes_in_one_call(
    db, request, server_is_ferretdb
) -> None:
    # Why shared/mongo.ensure_indexes creates one index per call.
    fails_on_ferretdb(
        request, server_is_ferretdb, "FerretDB 1.24 drops the connection (a panic in its handler)"
    )
    from pymongo import IndexModel

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


async def test_lock_documents_insert_then_delete_by_token(db) -> None:
    await db.locks.insert_one({"_id": "cohorts:c1", "token": "t1", "expires_at": at(1)})
    with pytest.raises(DuplicateKeyError):
        await db.locks.insert_one({"_id": "cohorts:c1", "token": "t2", "expires_at": at(1)})
    wrong = await db.locks.delete_one({"_id": "cohorts:c1", "token": "t2"})
    right = await db.locks.delete_one({"_id": "cohorts:c1", "token": "t1"})
    assert (wrong.deleted_count, right.deleted_count) == (0, 1)


async def test_in_on_ids_and_boolean_flag_queries(db) -> None:
    await db.r.insert_many([{"_id": f"r{i}", "has_outbox": i % 2 == 0} for i in range(6)])
    picked = [d["_id"] async for d in db.r.find({"_id": {"$in": ["r1", "r4", "zz"]}})]
    flagged = sorted([d["_id"] async for d in db.r.find({"has_outbox": True}, {"_id": 1})])
    assert sorted(picked) == ["r1", "r4"]
    assert flagged == ["r0", "r2", "r4"]


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
    from pymongo import IndexModel

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


def _plan_text(explained: dict) -> str:
    """The winning plan, as text: MongoDB's stages, or the SQL plan FerretDB's SQLite
    backend reports (``queryPlanner.Plan``)."""
    planner = explained.get("queryPlanner") or {}
    return str(planner.get("winningPlan") or planner.get("Plan") or planner)


async def test_a_lookup_by_id_uses_the_id_index(db, server_is_ferretdb) -> None:
    """Every write of an aggregate, lease and outbox row reads, updates or deletes one
    document by ``_id``; on a growing collection that must not scan it.

    Stock FerretDB 1.24 spells ``_id`` differently in its queries (``->'$._id'``) and in
    its unique index (``->"_id"``), so SQLite scans the whole table for every update and
    delete by ``_id`` (39 ms per delete at 3,000 documents, against 1 ms at 50). Our
    build carries a one-line patch (deploy/ferretdb/sqlite-id-index.patch); this fails
    if the binary in use lacks it. On MongoDB the ``_id`` index is always used.
    """
    await db.sized.insert_many([{"_id": f"d{i:04d}", "n": i} for i in range(200)])
    explained = await db.command(
        {"explain": {"find": "sized", "filter": {"_id": "d0150"}}, "verbosity": "queryPlanner"}
    )
    plan = _plan_text(explained)
    if server_is_ferretdb:
        assert "USING INDEX" in plan and "SCAN" not in plan, plan
    else:
        assert any(stage in plan for stage in ("IDHACK", "EXPRESS", "IXSCAN")), plan
    assert (await db.sized.delete_one({"_id": "d0150"})).deleted_count == 1
    assert await db.sized.count_documents({}) == 199
