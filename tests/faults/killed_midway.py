"""Processes that die the hard way at the worst moment (matrix rows 5 and 7; their tests
start them): SIGKILL to themselves, no goodbye to the broker or the database.

    python -m tests.faults.killed_midway consumer AMQP_URL RUN_ID MONGODB_URL DB KILL_AT
    python -m tests.faults.killed_midway relay AMQP_URL RUN_ID MONGODB_URL DB

``consumer`` applies registration.withdrawn events to the aggregate ``a`` of collection
``aggs`` (one increment each, the event's id in its inbox) and dies once the KILL_AT-th
event's write has committed, before its ack. ``relay`` publishes the outboxes of
collection ``sources`` and dies after the broker confirmed them, before it removes them.
Each prints "ready" when it has started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from shared.aggregates import AggregateStore, Change
from shared.events import Envelope
from shared.outbox import OutboxRelay
from tests.integration.helpers_messaging import MessagingEnv

ROOT = Path(__file__).resolve().parents[2]
WITHDRAWN = "registration.withdrawn"
SERVICE = "svc"  # the service name of tests/integration/helpers_messaging.make_topology


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """This module as a process of its own (``args`` as in the usage above); its output
    (logs, then "ready") on its stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.killed_midway",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


def increment(doc: dict[str, Any], _state: Any) -> Change:
    return Change(set={"n": doc["n"] + 1})


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesBeforeRemoving(OutboxRelay):
    async def _finish(self, *args: Any, **kwargs: Any) -> None:
        die()  # published and confirmed; the outbox still holds the events


async def consumer(env: MessagingEnv, db: Any, kill_at: int) -> None:
    store = AggregateStore(db["aggs"], service=SERVICE)
    broker = await env.broker(env.topology())
    applied = 0

    async def apply(envelope: Envelope) -> None:
        nonlocal applied
        outcome = await store.mutate("a", increment, event_id=envelope.id)
        applied += 0 if outcome.duplicate else 1
        if applied >= kill_at:
            die()  # committed; the ack never goes

    await broker.consume({WITHDRAWN: apply})


async def relay(env: MessagingEnv, db: Any) -> None:
    broker = await env.broker(env.topology())
    store = AggregateStore(db["sources"], service=SERVICE)
    await DiesBeforeRemoving(broker, [store], service=SERVICE, poll_s=0.2, claim_s=3).start()


async def main(
    role: str, url: str, run_id: str, mongodb_url: str, db_name: str, *rest: str
) -> None:
    env = MessagingEnv(url, run_id)
    db = AsyncMongoClient(mongodb_url, tz_aware=True)[db_name]  # as the services have it
    if role == "consumer":
        await consumer(env, db, int(rest[0]))
    else:
        await relay(env, db)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
