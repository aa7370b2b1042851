"""Aggregates, the outbox relay and due work against the real database and broker.

Every change to an aggregate is one update conditioned on its version (shared/
aggregates.py): these tests model replicas as separate clients with their own
stores, race them, and check the outcome in the database (counts, versions,
outboxes) and on the broker (what arrived, in which order, how often). Clocks are
skewed per replica where a clock could matter. Nothing is mocked; every wait has a
deadline.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from pymongo.errors import DuplicateKeyError

from shared.aggregates import AggregateStore, Change, ConcurrentModification
from shared.due import DueClaims, DueRunner
from shared.events import Envelope
from shared.ops.outbox import inspect_outbox
from shared.security import DecryptionError, FieldCipher

from .helpers_messaging import eventually, ready_count, rejected, take_all, withdrawn
from .helpers_persistence import (
    DB_WRITES,
    EVENTS_PUBLISHED,
    JOBS_RUN,
    PUBLISH_FAILURES,
    WRITE_CONFLICTS,
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


def skewed(offset: timedelta):
    return lambda: datetime.now(UTC) + offset


def _increment(doc: dict[str, Any], _state: Any) -> Change:
    return Change(set={"n": doc["n"] + 1}, result=doc["n"] + 1)


def _append(i: int):
    return lambda doc, _state: Change(set={"items": doc["items"] + [i]}, result=i)


class Refused(Exception):
    pass


# --- 1. compare-and-set across replicas ----------------------------------------------

CALLERS = 200
REPLICAS = 4


async def test_four_replicas_apply_200_concurrent_increments_exactly_once(
    replicas: Replicas, db, run_id: str
) -> None:
    services = [f"cas{run_id}-{k}" for k in range(REPLICAS)]
    stores = [AggregateStore(replicas.db()["aggs"], service=s) for s in services]
    await stores[0].create({"_id": "a", "n": 0})

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(stores[i % REPLICAS].mutate("a", _increment) for i in range(CALLERS))),
        60,
    )

    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == CALLERS and doc["version"] == 1 + CALLERS
    # Each caller saw its own increment land: the results are 1..200, each once.
    assert sorted(o.result for o in outcomes) == list(range(1, CALLERS + 1))
    conflicts = sum(metric(WRITE_CONFLICTS, service=s, collection="aggs") for s in services)
    writes = sum(metric(DB_WRITES, service=s, op="update") for s in services)
    assert writes == CALLERS + conflicts, "a write that lost changed nothing and was redone"
    print(f"4 replicas, {CALLERS} increments: {conflicts:.0f} lost races, all redone")
    assert conflicts > 0, "the replicas never raced: this test would not see a lost update"


async def test_control_read_then_write_without_the_version_condition_loses_updates(
    replicas: Replicas, db
) -> None:
    """What the version condition prevents, shown on the same server: the control."""
    collections = [replicas.db()["aggs"] for _ in range(REPLICAS)]
    await collections[0].insert_one({"_id": "a", "n": 0})

    async def unconditional(i: int) -> None:
        coll = collections[i % REPLICAS]
        doc = await coll.find_one({"_id": "a"})
        await asyncio.sleep(0)
        await coll.update_one({"_id": "a"}, {"$set": {"n": doc["n"] + 1}})

    await asyncio.gather(*(unconditional(i) for i in range(CALLERS)))
    final = (await db.aggs.find_one({"_id": "a"}))["n"]
    print(f"control without the condition: {final} of {CALLERS} increments survived")
    assert final < CALLERS


async def test_writers_with_skewed_clocks_lose_no_acknowledged_write(
    replicas: Replicas, db, run_id: str
) -> None:
    """Three replicas an hour apart: no clock takes part in deciding a write."""
    offsets = [timedelta(hours=-1), timedelta(0), timedelta(hours=1)]
    stores = [
        AggregateStore(replicas.db()["aggs"], service=f"skew{run_id}-{k}", clock=skewed(off))
        for k, off in enumerate(offsets)
    ]
    await stores[1].create({"_id": "a", "items": []})

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(stores[i % 3].mutate("a", _append(i)) for i in range(150))), 60
    )

    assert all(o.changed for o in outcomes)
    doc = await db.aggs.find_one({"_id": "a"})
    assert sorted(doc["items"]) == list(range(150)), "every acknowledged append is there"
    assert doc["version"] == 151


async def test_a_conflict_that_persists_gives_up_and_writes_nothing(db) -> None:
    store = AggregateStore(db["aggs"], service="t", conflict_budget_s=0.3)
    await store.create({"_id": "a", "n": 0, "mine": False})
    stop = asyncio.Event()

    async def another_writer() -> None:  # bumps the version between our read and write
        while not stop.is_set():
            await db.aggs.update_one({"_id": "a"}, {"$inc": {"version": 1, "n": 1}})

    others = [asyncio.create_task(another_writer()) for _ in range(3)]
    try:

        def slow_decision(doc: dict[str, Any], _s: Any) -> Change:
            return Change(set={"mine": True})

        async def mutate_slowly() -> None:
            # Each attempt reads, then waits for the other writers, then writes.
            original = store.get

            async def get_then_yield(aggregate_id: str) -> dict[str, Any] | None:
                doc = await original(aggregate_id)
                await asyncio.sleep(0.005)
                return doc

            store.get = get_then_yield  # type: ignore[method-assign]
            await store.mutate("a", slow_decision)

        with pytest.raises(ConcurrentModification):
            await asyncio.wait_for(mutate_slowly(), 10)
    finally:
        stop.set()
        await asyncio.gather(*others)
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["mine"] is False, "a write that gave up left no trace"


async def test_one_process_takes_turns_and_never_races_itself(db, run_id: str) -> None:
    service = f"turns{run_id}"
    store = AggregateStore(db["aggs"], service=service)
    await store.create({"_id": "a", "items": []})

    outcomes = await asyncio.gather(*(store.mutate("a", _append(i)) for i in range(100)))

    assert [o.result for o in outcomes] == list(range(100))
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["items"] == list(range(100)), "applied in the order they were asked"
    assert metric(WRITE_CONFLICTS, service=service, collection="aggs") == 0
    assert store._turns == {}, "turns are forgotten once nobody waits"


# --- 2. one aggregate: decisions, inbox, outbox ---------------------------------------


async def test_failing_decision_fails_only_its_own_caller(db) -> None:
    store = AggregateStore(db["aggs"], service="t")
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
    assert doc["version"] == 1 + 15, "one write per accepted decision, none for a refusal"


async def test_decision_setting_a_reserved_field_is_refused(db) -> None:
    store = AggregateStore(db["aggs"], service="t")
    await store.create({"_id": "a", "items": []})
    for reserved in ("version", "outbox", "inbox", "relay_claim", "due_claim"):
        with pytest.raises(ValueError):
            await store.mutate("a", lambda doc, _s, f=reserved: Change(set={f: 99}))
    await store.mutate("a", _append(1))
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["items"] == [1] and doc["version"] == 2


async def test_event_id_makes_a_redelivery_a_no_op_and_the_inbox_is_capped(db) -> None:
    store = AggregateStore(db["aggs"], service="t", inbox_size=5)
    await store.create({"_id": "a", "n": 0})

    first = await store.mutate("a", _increment, event_id="e-0")
    assert first.changed and not first.duplicate
    again = await store.mutate("a", _increment, event_id="e-0")
    assert again.duplicate and not again.changed
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == 1 and doc["version"] == 2, "a redelivery writes nothing"

    # The same event twice at once: one applies it, the other finds it applied.
    pair = await asyncio.gather(
        store.mutate("a", _increment, event_id="e-1"),
        store.mutate("a", _increment, event_id="e-1"),
    )
    assert sorted(o.duplicate for o in pair) == [False, True]
    # An event whose decision changes nothing is still remembered.
    await store.mutate("a", lambda doc, _s: None, event_id="e-2")
    assert (await store.mutate("a", _increment, event_id="e-2")).duplicate
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == 2 and doc["inbox"] == ["e-0", "e-1", "e-2"]

    for j in range(3, 10):
        await store.mutate("a", _increment, event_id=f"e-{j}")
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["inbox"] == [f"e-{j}" for j in range(5, 10)], "capped at inbox_size, newest kept"
    assert doc["n"] == 9
    assert (await store.mutate("a", _increment, event_id="e-9")).duplicate
    # An id older than the cap is forgotten: that is what the cap trades away.
    assert not (await store.mutate("a", _increment, event_id="e-0")).duplicate


async def test_the_same_event_on_two_replicas_at_once_applies_once(replicas: Replicas, db) -> None:
    stores = [AggregateStore(replicas.db()["aggs"], service="t") for _ in range(2)]
    await stores[0].create({"_id": "a", "n": 0})
    for j in range(30):  # a redelivery racing the first delivery, 30 times
        pair = await asyncio.gather(*(s.mutate("a", _increment, event_id=f"e-{j}") for s in stores))
        assert sorted(o.duplicate for o in pair) == [False, True]
    assert (await db.aggs.find_one({"_id": "a"}))["n"] == 30


async def test_events_land_in_the_outbox_in_order(db) -> None:
    store = AggregateStore(db["aggs"], service="t")
    announced: list[str] = []
    store.listeners.append(lambda _store, aggregate_id: announced.append(aggregate_id))
    events = [rejected() for _ in range(7)]

    await store.create({"_id": "a", "n": 0}, events=events[:2])
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["has_outbox"] is True and outbox_ids(doc) == [e.id for e in events[:2]]
    with pytest.raises(DuplicateKeyError):
        await store.create({"_id": "a", "n": 0})

    await store.mutate("a", lambda doc, _s: Change(set={"n": 1}, events=events[2:5]))
    await store.mutate("a", lambda doc, _s: Change(events=[events[5]]))
    await store.mutate("a", lambda doc, _s: Change(events=[events[6]]))
    await store.mutate("a", lambda doc, _s: Change(set={"n": 2}))  # no events

    doc = await db.aggs.find_one({"_id": "a"})
    assert outbox_ids(doc) == [e.id for e in events]
    assert doc["has_outbox"] is True and doc["n"] == 2
    assert store.envelopes(doc) == events
    assert announced == ["a"] * 4, "create and each change with events; not the one without"


async def test_outbox_is_sealed_at_rest_with_a_cipher(db, run_id: str) -> None:
    cipher = FieldCipher({"k1": os.urandom(32)}, "k1")
    store = AggregateStore(db["aggs"], service="t", cipher=cipher)
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
    without_key = AggregateStore(db["aggs"], service="t")
    with pytest.raises(RuntimeError):
        without_key.envelopes(raw)


async def test_remove_published_drops_exactly_the_given_ids_and_leaves_the_version(db) -> None:
    store = AggregateStore(db["aggs"], service="t")
    events = [rejected() for _ in range(6)]
    await store.create({"_id": "a", "n": 0}, events=events)

    await store.remove_published("a", {events[1].id, events[4].id, "never-there"})
    doc = await db.aggs.find_one({"_id": "a"})
    assert outbox_ids(doc) == [e.id for e in (events[0], events[2], events[3], events[5])]
    assert doc["version"] == 1, "a removal does not make writers decide again"

    await store.remove_published("a", {events[0].id, events[2].id, events[3].id, events[5].id})
    assert (await db.aggs.find_one({"_id": "a"}))["outbox"] == []
    await store.remove_published("missing", {"x"})  # an aggregate gone meanwhile: no error


async def test_a_removal_racing_writers_loses_neither_their_events_nor_their_changes(
    replicas: Replicas, db
) -> None:
    """The relay's $pull does not take part in the version condition: appends survive it."""
    writer = AggregateStore(replicas.db()["aggs"], service="t")
    relay_side = AggregateStore(replicas.db()["aggs"], service="t")
    await writer.create({"_id": "a", "n": 0})
    written: list[str] = []

    async def write(i: int) -> None:
        event = rejected()
        written.append(event.id)
        await writer.mutate("a", lambda doc, _s: Change(set={"n": doc["n"] + 1}, events=[event]))

    async def remove_what_is_there() -> set[str]:
        removed: set[str] = set()
        for _ in range(40):
            doc = await relay_side.get("a")
            ids = set(outbox_ids(doc))
            if ids:
                await relay_side.remove_published("a", ids)
                removed |= ids
            await asyncio.sleep(0.002)
        return removed

    removing = asyncio.create_task(remove_what_is_there())
    await asyncio.gather(*(write(i) for i in range(60)))
    removed = await removing
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["n"] == 60
    assert removed | set(outbox_ids(doc)) == set(written), "no event vanished unremoved"
    assert removed & set(outbox_ids(doc)) == set()


