"""Locks, aggregates, the outbox relay and due work against the real database and broker.

FerretDB 1.x loses concurrent updates of one document (tests/compat); what makes
Holdspace's writes safe there is shared/locks.py, built on the atomic unique-key
insert. These tests model replicas as separate clients with their own ``Locks``
and check the outcome in the database (counts, versions, outboxes) and on the
broker (what arrived, in which order, how often). Nothing is mocked; every wait
has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared import mongo
from shared.aggregates import AggregateStore, Change
from shared.due import DueRunner
from shared.events import Envelope
from shared.locks import LeaseLost, Locks, LockTimeout
from shared.security import DecryptionError, FieldCipher

from .helpers_messaging import eventually, ready_count, rejected, take_all, withdrawn
from .helpers_persistence import (
    DB_WRITES,
    EVENTS_PUBLISHED,
    JOBS_RUN,
    PUBLISH_FAILURES,
    BrokerEnv,
    Exclusion,
    Replicas,
    collect,
    drain,
    metric,
    outbox_ids,
    submitted,
)

REJECTED = "registration.rejected"
WITHDRAWN = "registration.withdrawn"


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def atomic_updates(mongo_client: AsyncMongoClient) -> bool:
    """As production decides it (shared/app.py): compare-and-set only where the server can."""
    return not await mongo.is_ferretdb(mongo_client)


@pytest.fixture
async def replicas(mongodb_url: str, db) -> AsyncIterator[Replicas]:
    pool = Replicas(mongodb_url, db.name)
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture
async def broker_env(rabbitmq_url: str, run_id: str) -> AsyncIterator[BrokerEnv]:
    env = BrokerEnv(rabbitmq_url, run_id)
    try:
        yield env
    finally:
        await env.aclose()


def _elapsed(t0: float) -> float:
    return time.monotonic() - t0


# --- 1. locks: mutual exclusion across replicas ---------------------------------------

CALLERS = 200
REPLICAS = 4


async def test_hold_serialises_read_then_write_across_four_replicas(replicas: Replicas, db) -> None:
    await db.counters.insert_one({"_id": "counter", "n": 0})
    dbs = [replicas.db() for _ in range(REPLICAS)]
    locks = [Locks(d["locks"], owner=f"replica-{k}") for k, d in enumerate(dbs)]
    exclusion = Exclusion()

    async def increment(i: int) -> None:
        k = i % REPLICAS
        async with locks[k].hold("counter") as lease:
            with exclusion.enter("counter", (k, i)):
                doc = await dbs[k].counters.find_one({"_id": "counter"})
                await asyncio.sleep(0)  # let every other caller run between read and write
                lease.check()
                await dbs[k].counters.update_one({"_id": "counter"}, {"$set": {"n": doc["n"] + 1}})

    await asyncio.wait_for(asyncio.gather(*(increment(i) for i in range(CALLERS))), 45)

    assert (await db.counters.find_one({"_id": "counter"}))["n"] == CALLERS
    assert len(exclusion.spans["counter"]) == CALLERS
    exclusion.assert_no_overlap()
    assert {who[0] for _, _, who in exclusion.spans["counter"]} == set(range(REPLICAS))
    assert await db.locks.count_documents({}) == 0, "every lease is released"


async def test_control_read_then_write_without_the_lock_loses_updates(
    replicas: Replicas, db
) -> None:
    """Shows the counter test above can see lost updates at all (same clients, no lock)."""
    await db.counters.insert_one({"_id": "counter", "n": 0})
    dbs = [replicas.db() for _ in range(REPLICAS)]

    async def increment(i: int) -> None:
        coll = dbs[i % REPLICAS].counters
        doc = await coll.find_one({"_id": "counter"})
        await asyncio.sleep(0)
        await coll.update_one({"_id": "counter"}, {"$set": {"n": doc["n"] + 1}})

    await asyncio.wait_for(asyncio.gather(*(increment(i) for i in range(CALLERS))), 30)
    n = (await db.counters.find_one({"_id": "counter"}))["n"]
    if n == CALLERS:
        pytest.skip("the unlocked callers happened not to interleave this time")
    assert n < CALLERS


# --- 2. locks: expiry, try_hold, timeouts, lease checks --------------------------------


async def test_expired_lock_of_a_dead_holder_is_taken_over(replicas: Replicas, db) -> None:
    await db.locks.insert_one(
        {
            "_id": "k",
            "token": "dead-token",
            "owner": "dead-replica",
            "expires_at": datetime.now(UTC) - timedelta(seconds=1),
        }
    )
    locks = Locks(replicas.db()["locks"], owner="b", wait_s=2.0)
    t0 = time.monotonic()
    async with locks.hold("k") as lease:
        assert _elapsed(t0) < 1.0, "an expired lock is taken over at once, not waited out"
        doc = await db.locks.find_one({"_id": "k"})
        assert doc["token"] == lease.token != "dead-token"
        assert doc["owner"] == "b"
    assert await db.locks.count_documents({}) == 0


async def test_stalled_holder_loses_the_key_and_cannot_release_its_successor(
    replicas: Replicas, db
) -> None:
    stale_locks = Locks(replicas.db()["locks"], owner="a", lease_s=0.3)
    fresh_locks = Locks(replicas.db()["locks"], owner="b", wait_s=3.0)
    third = Locks(replicas.db()["locks"], owner="c", wait_s=0.2)
    async with contextlib.AsyncExitStack() as stale_stack:
        stale = await stale_stack.enter_async_context(stale_locks.hold("k"))
        t0 = time.monotonic()
        async with contextlib.AsyncExitStack() as fresh_stack:
            fresh = await fresh_stack.enter_async_context(fresh_locks.hold("k"))
            waited = _elapsed(t0)
            assert 0.15 <= waited < 2.0, f"took over after {waited:.2f}s (lease 0.3s)"
            with pytest.raises(LeaseLost):
                stale.check(margin_s=0)
            fresh.check()  # a 15 s lease, just taken

            await stale_stack.aclose()  # the stalled holder finally finishes and "releases"
            doc = await db.locks.find_one({"_id": "k"})
            assert doc is not None and doc["token"] == fresh.token and doc["owner"] == "b"
            with pytest.raises(LockTimeout):
                async with third.hold("k"):
                    pytest.fail("the successor's key must still be taken")
    assert await db.locks.count_documents({}) == 0


async def test_try_hold_yields_none_at_once_while_the_key_is_taken(replicas: Replicas, db) -> None:
    a = Locks(replicas.db()["locks"], owner="a")  # wait_s 15: a waiting try_hold would show
    b = Locks(replicas.db()["locks"], owner="b")
    async with a.hold("k") as held:
        t0 = time.monotonic()
        async with b.try_hold("k") as other_replica:
            assert other_replica is None
        async with a.try_hold("k") as same_process:
            assert same_process is None
        assert _elapsed(t0) < 1.0
        assert (await db.locks.find_one({"_id": "k"}))["token"] == held.token
    async with b.try_hold("k") as free:
        assert free is not None and free.key == "k"
        assert (await db.locks.find_one({"_id": "k"}))["owner"] == "b"
    assert await db.locks.count_documents({}) == 0


async def test_hold_raises_lock_timeout_after_wait_s_across_replicas(
    replicas: Replicas, db
) -> None:
    a = Locks(replicas.db()["locks"], owner="a")
    b = Locks(replicas.db()["locks"], owner="b", wait_s=0.3)
    async with a.hold("k"):
        for wait_s, expected in ((None, 0.3), (0.1, 0.1)):
            t0 = time.monotonic()
            with pytest.raises(LockTimeout):
                async with b.hold("k", wait_s=wait_s):
                    pytest.fail("taken while another replica holds it")
            waited = _elapsed(t0)
            assert expected <= waited < expected + 1.0, f"gave up after {waited:.2f}s"
    t0 = time.monotonic()
    async with b.hold("k", wait_s=1.0):  # the failed waits left nothing behind
        assert _elapsed(t0) < 0.5


async def test_hold_raises_lock_timeout_after_wait_s_within_one_process(
    replicas: Replicas,
) -> None:
    """``wait_s`` must bound the wait of a second coroutine of the same process too.

    The in-process queue (``async with local.lock`` in Locks.hold) is waited on with no
    deadline; ``wait_s`` only starts counting in ``_acquire``, after it. A caller asking
    to wait 0.2 s therefore waits as long as the holder holds (here 1.5 s) and then
    gets the key instead of LockTimeout.
    """
    locks = Locks(replicas.db()["locks"], owner="a", wait_s=0.2)
    entered, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            entered.set()
            await release.wait()

    async def waiter() -> str:
        async with locks.hold("k"):
            return "got the key"

    holding = asyncio.create_task(holder())
    await asyncio.wait_for(entered.wait(), 10)
    t0 = time.monotonic()
    waiting = asyncio.create_task(waiter())
    try:
        await asyncio.wait({waiting}, timeout=1.5)
    finally:
        release.set()
        await asyncio.wait_for(holding, 10)
    outcome: Any = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 10)
    waited = _elapsed(t0)
    assert isinstance(outcome[0], LockTimeout), (
        f"a same-process waiter with wait_s=0.2 got {outcome[0]!r} after {waited:.2f}s"
    )
    assert waited < 1.2


async def test_lease_check_raises_lease_lost_near_expiry(replicas: Replicas) -> None:
    locks = Locks(replicas.db()["locks"], lease_s=0.6)
    async with locks.hold("k") as lease:
        lease.check(margin_s=0.2)  # fresh
        lease.check()  # the default margin is a quarter of a short lease, not 1 s
        with pytest.raises(LeaseLost):
            lease.check(margin_s=1.0)  # a margin longer than the whole lease
        await asyncio.sleep(0.47)
        with pytest.raises(LeaseLost):
            lease.check()  # within the last quarter


# --- 3. aggregates ------------------------------------------------------------------


def _append(i: int):
    return lambda doc, _state: Change(set={"items": doc["items"] + [i]}, result=i)


async def test_three_replicas_apply_300_concurrent_changes_exactly_once(
    replicas: Replicas, db, run_id: str, atomic_updates: bool
) -> None:
    services = [f"agg{run_id}-{k}" for k in range(3)]
    stores = []
    for k, service in enumerate(services):
        d = replicas.db()
        stores.append(
            AggregateStore(
                d["aggs"],
                Locks(d["locks"], owner=f"replica-{k}"),
                service=service,
                atomic_updates=atomic_updates,
                max_batch=10,  # many batches per replica, so the replicas interleave
            )
        )
    await stores[0].create({"_id": "a", "items": []})

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(stores[i % 3].mutate("a", _append(i)) for i in range(300))), 45
    )

    assert [o.result for o in outcomes] == list(range(300))
    assert all(o.changed and not o.duplicate for o in outcomes)
    doc = await db.aggs.find_one({"_id": "a"})
    assert len(doc["items"]) == 300 and sorted(doc["items"]) == list(range(300))
    for k in range(3):  # each replica's callers are applied in the order they queued
        mine = [x for x in doc["items"] if x % 3 == k]
        assert mine == sorted(mine)
    writes = sum(metric(DB_WRITES, service=s, op="update") for s in services)
    assert writes >= 30  # 100 changes per replica, at most 10 per write
    assert doc["version"] == 1 + writes, "every write bumped the version exactly once"
    assert await db.locks.count_documents({}) == 0


class Refused(Exception):
    pass


async def test_failing_decision_fails_only_its_own_caller(db, atomic_updates: bool) -> None:
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", atomic_updates=atomic_updates
    )
    await store.create({"_id": "a", "items": []})

    def decide(i: int):
        def _decide(doc: dict[str, Any], _state: Any) -> Change:
            if i % 4 == 0:
                raise Refused(f"refused {i}")
            return Change(set={"items": doc["items"] + [i]}, result=i)

        return _decide

    results = await asyncio.wait_for(
        asyncio.gather(*(store.mutate("a", decide(i)) for i in range(20)), return_exceptions=True),
        15,
    )
    for i, result in enumerate(results):
        if i % 4 == 0:
            assert isinstance(result, Refused) and str(result) == f"refused {i}"
        else:
            assert not isinstance(result, BaseException), result
            assert result.result == i and result.changed
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["items"] == [i for i in range(20) if i % 4]
    assert doc["version"] == 2, "one batch, one write"

    only_refusals = await asyncio.gather(
        *(store.mutate("a", decide(0)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Refused) for r in only_refusals)
    assert (await db.aggs.find_one({"_id": "a"}))["version"] == 2, "nothing to write"


async def test_decision_setting_a_reserved_field_fails_only_its_own_caller(
    db, atomic_updates: bool
) -> None:
    """A decision that sets ``version`` is refused; the others in its batch must still apply.

    AggregateStore._apply raises that ValueError (shared/aggregates.py, the
    ``if reserved: raise ValueError`` in the decision loop) outside the try/except
    that isolates a decision's own failure, so it aborts the whole batch: every
    caller queued with the bad one gets the ValueError and nothing is written,
    against the class's contract ("Each caller gets its own result or its own
    exception; a failed decision changes nothing").
    """
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", atomic_updates=atomic_updates
    )
    await store.create({"_id": "a", "items": []})
    results = await asyncio.wait_for(
        asyncio.gather(
            store.mutate("a", _append(1)),
            store.mutate("a", lambda doc, _s: Change(set={"version": 99})),
            store.mutate("a", _append(2)),
            return_exceptions=True,
        ),
        15,
    )
    assert isinstance(results[1], ValueError)
    assert not isinstance(results[0], BaseException), f"first caller got {results[0]!r}"
    assert not isinstance(results[2], BaseException), f"third caller got {results[2]!r}"
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["items"] == [1, 2] and doc["version"] == 2


async def test_event_id_makes_a_redelivery_a_no_op_and_the_inbox_is_capped(
    db, atomic_updates: bool
) -> None:
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", inbox_size=5, atomic_updates=atomic_updates
    )
    await store.create({"_id": "a", "n": 0})

    def inc(doc: dict[str, Any], _state: Any) -> Change:
        return Change(set={"n": doc["n"] + 1})

    first = await store.mutate("a", inc, event_id="e-0")
    assert first.changed and not first.duplicate
    again = await store.mutate("a", inc, event_id="e-0")
    assert again.duplicate and not again.changed
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == 1 and doc["version"] == 2, "a redelivery writes nothing"

    # The same event twice in one batch: the second is the duplicate.
    pair = await asyncio.gather(
        store.mutate("a", inc, event_id="e-1"), store.mutate("a", inc, event_id="e-1")
    )
    assert [o.duplicate for o in pair] == [False, True]
    # An event whose decision changes nothing is still remembered.
    await store.mutate("a", lambda doc, _s: None, event_id="e-2")
    assert (await store.mutate("a", inc, event_id="e-2")).duplicate
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == 2 and doc["inbox"] == ["e-0", "e-1", "e-2"]

    for j in range(3, 10):
        await store.mutate("a", inc, event_id=f"e-{j}")
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["inbox"] == [f"e-{j}" for j in range(5, 10)], "capped at inbox_size, newest kept"
    assert doc["n"] == 9
    assert (await store.mutate("a", inc, event_id="e-9")).duplicate
    # An id older than the cap is forgotten: that is what the cap trades away.
    assert not (await store.mutate("a", inc, event_id="e-0")).duplicate


async def test_events_land_in_the_outbox_in_order(db, atomic_updates: bool) -> None:
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", atomic_updates=atomic_updates
    )
    announced: list[str] = []
    store.listeners.append(lambda _store, aggregate_id: announced.append(aggregate_id))
    events = [rejected() for _ in range(7)]

    await store.create({"_id": "a", "n": 0}, events=events[:2])
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["has_outbox"] is True and outbox_ids(doc) == [e.id for e in events[:2]]
    with pytest.raises(DuplicateKeyError):
        await store.create({"_id": "a", "n": 0})

    await store.mutate("a", lambda doc, _s: Change(set={"n": 1}, events=events[2:5]))
    await asyncio.gather(
        store.mutate("a", lambda doc, _s: Change(events=[events[5]])),
        store.mutate("a", lambda doc, _s: Change(events=[events[6]])),
    )
    await store.mutate("a", lambda doc, _s: Change(set={"n": 2}))  # no events

    doc = await db.aggs.find_one({"_id": "a"})
    assert outbox_ids(doc) == [e.id for e in events]
    assert doc["has_outbox"] is True and doc["n"] == 2
    assert store.envelopes(doc) == events
    assert announced == ["a", "a", "a"], "create, the single change and the batch of two"


async def test_outbox_is_sealed_at_rest_with_a_cipher(
    db, run_id: str, atomic_updates: bool
) -> None:
    cipher = FieldCipher({"k1": os.urandom(32)}, "k1")
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", cipher=cipher, atomic_updates=atomic_updates
    )
    email, name = f"wen.private.{run_id}@example.org", f"Wen Secret {run_id}"
    events = [submitted(email, name), submitted(f"other.{run_id}@example.org", name)]
    await store.create({"_id": "a"}, events=events[:1])
    await store.mutate("a", lambda doc, _s: Change(events=events[1:]))

    raw = await db.aggs.find_one({"_id": "a"})
    encoded = bson.encode(raw)
    for secret in (email, name, f"other.{run_id}@example.org"):
        assert secret.encode() not in encoded, f"{secret!r} stored in the clear"
    for entry, event in zip(raw["outbox"], events, strict=True):
        assert entry["data"] == {}
        assert entry["sealed_data"].startswith("v1.k1.")
        assert (entry["id"], entry["type"]) == (event.id, event.type)  # readable for operators
    assert store.envelopes(raw) == events

    # A sealed value is bound to its event: moved to another entry, it does not open.
    swapped = [dict(e) for e in raw["outbox"]]
    swapped[0]["sealed_data"], swapped[1]["sealed_data"] = (
        swapped[1]["sealed_data"],
        swapped[0]["sealed_data"],
    )
    with pytest.raises(DecryptionError):
        store.envelopes({**raw, "outbox": swapped})
    without_key = AggregateStore(db["aggs"], Locks(db["locks"]), service="t")
    with pytest.raises(RuntimeError):
        without_key.envelopes(raw)


async def test_remove_published_drops_exactly_the_given_ids(db, atomic_updates: bool) -> None:
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", atomic_updates=atomic_updates
    )
    events = [rejected() for _ in range(6)]
    await store.create({"_id": "a", "n": 0}, events=events)

    await store.remove_published("a", {events[1].id, events[4].id, "never-there"})
    doc = await db.aggs.find_one({"_id": "a"})
    assert outbox_ids(doc) == [e.id for e in (events[0], events[2], events[3], events[5])]
    assert doc["has_outbox"] is True and doc["version"] == 2

    await store.remove_published("a", {events[0].id, events[2].id, events[3].id, events[5].id})
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["outbox"] == [] and doc["has_outbox"] is False
    await store.remove_published("missing", {"x"})  # an aggregate gone meanwhile: no error


class ListCodec:
    """Parsed state: the ``items`` list; counts how often a document is parsed."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self, doc: dict[str, Any]) -> list[int]:
        self.loads += 1
        return list(doc["items"])

    def copy(self, state: list[int]) -> list[int]:
        return list(state)

    def dump(self, state: list[int]) -> dict[str, Any]:
        return {"items": state}


