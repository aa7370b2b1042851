"""Matrix row 16: a handler that hangs for good (reliability.md §9; docs/reliability.md).

RabbitMQ closes a channel whose delivery stays unacknowledged past its consumer timeout
(30 min by default) with PRECONDITION_FAILED, taking every other delivery on it along.
Holdspace's own handler timeout comes first: the hanging delivery is retried, then
dead-lettered, while the rest flow on the same channel. With the database gate on and
the database answering, a hang is not taken for an outage: its attempts are counted.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aio_pika.abc import AbstractChannel
from pymongo import AsyncMongoClient

from shared.events import Envelope
from shared.messaging import H_ATTEMPT, H_LAST_ERROR
from shared.mongo import DatabaseGate
from tests.integration.helpers_messaging import (
    MessagingEnv,
    eventually,
    header_text,
    queue_counts,
    rejected,
    take_all,
    withdrawn,
)

REJECTED = "registration.rejected"
WITHDRAWN = "registration.withdrawn"


@pytest.mark.timeout(90)
async def test_a_hanging_handler_is_cut_off_retried_and_dead_lettered_while_others_flow(
    env: MessagingEnv, inspect: AbstractChannel, mongo_client: AsyncMongoClient
) -> None:
    topology = env.topology(retry_delays_ms=(100, 200))
    handler_timeout_s = 1.0
    broker = await env.broker(
        topology, handler_timeout_s=handler_timeout_s, gate=DatabaseGate(mongo_client)
    )
    hung_at: list[float] = []
    done: list[str] = []

    async def hangs(envelope: Envelope) -> None:
        hung_at.append(time.monotonic())
        await asyncio.Event().wait()  # never set: a call that never returns

    async def works(envelope: Envelope) -> None:
        done.append(envelope.id)

    await broker.consume({REJECTED: hangs, WITHDRAWN: works})
    stuck = rejected()
    await broker.publish(stuck)
    others = [withdrawn() for _ in range(20)]
    for envelope in others:
        await broker.publish(envelope)

    # The others are not held up behind the hanging one.
    await eventually(lambda: len(done) == 20, timeout=10, what="the others handled")
    [dead] = await take_all(inspect, topology.dlq, expected=1, timeout=30)
    assert dead.message_id == stuck.id
    assert dead.headers[H_ATTEMPT] == topology.max_attempts == 3
    assert "TimeoutError" in header_text(dead, H_LAST_ERROR)
    assert len(hung_at) == 3
    # Each attempt was cut off by the handler timeout, far below the broker's own.
    for before, after in zip(hung_at, hung_at[1:], strict=False):
        assert after - before < handler_timeout_s + 2

    # The channel survived: a new event still flows through the same consumer.
    late = withdrawn()
    await broker.publish(late)
    await eventually(lambda: late.id in done, timeout=10, what="the channel still consumes")
    counts = await queue_counts(inspect, topology.all_queues())
    assert not any(counts.values()), counts
    assert sorted(done) == sorted([*(e.id for e in others), late.id])  # each once
