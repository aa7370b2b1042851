"""Matrix row 7: an outbox relay killed after the broker confirmed its publishes and
before it removed them from the outbox (reliability.md §9; docs/reliability.md).

The relay runs in a process of its own (tests/faults/killed_midway.py) and SIGKILLs
itself at the moment it would remove what it published. Its claim on the aggregate runs
out (3 s), another relay publishes the same events again, with the same ids. Pass: each
event's effect exactly once at the consumer; each repeat is one inbox duplicate hit;
the outbox empty and every queue drained afterwards.
"""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.aggregates import AggregateStore
from shared.events import Envelope
from shared.outbox import OutboxRelay
from tests.faults.harness import Tally
from tests.faults.killed_midway import SERVICE, WITHDRAWN, increment, spawn
from tests.integration.helpers_messaging import MessagingEnv, all_empty, eventually, withdrawn

EVENTS = 5


@pytest.mark.faults
@pytest.mark.timeout(120)
async def test_a_relay_killed_between_publish_and_removal_repeats_nothing_downstream(
    env: MessagingEnv, db: AsyncDatabase, inspect, rabbitmq_url: str, mongodb_url: str, run_id: str
) -> None:
    topology = env.topology()
    sources = AggregateStore(db["sources"], service=SERVICE)
    consumer_store = AggregateStore(db["aggs"], service=SERVICE)
    await consumer_store.create({"_id": "a", "n": 0})
    duplicates: list[str] = []

    async def apply(envelope: Envelope) -> None:
        outcome = await consumer_store.mutate("a", increment, event_id=envelope.id)
        if outcome.duplicate:
            duplicates.append(envelope.id)

    broker = await env.broker(topology)
    await broker.consume({WITHDRAWN: apply})
    events = [withdrawn() for _ in range(EVENTS)]
    await sources.create({"_id": "src", "n": 0}, events=events)
    tally = Tally()
    for envelope in events:  # committed to the outbox: acknowledged to its writer
        tally.attempt(envelope.id, acknowledged=True)

    doomed = await spawn("relay", rabbitmq_url, run_id, mongodb_url, db.name)
    try:
        output, _ = await asyncio.wait_for(doomed.communicate(), 60)
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
    assert doomed.returncode == -9, f"the relay was not killed: {output.decode()[-2000:]}"
    left = await sources.get("src")
    assert [e["id"] for e in left["outbox"]] == [e.id for e in events], "removed before the kill?"

    async def applied_by_the_first() -> bool:
        doc = await db.aggs.find_one({"_id": "a"})
        assert doc["n"] == EVENTS, doc["n"]
        return True

    await eventually(applied_by_the_first, timeout=15, what="the dead relay's publishes applied")
    survivor = OutboxRelay(broker, [sources], service=SERVICE, poll_s=0.2, claim_s=3)
    await survivor.start()
    try:

        async def all_repeated_and_removed() -> bool:
            assert len(duplicates) == EVENTS, duplicates
            assert not (await sources.get("src"))["outbox"]
            return True

        await eventually(all_repeated_and_removed, timeout=30, what="the events sent again")
    finally:
        await survivor.stop()
    await eventually(
        lambda: all_empty(inspect, topology.all_queues()), timeout=15, what="every queue empty"
    )
    doc = await db.aggs.find_one({"_id": "a"})
    tally.found(doc["inbox"])
    tally.assert_valid()
    assert doc["n"] == EVENTS
    assert sorted(duplicates) == sorted(e.id for e in events), "one duplicate hit per event"
    print(f"row 7: {EVENTS} published twice, {len(duplicates)} inbox hits; tally {tally.score()}")