async def test_codec_parses_once_per_batch_and_drops_a_failed_decisions_state(
    db, atomic_updates: bool
) -> None:
    codec = ListCodec()
    store = AggregateStore(
        db["aggs"], Locks(db["locks"]), service="t", codec=codec, atomic_updates=atomic_updates
    )
    await store.create({"_id": "a", "items": []})

    def decide(i: int):
        def _decide(_doc: dict[str, Any], state: list[int]) -> Change:
            state.append(i)
            if i == 7:
                raise Refused("changed its copy, then refused")
            return Change(result=len(state))

        return _decide

    results = await asyncio.gather(
        *(store.mutate("a", decide(i)) for i in range(20)), return_exceptions=True
    )
    assert isinstance(results[7], Refused)
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["items"] == [i for i in range(20) if i != 7]
    assert codec.loads == 1 and doc["version"] == 2, "one parse and one write for the batch"


# --- 4. the outbox relay --------------------------------------------------------------


async def test_relay_publishes_every_event_in_order_and_empties_the_outbox(
    replicas: Replicas, broker_env: BrokerEnv, atomic_updates: bool
) -> None:
    d = replicas.db()
    locks = Locks(d["locks"])
    store = AggregateStore(
        d["aggs"],
        locks,
        service=broker_env.service,
        atomic_updates=atomic_updates,
        cipher=FieldCipher({"k1": os.urandom(32)}, "k1"),
    )
    broker = await broker_env.broker()
    channel = await broker_env.channel()
    spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, locks, [store], poll_s=0.2)

    await store.create({"_id": "a", "n": 0})
    events = [rejected() for _ in range(50)]
    for start in range(0, 50, 5):
        chunk = events[start : start + 5]
        await store.mutate(
            "a", lambda doc, _s, chunk=chunk: Change(set={"n": doc["n"] + 1}, events=chunk)
        )

    messages = await take_all(channel, spy, expected=50, timeout=20)
    assert [m.message_id for m in messages] == [e.id for e in events]
    # Sealed at rest, opened for the wire.
    assert [Envelope.model_validate_json(m.body) for m in messages] == events

    async def outbox_empty() -> bool:
        doc = await d["aggs"].find_one({"_id": "a"})
        assert doc["outbox"] == [] and doc["has_outbox"] is False, outbox_ids(doc)
        return True

    await eventually(outbox_empty, timeout=10, what="outbox emptied")


