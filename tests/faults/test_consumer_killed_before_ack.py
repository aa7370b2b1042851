"""Matrix row 5: a consumer killed after its write committed and before its ack
(reliability.md §9; docs/reliability.md).

The consumer runs in a process of its own (tests/faults/killed_midway.py) and SIGKILLs
itself the moment the third event's write has committed: no goodbye, the ack never goes.
The broker hands its unacknowledged deliveries to the next consumer, marked redelivered.
Pass: each event's effect exactly once (the aggregate counts 10, its inbox holds each id
once); the redeliveries of committed events are found duplicates by the inbox and
acknowledged (not retried, not dead-lettered); every queue empty afterwards.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from shared.aggregates import AggregateStore
from shared.events import Envelope
from tests.faults.harness import Tally
from tests.faults.killed_midway import WITHDRAWN, increment, spawn
from tests.integration.helpers_messaging import MessagingEnv, all_empty, eventually, withdrawn

EVENTS = 10
KILL_AT = 3


def _redelivered() -> float:
    sample = REGISTRY.get_sample_value(
        "holdspace_events_redelivered_total", {"service": "svc", "type": WITHDRAWN}
    )
    return sample or 0.0


@pytest.mark.faults
@pytest.mark.timeout(120)
async def test_a_consumer_killed_between_commit_and_ack_applies_the_event_once(
    env: MessagingEnv, db: AsyncDatabase, inspect, rabbitmq_url: str, mongodb_url: str, run_id: str
) -> None:
    await db.aggs.insert_one({"_id": "a", "n": 0, "version": 1, "inbox": []})
    topology = env.topology()
    publisher = await env.broker(topology)  # declares the topology
    doomed = await spawn("consumer", rabbitmq_url, run_id, mongodb_url, db.name, str(KILL_AT))
    try:
        assert doomed.stdout is not None
        while (line := await asyncio.wait_for(doomed.stdout.readline(), 30)) != b"ready\n":
            assert line, "the consumer process ended before consuming"
        tally = Tally()
        sent = [withdrawn() for _ in range(EVENTS)]
        for envelope in sent:
            await publisher.publish(envelope)  # confirmed: acknowledged
            tally.attempt(envelope.id, acknowledged=True)
        code = await asyncio.wait_for(doomed.wait(), 30)
        assert code == -9, f"the consumer was not killed (exit {code})"
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
    committed_before_the_kill = set((await db.aggs.find_one({"_id": "a"}))["inbox"])
    assert len(committed_before_the_kill) >= KILL_AT

    store = AggregateStore(db["aggs"], service="svc")
    duplicates: list[str] = []
    redelivered_before = _redelivered()

    async def apply(envelope: Envelope) -> None:
        outcome = await store.mutate("a", increment, event_id=envelope.id)
        if outcome.duplicate:
            duplicates.append(envelope.id)

    survivor = await env.broker(topology)
    await survivor.consume({WITHDRAWN: apply})

    async def all_applied() -> bool:
        doc = await db.aggs.find_one({"_id": "a"})
        assert doc["n"] == EVENTS, doc["n"]
        return True

    await eventually(all_applied, timeout=30, what="every event applied")
    await eventually(
        lambda: all_empty(inspect, topology.all_queues()), timeout=15, what="every queue empty"
    )
    doc = await db.aggs.find_one({"_id": "a"})
    tally.found(doc["inbox"])
    tally.assert_valid()
    # What was committed and never acknowledged came back, marked redelivered, was found
    # applied by the inbox and acknowledged (the queues are empty, nothing dead-lettered).
    assert duplicates, "no redelivery of a committed event reached the inbox"
    assert set(duplicates) <= committed_before_the_kill, (duplicates, committed_before_the_kill)
    assert _redelivered() - redelivered_before >= len(duplicates)
    print(
        f"row 5: {len(committed_before_the_kill)} committed before the kill, "
        f"{len(duplicates)} of them redelivered and acked as duplicates; tally {tally.score()}"
    )