async def test_what_a_process_remembers_of_its_own_write_is_what_a_read_gives(db) -> None:
    """The next change after this process's own write is decided without a read, on the
    document as the server holds it: millisecond times, map entries set by path."""
    store = AggregateStore(db["aggs"], service="t", inbox_size=2)
    await store.create({"_id": "a", "m": {"k": 1, "gone": 0}, "w": ["x"]})
    when = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    for n, event_id in enumerate(("e1", "e2", "e3")):
        await store.mutate(
            "a",
            lambda doc, _s, n=n: Change(
                set={"when": when, "m": {"k": 1, "j": n}, "w": [*doc["w"], n]},
                events=[rejected()],
            ),
            event_id=event_id,
        )
    reads = 0
    original = store.get

    async def counted(aggregate_id: str) -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        return await original(aggregate_id)

    store.get = counted  # type: ignore[method-assign]
    seen: dict[str, Any] = {}

    def look_then_write(doc: dict[str, Any], _s: Any) -> Change:
        seen.clear()
        seen.update(doc)
        return Change(set={"looked": True})

    fresh = await db.aggs.find_one({"_id": "a"})
    await store.mutate("a", look_then_write)
    assert reads == 0, "decided on what this process wrote last, without a read"
    assert seen == {k: v for k, v in fresh.items() if k != "outbox"}
    assert seen["when"].microsecond == 123000 and seen["m"] == {"k": 1, "j": 2}
    assert seen["w"] == ["x", 0, 1, 2] and seen["inbox"] == ["e2", "e3"]

    await db.aggs.update_one({"_id": "a"}, {"$inc": {"version": 1}})  # another process
    await store.mutate("a", look_then_write)
    assert reads == 1, "a stale memory is found out by the version condition, then read"
    # A decision that writes nothing cannot test what is remembered: it is decided on a
    # fresh read (here the memory is not even stale).
    assert (await store.mutate("a", lambda doc, _s: None)).changed is False
    assert reads == 2