async def test_unroutable_mandatory_event_stays_in_the_outbox_until_bound(
    replicas: Replicas, broker_env: BrokerEnv, atomic_updates: bool
) -> None:
    d = replicas.db()
    locks = Locks(d["locks"])
    store = AggregateStore(
        d["aggs"], locks, service=broker_env.service, atomic_updates=atomic_updates
    )
    broker = await broker_env.broker()
    channel = await broker_env.channel()
    rejected_spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, locks, [store], poll_s=0.2)

    blocked = [withdrawn() for _ in range(3)]  # nobody is bound to registration.withdrawn
    assert all(e.must_be_routed for e in blocked)
    behind = rejected()  # routable, but after them in the same outbox
    failures = metric(PUBLISH_FAILURES, service=broker_env.service, type=WITHDRAWN)
    await store.create({"_id": "a"}, events=[*blocked, behind])

    await eventually(
        lambda: (
            metric(PUBLISH_FAILURES, service=broker_env.service, type=WITHDRAWN) >= failures + 2
        ),
        timeout=10,
        what="the relay tried (and retried) the unroutable event",
    )
    doc = await d["aggs"].find_one({"_id": "a"})
    assert outbox_ids(doc) == [e.id for e in [*blocked, behind]] and doc["has_outbox"] is True
    assert await ready_count(channel, rejected_spy) == 0, "a later event never overtakes"

    withdrawn_spy = await broker_env.spy(channel, WITHDRAWN)
    messages = await take_all(channel, withdrawn_spy, expected=3, timeout=20)
    assert [m.message_id for m in messages] == [e.id for e in blocked]
    [message] = await take_all(channel, rejected_spy, expected=1, timeout=10)
    assert message.message_id == behind.id

    async def outbox_empty() -> bool:
        doc = await d["aggs"].find_one({"_id": "a"})
        assert doc["outbox"] == [] and doc["has_outbox"] is False, outbox_ids(doc)
        return True

    await eventually(outbox_empty, timeout=10, what="outbox emptied")


