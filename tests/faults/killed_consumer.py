"""A consumer that dies the hard way right after its write committed: SIGKILL to itself
between the aggregate's commit and the broker ack (matrix row 5; its test starts it).

Usage: python -m tests.faults.killed_consumer AMQP_URL RUN_ID MONGODB_URL DB_NAME KILL_AT
Applies registration.withdrawn events to the aggregate ``a`` of collection ``aggs`` (one
increment per event, the event's id in its inbox) and kills itself once the KILL_AT-th
event is committed. Prints "consuming" when its consumer is registered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from pymongo import AsyncMongoClient

from shared.aggregates import AggregateStore, Change
from shared.events import Envelope
from tests.integration.helpers_messaging import MessagingEnv

WITHDRAWN = "registration.withdrawn"


def increment(doc: dict[str, Any], _state: Any) -> Change:
    return Change(set={"n": doc["n"] + 1})


async def main(url: str, run_id: str, mongodb_url: str, db_name: str, kill_at: int) -> None:
    store = AggregateStore(AsyncMongoClient(mongodb_url)[db_name]["aggs"], service="svc")
    env = MessagingEnv(url, run_id)
    broker = await env.broker(env.topology())
    applied = 0

    async def apply(envelope: Envelope) -> None:
        nonlocal applied
        outcome = await store.mutate("a", increment, event_id=envelope.id)
        applied += 0 if outcome.duplicate else 1
        if applied >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # committed; the ack never goes

    await broker.consume({WITHDRAWN: apply})
    print("consuming", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, run_id, mongodb_url, db_name, kill_at = sys.argv[1:6]
    asyncio.run(main(url, run_id, mongodb_url, db_name, int(kill_at)))