class ListCodec:
    """Parsed state: ``entries`` as a dict; counts parses."""

    def __init__(self) -> None:
        self.loads = 0

    def load(self, doc: dict[str, Any]) -> dict[str, int]:
        self.loads += 1
        return dict(doc["entries"])

    def copy(self, state: dict[str, int]) -> dict[str, int]:
        return dict(state)

    def dump(self, state: dict[str, int]) -> dict[str, Any]:
        return {"entries": state}


async def test_a_codec_writes_only_the_entries_that_changed(db, mongo_client) -> None:
    codec = ListCodec()
    store = AggregateStore(db["aggs"], service="t", codec=codec)
    await store.create({"_id": "a", "entries": {f"r{i}": i for i in range(1000)}})

    def decide(_doc: dict[str, Any], entries: dict[str, int]) -> Change:
        entries["r7"] = -7
        del entries["r8"]
        entries["new"] = 1
        return Change(result=len(entries))

    outcome = await store.mutate("a", decide)
    assert outcome.result == 1000 and outcome.state["r7"] == -7
    doc = await db.aggs.find_one({"_id": "a"})
    assert doc["entries"]["r7"] == -7 and "r8" not in doc["entries"] and doc["entries"]["new"] == 1
    assert len(doc["entries"]) == 1000 and doc["entries"]["r999"] == 999
    assert codec.loads == 1