async def test_two_relays_on_one_collection_publish_each_event_once(
    replicas: Replicas, broker_env: BrokerEnv, atomic_updates: bool
) -> None:
    """The relay's docstring: two replicas never publish the same events at the same
    moment; only a crash between publish and removal repeats one. No crash here, so
    every event must arrive exactly once, and each aggregate's events in order."""
    stacks = []
    for k in range(2):
        d = replicas.db()
        locks = Locks(d["locks"], owner=f"relay-{k}")
        service = f"{broker_env.service}-{k}"
        store = AggregateStore(d["aggs"], locks, service=service, atomic_updates=atomic_updates)
        broker = await broker_env.broker(service)
        await broker_env.relay(broker, locks, [store], poll_s=0.1)
        stacks.append((d, store, service))
    channel = await broker_env.channel()
    spy = await broker_env.spy(channel, REJECTED)

    aggregates = [f"agg-{i}" for i in range(6)]
    expected: dict[str, list[str]] = {a: [] for a in aggregates}
    for a in aggregates:
        await stacks[0][1].create({"_id": a, "n": 0})

    async def writer(i: int, aggregate_id: str) -> None:
        for w in range(5):  # alternate replicas, so both relays are told of changes
            chunk = [rejected() for _ in range(4)]
            expected[aggregate_id] += [e.id for e in chunk]
            await stacks[(i + w) % 2][1].mutate(
                aggregate_id,
                lambda doc, _s, chunk=chunk: Change(set={"n": doc["n"] + 1}, events=chunk),
            )

    await asyncio.wait_for(asyncio.gather(*(writer(i, a) for i, a in enumerate(aggregates))), 30)
    all_ids = {i for ids in expected.values() for i in ids}
    assert len(all_ids) == 120

    messages = await collect(
        channel,
        spy,
        until=lambda got: {m.message_id for m in got} >= all_ids,
        timeout=20,
    )

    async def outboxes_empty() -> bool:
        left = await stacks[0][0]["aggs"].count_documents({"has_outbox": True})
        assert left == 0, f"{left} aggregate(s) still have an outbox"
        return True

    await eventually(outboxes_empty, timeout=10, what="every outbox emptied")
    await asyncio.sleep(0.3)  # anything published twice would be in the queue by now
    messages += await drain(channel, spy)

    seen = Counter(m.message_id for m in messages)
    assert all_ids - set(seen) == set(), "no event is missing"
    assert set(seen) - all_ids == set()
    duplicates = {i: n for i, n in seen.items() if n > 1}
    by_relay = [metric(EVENTS_PUBLISHED, service=s, type=REJECTED) for _, _, s in stacks]
    print(f"two relays: published per relay {by_relay}, duplicates {len(duplicates)}")
    assert sum(by_relay) == len(messages)
    for aggregate_id, ids in expected.items():
        firsts = list(dict.fromkeys(m.message_id for m in messages if m.message_id in set(ids)))
        assert firsts == ids, f"{aggregate_id}'s events out of order"
    assert duplicates == {}, f"{len(duplicates)} event(s) published more than once"


