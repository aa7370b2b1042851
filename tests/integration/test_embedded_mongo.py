"""The embedded MongoDB (mongo-java-server behind deploy/embedded-mongo/) as the run
command starts it: with its file store, what it acknowledged survives kill -9.

``scripts/up`` keeps the data in ``var/mongo/holdspace.journal``: the launcher appends
every command that changed the data to it before the reply leaves and replays it at
start, so a crash of the database (kill -9) never takes back a write a service was
told is done. Stock mongo-java-server's H2 store left commits to a background writer
(about once a second): a kill then lost the last moments of acknowledged writes, and
the kill test below failed on it.

Each test starts its own server (devinfra.EmbeddedMongo) on a free port, never the
session's in-memory one, and kills or stops only that server.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from shared import devinfra

WRITERS = 4
KILL_CYCLES = 4
HOT = "hot"  # one document every writer updates, as sign-ups share a cohort
FILLER = "x" * 300  # about a registration's size with the other fields
# The writers' choices and the moments of the kills are random; a failure names the
# seed, and EMBEDDED_MONGO_TEST_SEED replays its choices (the timing differs anyway).
SEED = int(os.environ.get("EMBEDDED_MONGO_TEST_SEED") or time.time_ns() % 1_000_000)


def make_client(url: str) -> AsyncMongoClient:
    """The services' client settings (shared/mongo.make_client) without retried writes
    and with short timeouts: a write that raised was sent at most once and is either
    applied or not; one that returned was acknowledged."""
    return AsyncMongoClient(
        url,
        w="majority",
        tz_aware=True,
        retryWrites=False,
        serverSelectionTimeoutMS=2_000,
        connectTimeoutMS=2_000,
        appname="holdspace-durability-test",
    )


@asynccontextmanager
async def connected(server: devinfra.EmbeddedMongo) -> AsyncIterator[AsyncCollection]:
    client = make_client(server.url)
    try:
        yield client["durability"]["docs"]
    finally:
        await client.close()


async def start(data_dir: Path) -> devinfra.EmbeddedMongo:
    return await asyncio.to_thread(devinfra.EmbeddedMongo(data_dir=data_dir).start)


@dataclass(frozen=True)
class Doc:
    version: int
    status: str
    items: tuple[str, ...]


@dataclass
class Ledger:
    """Exactly what the server acknowledged: the truth the restarted server must match.

    Writers own their documents (``w<k>-<n>``) and change them one write at a time, so
    each has at most one write in flight when the server dies: that document may be as
    before or as after it (``maybe``). The hot document is changed by every writer with
    the version-conditioned update Holdspace's aggregates use; a writer that lost the race
    got ``modified_count == 0`` and its item must not be there.
    """

    docs: dict[str, Doc | None] = field(default_factory=dict)  # None: deleted
    maybe: dict[str, tuple[Doc | None, Doc | None]] = field(default_factory=dict)
    hot_acked: set[str] = field(default_factory=set)
    hot_lost: set[str] = field(default_factory=set)
    hot_maybe: set[str] = field(default_factory=set)
    acked: Counter[str] = field(default_factory=Counter)
    serial: Counter[int] = field(default_factory=Counter)  # per writer: unique ids, tokens
    killing: bool = False
    stop: bool = False


def as_doc(raw: dict[str, Any] | None) -> Doc | None:
    if raw is None:
        return None
    return Doc(raw["version"], raw["status"], tuple(raw["items"]))


async def writer(k: int, coll: AsyncCollection, ledger: Ledger, rng: random.Random) -> None:
    """Inserts, compare-and-set updates ($set + $push, $set + $pull), deletes, and
    compare-and-set updates of the shared hot document, until the server dies."""
    mine = [i for i, d in ledger.docs.items() if d is not None and i.startswith(f"w{k}-")]
    while not ledger.stop:
        ledger.serial[k] += 1
        n = ledger.serial[k]
        roll = rng.random()
        try:
            if roll < 0.2 or len(mine) < 3:
                doc_id = f"w{k}-{n}"
                after = Doc(0, "new", ())
                ledger.maybe[doc_id] = (None, after)
                await coll.insert_one(
                    {"_id": doc_id, "version": 0, "status": "new", "items": [], "f": FILLER}
                )
                mine.append(doc_id)
                kind = "insert"
            elif roll < 0.75:
                kind = "hot update" if roll < 0.35 else None
                if kind:
                    current = await coll.find_one({"_id": HOT})
                    assert current is not None
                    token = f"w{k}-h{n}"
                    ledger.hot_maybe.add(token)
                    result = await coll.update_one(
                        {"_id": HOT, "version": current["version"]},
                        {"$set": {"version": current["version"] + 1}, "$push": {"items": token}},
                    )
                    ledger.hot_maybe.discard(token)
                    (ledger.hot_acked if result.modified_count else ledger.hot_lost).add(token)
                    if not result.modified_count:
                        kind = "hot update lost the race"
                else:
                    doc_id = rng.choice(mine)
                    before = ledger.docs[doc_id]
                    assert before is not None
                    pull = bool(before.items) and roll > 0.6
                    token = rng.choice(before.items) if pull else f"i{n}"
                    items = (
                        tuple(i for i in before.items if i != token)
                        if pull
                        else (
                            *before.items,
                            token,
                        )
                    )
                    after = Doc(before.version + 1, f"s{n}", items)
                    ledger.maybe[doc_id] = (before, after)
                    result = await coll.update_one(
                        {"_id": doc_id, "version": before.version},
                        {
                            "$set": {"version": after.version, "status": after.status},
                            ("$pull" if pull else "$push"): {"items": token},
                        },
                    )
                    # The writer owns the document: a miss means the server lost a write.
                    assert result.modified_count == 1, (doc_id, before, SEED)
                    kind = "update $set+$pull" if pull else "update $set+$push"
            else:
                doc_id = mine.pop(rng.randrange(len(mine)))
                before = ledger.docs[doc_id]
                ledger.maybe[doc_id] = (before, None)
                result = await coll.delete_one({"_id": doc_id})
                assert result.deleted_count == 1, (doc_id, SEED)
                after = None
                kind = "delete"
        except ConnectionFailure:
            if not ledger.killing:
                raise
            return  # the server died; what was in flight stays in ledger.maybe
        if kind in ("insert", "delete") or kind.startswith("update"):
            ledger.docs[doc_id] = after
            del ledger.maybe[doc_id]
        ledger.acked[kind] += 1


async def check_against(coll: AsyncCollection, ledger: Ledger, when: str) -> None:
    """Every acknowledged write is there, nothing else is; then the writes that were in
    flight are settled as the server has them (the next cycle builds on that)."""
    found: dict[str, Doc] = {}
    hot: dict[str, Any] | None = None
    async for raw in coll.find({}):
        if raw["_id"] == HOT:
            hot = raw
        else:
            found[raw["_id"]] = as_doc(raw)
    problems = []
    # Through the _id index as well as by scanning: a commit that took a document
    # without its index entry (or the reverse) shows as a difference here.
    ids = sorted({*found, *ledger.docs, *ledger.maybe})
    by_index = {raw["_id"] async for raw in coll.find({"_id": {"$in": ids}}, {"_id": 1})}
    if by_index != set(found):
        problems.append(f"index and data disagree on {sorted(by_index ^ set(found))[:5]}")
    for doc_id, expected in ledger.docs.items():
        allowed = {expected, *ledger.maybe.get(doc_id, ())}
        if found.get(doc_id) not in allowed:
            problems.append(f"{doc_id}: acknowledged {expected}, found {found.get(doc_id)}")
    for doc_id in ledger.maybe.keys() - ledger.docs.keys():  # an insert in flight
        if found.get(doc_id) not in set(ledger.maybe[doc_id]):
            problems.append(f"{doc_id}: insert in flight, found {found.get(doc_id)}")
    unknown = found.keys() - ledger.docs.keys() - ledger.maybe.keys()
    if unknown:
        problems.append(f"documents nobody wrote: {sorted(unknown)[:5]}")
    assert hot is not None, "the hot document is gone"
    items = list(hot["items"])
    if ledger.hot_acked - set(items):
        problems.append(
            f"hot: acknowledged pushes missing: {sorted(ledger.hot_acked - set(items))}"
        )
    if set(items) - ledger.hot_acked - ledger.hot_maybe:
        problems.append(f"hot: pushes never acknowledged: {set(items) - ledger.hot_acked}")
    if len(set(items)) != len(items) or hot["version"] != len(items):
        problems.append(f"hot: version {hot['version']} for {len(items)} items")
    assert not problems, (
        f"{when}: seed {SEED}, acknowledged {dict(ledger.acked)},"
        f" in flight {len(ledger.maybe)}:\n" + "\n".join(problems[:20])
    )
    for doc_id in ledger.maybe:
        ledger.docs[doc_id] = found.get(doc_id)
    ledger.maybe.clear()
    ledger.hot_acked |= ledger.hot_maybe & set(items)
    ledger.hot_maybe.clear()


def ended(writers: list[asyncio.Task[None]]) -> list[BaseException | None]:
    """Why writers stopped before the kill (an assertion, or an error from the server)."""
    return [w.exception() for w in writers if w.done()]


@pytest.mark.timeout(120)
async def test_every_acknowledged_write_survives_kill_9_of_the_file_store(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "mongo"
    ledger = Ledger()
    server = await start(data_dir)
    try:
        async with connected(server) as coll:
            await coll.insert_one({"_id": HOT, "version": 0, "items": []})
        for cycle in range(KILL_CYCLES):
            ledger.killing = ledger.stop = False
            before = sum(ledger.acked.values())
            async with connected(server) as coll:
                writers = [
                    asyncio.create_task(writer(k, coll, ledger, random.Random(rng.random())))
                    for k in range(WRITERS)
                ]
                deadline = time.monotonic() + 20
                while sum(ledger.acked.values()) - before < 50:
                    assert time.monotonic() < deadline, f"few writes acknowledged: {ledger.acked}"
                    assert not any(w.done() for w in writers), ended(writers)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                assert not any(w.done() for w in writers), ended(writers)
                ledger.killing = True
                await asyncio.to_thread(server.kill)  # SIGKILL while the writers write
                ledger.stop = True
                await asyncio.gather(*writers)
            assert server.process is not None and server.process.returncode == -9
            server = await start(data_dir)  # the same file
            async with connected(server) as coll:
                await check_against(coll, ledger, f"after kill {cycle + 1}")
        # After the last kill: the writers go on where the restarted server is.
        ledger.killing = ledger.stop = False
        async with connected(server) as coll:
            before = sum(ledger.acked.values())
            writers = [
                asyncio.create_task(writer(k, coll, ledger, random.Random(rng.random())))
                for k in range(WRITERS)
            ]
            await asyncio.sleep(0.5)
            ledger.stop = True
            await asyncio.gather(*writers)
            assert sum(ledger.acked.values()) > before
            await check_against(coll, ledger, "after the last restart")
    finally:
        await asyncio.to_thread(server.kill)
    assert {"insert", "update $set+$push", "update $set+$pull", "delete", "hot update"} <= set(
        ledger.acked
    ), ledger.acked
    assert ledger.hot_acked, "no update of the hot document was acknowledged"


@pytest.mark.timeout(60)
async def test_after_kill_9_the_file_store_takes_every_kind_of_write_again(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "mongo"
    server = await start(data_dir)
    try:
        async with connected(server) as coll:
            await coll.create_indexes([IndexModel("key", unique=True, name="key_unique")])
            await coll.insert_many(
                [{"_id": f"d{i}", "key": f"k{i}", "version": 0, "items": []} for i in range(20)]
            )
            await coll.update_one({"_id": "d0", "version": 0}, {"$set": {"version": 1}})
        await asyncio.to_thread(server.kill)
        server = await start(data_dir)
        async with connected(server) as coll:
            assert await coll.count_documents({}) == 20
            # The unique index came back with the data: a lease taken twice is refused.
            with pytest.raises(DuplicateKeyError):
                await coll.insert_one({"_id": "dup", "key": "k3"})
            await coll.insert_one({"_id": "d20", "key": "k20", "version": 0, "items": []})
            cas = await coll.update_one(
                {"_id": "d0", "version": 1}, {"$set": {"version": 2}, "$push": {"items": "a"}}
            )
            assert cas.modified_count == 1
            stale = await coll.update_one({"_id": "d0", "version": 1}, {"$set": {"version": 9}})
            assert stale.modified_count == 0  # the condition still decides
            after = await coll.find_one_and_update(
                {"_id": "d1", "version": 0},
                {"$set": {"version": 1}, "$push": {"items": {"$each": ["a", "b", "c"]}}},
                return_document=ReturnDocument.AFTER,
            )
            assert after is not None and after["items"] == ["a", "b", "c"]
            pulled = await coll.update_one(
                {"_id": "d1", "version": 1}, {"$set": {"version": 2}, "$pull": {"items": "b"}}
            )
            assert pulled.modified_count == 1
            assert (await coll.delete_one({"_id": "d2"})).deleted_count == 1
            other = coll.database["other"]
            await other.create_indexes([IndexModel("at")])
            await other.insert_one({"_id": 1, "at": 1})
        await asyncio.to_thread(server.stop)  # SIGTERM this time: a clean stop
        server = await start(data_dir)
        async with connected(server) as coll:
            assert await coll.count_documents({}) == 20  # +d20, -d2
            assert (await coll.find_one({"_id": "d0"}))["items"] == ["a"]
            assert (await coll.find_one({"_id": "d1"}))["items"] == ["a", "c"]
            assert await coll.find_one({"_id": "d2"}) is None
            assert await coll.database["other"].find_one({"_id": 1}) == {"_id": 1, "at": 1}
            with pytest.raises(DuplicateKeyError):
                await coll.insert_one({"_id": "dup2", "key": "k20"})
    finally:
        await asyncio.to_thread(server.kill)


async def test_a_restart_replays_to_the_same_data_and_rewrites_the_journal_shorter(
    tmp_path: Path,
) -> None:
    """The journal is a log of commands: replayed in order at start, it must give back
    the very same documents, ids the server chose included; then it is rewritten as
    the snapshot of what there is, not the history of how it came to be."""
    data_dir = tmp_path / "mongo"
    server = await start(data_dir)
    try:
        async with connected(server) as coll:
            await coll.insert_one({"_id": "a", "n": 0, "log": []})
            for i in range(300):  # history far longer than the result
                await coll.update_one({"_id": "a"}, {"$inc": {"n": 1}, "$push": {"log": i}})
                await coll.update_one({"_id": "a"}, {"$pull": {"log": i - 1}})
            # An upsert that names no _id: the server makes one up; a replay must not.
            await coll.update_one({"key": "made-up"}, {"$set": {"v": 1}}, upsert=True)
            await coll.update_one({"key": "made-up"}, {"$inc": {"v": 1}})
            before = {d["_id"]: d async for d in coll.find({})}
        grown = (data_dir / "holdspace.journal").stat().st_size
        await asyncio.to_thread(server.kill)
        server = await start(data_dir)
        async with connected(server) as coll:
            after = {d["_id"]: d async for d in coll.find({})}
        assert after == before
        assert after["a"]["n"] == 300 and after["a"]["log"] == [299]
        assert [d["v"] for d in after.values() if d.get("key") == "made-up"] == [2]
        assert (data_dir / "holdspace.journal").stat().st_size < grown / 10, "a snapshot"
    finally:
        await asyncio.to_thread(server.kill)


async def test_the_memory_store_starts_answers_ping_and_keeps_no_file(tmp_path: Path) -> None:
    server = await asyncio.to_thread(devinfra.EmbeddedMongo(log_dir=tmp_path / "log").start)
    try:
        assert server.store == "memory"
        client = make_client(server.url)
        try:
            assert (await client.admin.command("ping"))["ok"] == 1
            info = await client.server_info()
            # The launcher declares 6.0 (stock 1.47 says 5.0, whose wire version PyMongo
            # 4.20 refuses): that it answered at all is the check; the number pins it.
            assert info["version"].startswith("6.0")
            await client["m"]["c"].insert_one({"_id": 1})
            assert await client["m"]["c"].find_one({"_id": 1}) == {"_id": 1}
        finally:
            await client.close()
        assert not list((tmp_path / "log").glob("*.journal*"))
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_second_server_on_the_same_file_fails_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "mongo"
    first = await start(data_dir)
    try:
        async with connected(first) as coll:
            await coll.insert_one({"_id": "kept"})
        second = devinfra.EmbeddedMongo(data_dir=data_dir, log_dir=tmp_path / "second")
        with pytest.raises(RuntimeError, match="exited"):
            await asyncio.to_thread(second.start, 30.0)
        # The journal is locked: the second JVM ends at once and says why.
        assert second.process is not None and second.process.returncode != 0
        log = (tmp_path / "second" / "embedded-mongo.log").read_text()
        assert "The file is locked" in log and str(data_dir / "holdspace.journal") in log
        async with connected(first) as coll:  # the first goes on as if nothing happened
            assert await coll.find_one({"_id": "kept"}) == {"_id": "kept"}
            await coll.insert_one({"_id": "after"})
        await asyncio.to_thread(first.kill)
        # A killed server's lock dies with it: the next one opens the file.
        first = await start(data_dir)
        async with connected(first) as coll:
            assert await coll.count_documents({}) == 2
    finally:
        await asyncio.to_thread(first.kill)