# --- 3. the outbox relay --------------------------------------------------------------


async def test_relay_publishes_every_event_in_order_and_empties_the_outbox(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    d = replicas.db()
    store = AggregateStore(
        d["aggs"], service=broker_env.service, cipher=FieldCipher({"k1": os.urandom(32)}, "k1")
    )
    broker = await broker_env.broker()
    channel = await broker_env.channel()
    spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, [store], poll_s=0.2)

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
        assert doc["relay_claim"] is None, "the claim is freed when done"
        return True

    await eventually(outbox_empty, timeout=10, what="outbox emptied")
    assert (await d["aggs"].find_one({"_id": "a"}))["version"] == 11, "only writers bump it"


async def test_an_entry_that_cannot_be_opened_is_set_aside_and_the_rest_go_out(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    # Sealed under a key this process no longer has (or corrupted): before, the relay
    # failed on it at every pass and the aggregate's later events never left.
    d = replicas.db()
    store = AggregateStore(
        d["aggs"], service=broker_env.service, cipher=FieldCipher({"k1": os.urandom(32)}, "k1")
    )
    first, lost, last = rejected(), rejected(), rejected()
    other_key = FieldCipher({"k0": os.urandom(32)}, "k0")
    unopenable = {**store._outbox_entry(lost)}
    unopenable["sealed_data"] = other_key.encrypt("{}", context=f"outbox:{lost.id}")
    outbox = [store._outbox_entry(first), unopenable, store._outbox_entry(last)]
    await d["aggs"].insert_one(
        {"_id": "a", "version": 1, "outbox": outbox, "has_outbox": True, "inbox": []}
    )
    broker = await broker_env.broker()
    channel = await broker_env.channel()
    spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, [store], poll_s=0.2)

    messages = await take_all(channel, spy, expected=2, timeout=20)
    assert [m.message_id for m in messages] == [first.id, last.id]

    async def set_aside() -> dict[str, Any]:
        doc = await d["aggs"].find_one({"_id": "a"})
        assert doc["outbox"] == [] and doc["has_outbox"] is False, outbox_ids(doc)
        assert [e["id"] for e in doc.get("outbox_parked", [])] == [lost.id]
        return doc

    doc = await eventually(set_aside, timeout=10, what="the bad entry set aside")
    assert doc["outbox_parked"][0]["error"] == "DecryptionError"
    report = await inspect_outbox(d, broker_env.service)
    assert [(e.id, e.error) for e in report.parked] == [(lost.id, "DecryptionError")]
    assert report.pending == 0