# --- 5. due work ---------------------------------------------------------------------


async def test_two_due_runners_share_due_work_without_overlap(
    replicas: Replicas, db, run_id: str
) -> None:
    kind, service = f"k{run_id}", f"due{run_id}"
    now = datetime.now(UTC)
    due = [f"job-{i:02d}" for i in range(24)]
    await db.jobs.insert_many(
        [{"_id": j, "due_at": now - timedelta(seconds=1), "done": False} for j in due]
        + [
            {"_id": "flaky", "due_at": now - timedelta(seconds=1), "done": False},
            {"_id": "later", "due_at": now + timedelta(hours=1), "done": False},
        ]
    )
    exclusion = Exclusion()
    invocations: Counter[str] = Counter()
    effective: Counter[str] = Counter()
    by_runner: Counter[int] = Counter()

    def runner(k: int) -> DueRunner:
        jobs = replicas.db()["jobs"]

        async def find_due(at: datetime) -> list[str]:
            query = {"done": False, "due_at": {"$lte": at}}
            return [doc["_id"] async for doc in jobs.find(query, {"_id": 1}).sort("_id", 1)]

        async def run(item_id: str) -> None:
            with exclusion.enter(item_id, k):
                invocations[item_id] += 1
                await asyncio.sleep(0.02)  # widen the window for a second runner
                if item_id == "flaky" and invocations[item_id] <= 2:
                    raise Refused("flaky job fails twice")
                # Idempotent, as DueRunner requires: re-read under the claim.
                doc = await jobs.find_one({"_id": item_id})
                if not doc["done"]:
                    effective[item_id] += 1
                    by_runner[k] += 1
                    await jobs.update_one({"_id": item_id}, {"$set": {"done": True}})

        return DueRunner(
            Locks(replicas.db()["locks"], owner=f"runner-{k}"),
            service=service,
            kind=kind,
            find_due=find_due,
            run=run,
            poll_s=0.1,
        )

    runners = [runner(0), runner(1)]
    for r in runners:
        await r.start()
    try:

        async def all_done() -> bool:
            left = await db.jobs.count_documents({"done": False, "_id": {"$ne": "later"}})
            assert left == 0, f"{left} due job(s) not done"
            return True

        await eventually(all_done, timeout=20, what="every due job done")
    finally:
        for r in runners:
            await r.stop()

    exclusion.assert_no_overlap()
    assert effective == Counter({j: 1 for j in [*due, "flaky"]})
    assert "later" not in invocations, "an item not yet due must not run"
    assert invocations["flaky"] == 3
    failed = metric(JOBS_RUN, service=service, kind=kind, outcome="failed")
    ok = metric(JOBS_RUN, service=service, kind=kind, outcome="ok")
    assert failed == 2 and ok == sum(invocations.values()) - 2
    print(f"due work done per runner {dict(by_runner)}, invocations {sum(invocations.values())}")