async def test_unroutable_mandatory_event_stays_in_the_outbox_until_bound(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    d = replicas.db()
    store = AggregateStore(d["aggs"], service=broker_env.service)
    broker = await broker_env.broker()
    channel = await broker_env.channel()
    rejected_spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, [store], poll_s=0.2)

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

    async def released() -> bool:  # between its retries (every 0.2 s), not held
        doc = await d["aggs"].find_one({"_id": "a"})
        return doc["relay_claim"] is None

    await eventually(
        released, timeout=5, interval=0.01, what="a relay that failed does not keep others out"
    )

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


async def _two_relays_race(
    replicas: Replicas, broker_env: BrokerEnv, clocks: list[timedelta]
) -> tuple[dict[str, list[str]], list[Any], list[str]]:
    """Six aggregates written alternately through two replicas, each with its relay."""
    stacks = []
    for k, offset in enumerate(clocks):
        d = replicas.db()
        service = f"{broker_env.service}-{k}"
        store = AggregateStore(d["aggs"], service=service, clock=skewed(offset))
        broker = await broker_env.broker(service)
        await broker_env.relay(broker, [store], poll_s=0.1, clock=skewed(offset))
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
            await stacks[(i + w) % 2][1].mutate(
                aggregate_id,
                lambda doc, _s, chunk=chunk: Change(set={"n": doc["n"] + 1}, events=chunk),
            )
            expected[aggregate_id] += [e.id for e in chunk]

    await asyncio.wait_for(asyncio.gather(*(writer(i, a) for i, a in enumerate(aggregates))), 30)
    all_ids = {i for ids in expected.values() for i in ids}
    assert len(all_ids) == 120

    messages = await collect(
        channel, spy, until=lambda got: {m.message_id for m in got} >= all_ids, timeout=20
    )

    async def outboxes_empty() -> bool:
        left = await stacks[0][0]["aggs"].count_documents({"outbox.0": {"$exists": True}})
        assert left == 0, f"{left} aggregate(s) still have events"
        return True

    await eventually(outboxes_empty, timeout=10, what="every outbox emptied")
    await asyncio.sleep(0.3)  # anything published twice would be in the queue by now
    messages += await drain(channel, spy)
    return expected, messages, [s for _, _, s in stacks]


async def test_two_relays_on_one_collection_publish_each_event_once_in_order(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    """Two replicas never publish one aggregate's events at the same moment; only a
    crash between publish and removal repeats one. No crash here, so every event
    must arrive exactly once, and each aggregate's events in order."""
    expected, messages, services = await _two_relays_race(
        replicas, broker_env, [timedelta(0), timedelta(0)]
    )
    all_ids = {i for ids in expected.values() for i in ids}
    seen = Counter(m.message_id for m in messages)
    assert all_ids - set(seen) == set(), "no event is missing"
    assert set(seen) - all_ids == set()
    by_relay = [metric(EVENTS_PUBLISHED, service=s, type=REJECTED) for s in services]
    print(f"two relays: published per relay {by_relay}")
    assert sum(by_relay) == len(messages)
    for aggregate_id, ids in expected.items():
        firsts = list(dict.fromkeys(m.message_id for m in messages if m.message_id in set(ids)))
        assert firsts == ids, f"{aggregate_id}'s events out of order"
    duplicates = {i: n for i, n in seen.items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} event(s) published more than once"


async def test_a_relay_whose_clock_runs_an_hour_ahead_loses_no_event(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    """Its claims look run out to nobody but itself, so it may take another relay's
    claim: events may then go out twice, never not at all."""
    expected, messages, _ = await _two_relays_race(
        replicas, broker_env, [timedelta(0), timedelta(hours=1)]
    )
    all_ids = {i for ids in expected.values() for i in ids}
    seen = Counter(m.message_id for m in messages)
    assert all_ids - set(seen) == set(), "no event is missing"
    print(f"skewed relays: {sum(n > 1 for n in seen.values())} event(s) published twice")


async def test_a_dead_relays_claim_runs_out_and_another_publishes(
    replicas: Replicas, broker_env: BrokerEnv
) -> None:
    d = replicas.db()
    store = AggregateStore(d["aggs"], service=broker_env.service)
    events = [rejected() for _ in range(3)]
    await store.create({"_id": "a", "n": 0}, events=events)
    # A relay that claimed the outbox and died: its claim holds for another 2 s.
    until = datetime.now(UTC) + timedelta(seconds=2)
    await d["aggs"].update_one(
        {"_id": "a"}, {"$set": {"relay_claim": {"by": "dead", "until": until}}}
    )
    # Writers are not held up by a claim.
    await store.mutate("a", _increment)

    broker = await broker_env.broker()
    channel = await broker_env.channel()
    spy = await broker_env.spy(channel, REJECTED)
    await broker_env.relay(broker, [store], poll_s=0.2)
    await asyncio.sleep(1.0)
    assert await ready_count(channel, spy) == 0, "a live claim is respected"
    messages = await take_all(channel, spy, expected=3, timeout=15)
    assert [m.message_id for m in messages] == [e.id for e in events]
    assert datetime.now(UTC) >= until


async def test_the_poll_clears_a_stale_pending_flag_and_only_that(db) -> None:
    from shared.outbox import OutboxRelay

    store = AggregateStore(db["aggs"], service="t")
    await store.create({"_id": "done", "n": 0}, events=[rejected()])
    await store.create({"_id": "pending", "n": 0}, events=[rejected()])
    doc = await store.get("done")
    await store.remove_published("done", set(outbox_ids(doc)))  # flag left set
    relay = OutboxRelay(None, [store], service="t")  # type: ignore[arg-type]

    await relay._poll()

    assert (await store.get("done"))["has_outbox"] is False
    assert (await store.get("pending"))["has_outbox"] is True
    assert relay._hints == {("aggs", "pending")}


# --- 4. due work ---------------------------------------------------------------------


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
                doc = await jobs.find_one({"_id": item_id})
                if not doc["done"]:
                    effective[item_id] += 1
                    by_runner[k] += 1
                    await jobs.update_one({"_id": item_id}, {"$set": {"done": True}})

        return DueRunner(
            service=service,
            kind=kind,
            find_due=find_due,
            run=run,
            claims=DueClaims(jobs),
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
    # Runs are at least once: a runner holding a listing made before another
    # runner finished an item may claim it again after that claim is freed.
    # Such a late run finds the job done and changes nothing (effective above).
    assert invocations["flaky"] >= 3, "the flaky job is retried until it succeeds"
    failed = metric(JOBS_RUN, service=service, kind=kind, outcome="failed")
    ok = metric(JOBS_RUN, service=service, kind=kind, outcome="ok")
    assert failed == 2 and ok == sum(invocations.values()) - 2
    assert await db.jobs.count_documents({"due_claim": {"$ne": None}}) == 0, "claims freed"
    print(f"due work done per runner {dict(by_runner)}, invocations {sum(invocations.values())}")


async def test_a_claimed_item_waits_for_its_claim_to_run_out(db, run_id: str) -> None:
    kind, service = f"k{run_id}", f"due{run_id}"
    now = datetime.now(UTC)
    await db.jobs.insert_many(
        [
            {"_id": j, "due_at": now - timedelta(seconds=1), "done": False}
            for j in ("claimed", "flaky", "steady")
        ]
    )
    # Another replica is running "claimed" right now.
    await db.jobs.update_one(
        {"_id": "claimed"},
        {"$set": {"due_claim": {"by": "other", "until": now + timedelta(hours=1)}}},
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
        service=service,
        kind=kind,
        find_due=find_due,
        run=run,
        claims=DueClaims(db["jobs"]),
        poll_s=60,
    )

    def counted(outcome: str) -> float:
        return metric(JOBS_RUN, service=service, kind=kind, outcome=outcome)

    assert await runner.run_once() == 1
    assert attempts == Counter({"flaky": 1, "steady": 1}), "one try per poll; claimed skipped"
    assert (counted("failed"), counted("ok")) == (1, 1)

    assert await runner.run_once() == 0
    assert await runner.run_once() == 1
    assert attempts == Counter({"flaky": 3, "steady": 1})
    assert await db.jobs.count_documents({"done": False}) == 1  # only "claimed"

    # The other replica died: once its claim runs out, the item is taken over and run.
    await db.jobs.update_one(
        {"_id": "claimed"}, {"$set": {"due_claim.until": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    assert await runner.run_once() == 1
    assert attempts["claimed"] == 1
    assert await db.jobs.count_documents({"done": False}) == 0


async def test_a_due_claim_is_taken_by_exactly_one_of_many_replicas(replicas: Replicas, db) -> None:
    await db.jobs.insert_one({"_id": "job"})
    claims = [DueClaims(replicas.db()["jobs"]) for _ in range(4)]
    taken = await asyncio.gather(*(c.take("job") for c in claims for _ in range(25)))
    assert sum(taken) == 1