async def test_failing_due_run_is_counted_and_retried_on_the_next_poll(db, run_id: str) -> None:
    kind, service = f"k{run_id}", f"due{run_id}"
    now = datetime.now(UTC)
    await db.jobs.insert_many(
        [
            {"_id": j, "due_at": now - timedelta(seconds=1), "done": False}
            for j in ("claimed", "flaky", "steady")
        ]
    )
    # Another replica is running "claimed" right now.
    await db.locks.insert_one(
        {
            "_id": f"due:{kind}:claimed",
            "token": "other",
            "owner": "other-replica",
            "expires_at": now + timedelta(hours=1),
        }
    )
    attempts: Counter[str] = Counter()

    async def find_due(at: datetime) -> list[str]:
        query = {"done": False, "due_at": {"$lte": at}}
        return [doc["_id"] async for doc in db.jobs.find(query, {"_id": 1}).sort("_id", 1)]

    async def run(item_id: str) -> None:
        attempts[item_id] += 1
        if item_id == "flaky" and attempts[item_id] <= 2:
            raise Refused("not yet")
        await db.jobs.update_one({"_id": item_id}, {"$set": {"done": True}})

    runner = DueRunner(
        Locks(db["locks"]), service=service, kind=kind, find_due=find_due, run=run, poll_s=60
    )

    def counted(outcome: str) -> float:
        return metric(JOBS_RUN, service=service, kind=kind, outcome=outcome)

    assert await runner.run_once() == 1
    assert attempts == Counter({"flaky": 1, "steady": 1}), "one try per poll; claimed skipped"
    assert (counted("failed"), counted("ok")) == (1, 1)

    assert await runner.run_once() == 0
    assert attempts == Counter({"flaky": 2, "steady": 1})
    assert (counted("failed"), counted("ok")) == (2, 1)

    assert await runner.run_once() == 1
    assert attempts == Counter({"flaky": 3, "steady": 1})
    assert (counted("failed"), counted("ok")) == (2, 2)
    assert await db.jobs.count_documents({"done": False}) == 1  # only "claimed"

    # The other replica died: once its claim expires, the item is taken over and run.
    await db.locks.update_one(
        {"_id": f"due:{kind}:claimed"},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    assert await runner.run_once() == 1
    assert attempts["claimed"] == 1
    assert await db.jobs.count_documents({"done": False}) == 0
    assert await db.locks.count_documents({}) == 0
