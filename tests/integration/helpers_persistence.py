"""Helpers for the persistence integration tests: replicas, broker stacks, recorders, metrics.

Everything here talks to the real database and broker. A "replica" is modelled by
its own AsyncMongoClient (built like production's, ``shared.mongo.make_client``)
and its own stores, so nothing in-process (no shared per-aggregate turn) can stand
in for the database's compare-and-set under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared import mongo
from shared.aggregates import AggregateStore
from shared.events import (
    Contact,
    Envelope,
    RegistrationSubmitted,
    make_envelope,
    new_id,
    utcnow,
)
from shared.messaging import Broker, Topology
from shared.outbox import OutboxRelay
from tests.services import WIRE_CIPHER

from .helpers_messaging import SOURCE, eventually

# --- metrics ---------------------------------------------------------------------


def metric(name: str, **labels: str) -> float:
    """A Prometheus sample of this process's registry (0 when never incremented)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


DB_WRITES = "holdspace_db_writes_total"
WRITE_CONFLICTS = "holdspace_write_conflicts_total"
JOBS_RUN = "holdspace_jobs_run_total"
PUBLISH_FAILURES = "holdspace_publish_failures_total"
EVENTS_PUBLISHED = "holdspace_events_published_total"


# --- replicas ----------------------------------------------------------------------


class Replicas:
    """Separate database clients on one database, as separate processes would have."""

    def __init__(self, url: str, db_name: str) -> None:
        self.url = url
        self.db_name = db_name
        self.clients: list[AsyncMongoClient] = []

    def db(self) -> AsyncDatabase:
        client = mongo.make_client(self.url)
        self.clients.append(client)
        return client[self.db_name]

    async def aclose(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        self.clients.clear()


# --- mutual exclusion recorder -------------------------------------------------------


class Exclusion:
    """Records who is inside a critical section, per key, and every overlap seen.

    All holders run on the test's one event loop, so "inside" is exact: a second
    holder entering while the first has not left is an overlap, whatever the clock says.
    """

    def __init__(self) -> None:
        self.inside: dict[str, set[Any]] = defaultdict(set)
        self.overlaps: list[tuple[str, Any, set[Any]]] = []
        self.spans: dict[str, list[tuple[float, float, Any]]] = defaultdict(list)

    @contextlib.contextmanager
    def enter(self, key: str, who: Any) -> Iterator[None]:
        if self.inside[key]:
            self.overlaps.append((key, who, set(self.inside[key])))
        self.inside[key].add(who)
        start = time.monotonic()
        try:
            yield
        finally:
            self.inside[key].discard(who)
            self.spans[key].append((start, time.monotonic(), who))

    def assert_no_overlap(self) -> None:
        assert not self.overlaps, f"holders overlapped: {self.overlaps[:5]}"
        for key, spans in self.spans.items():
            ordered = sorted(spans, key=lambda s: s[0])
            for (_, end, first), (start, _, second) in zip(ordered, ordered[1:], strict=False):
                assert start >= end, f"{second} entered {key} before {first} left"


# --- events ------------------------------------------------------------------------


def submitted(email: str, name: str) -> Envelope:
    """An internal event that carries contact data (personal data at rest in the outbox)."""
    return make_envelope(
        RegistrationSubmitted(
            registration_id=new_id(),
            cohort_id="c-1",
            program_id="p-1",
            contact=Contact(name=name, email=email),
            submitted_at=utcnow(),
        ),
        source=SOURCE,
        correlation_id=new_id(),
    )


def outbox_ids(doc: dict[str, Any] | None) -> list[str]:
    assert doc is not None
    return [entry["id"] for entry in doc.get("outbox", [])]


# --- broker stacks -----------------------------------------------------------------


class BrokerEnv:
    """Brokers and relays of one test on a fresh topology prefix; all torn down afterwards."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.prefix = f"t{run_id}."
        self.service = f"p{run_id}"
        self.brokers: list[Broker] = []
        self.relays: list[OutboxRelay] = []
        self._connection: AbstractConnection | None = None

    def topology(self, service: str | None = None) -> Topology:
        return Topology(self.prefix, service or self.service, (50,))

    async def broker(self, service: str | None = None) -> Broker:
        broker = Broker(
            self.url,
            self.topology(service),
            publish_timeout_s=5.0,
            connect_timeout_s=10.0,
            cipher=WIRE_CIPHER,
        )
        self.brokers.append(broker)  # closed in teardown even if connect fails halfway
        await broker.connect()
        return broker

    async def relay(
        self, broker: Broker, stores: list[AggregateStore], *, poll_s: float, **options: Any
    ) -> OutboxRelay:
        relay = OutboxRelay(
            broker, stores, service=broker.topology.service, poll_s=poll_s, **options
        )
        self.relays.append(relay)
        await relay.start()
        return relay

    async def channel(self) -> AbstractChannel:
        """A plain channel on a separate connection, to bind and read test queues."""
        if self._connection is None:
            self._connection = await aio_pika.connect(self.url, timeout=10)
        return await self._connection.channel()

    async def spy(self, channel: AbstractChannel, routing_key: str) -> str:
        """An exclusive queue bound to the internal exchange for one event type."""
        queue = await channel.declare_queue(f"{self.prefix}spy.{routing_key}", exclusive=True)
        await queue.bind(self.topology().internal, routing_key=routing_key)
        return queue.name

    async def aclose(self) -> None:
        for relay in self.relays:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay.stop(), 15)
        for broker in reversed(self.brokers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.close(), 15)
        if self._connection is None and not self.brokers:
            return
        with contextlib.suppress(Exception):
            if self._connection is None:
                self._connection = await aio_pika.connect(self.url, timeout=10)
            topology = self.topology()
            for name in (topology.internal, topology.public, topology.dead_letter_exchange):
                channel = await self._connection.channel()
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)
                with contextlib.suppress(Exception):
                    await channel.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()  # its exclusive spy queues go with it


async def collect(
    channel: AbstractChannel,
    queue_name: str,
    *,
    until: Callable[[list[AbstractIncomingMessage]], bool],
    timeout: float = 15.0,
) -> list[AbstractIncomingMessage]:
    """Get (and ack) messages until ``until(messages)`` holds; duplicates are kept."""
    queue = await channel.declare_queue(queue_name, passive=True)
    taken: list[AbstractIncomingMessage] = []

    async def _more() -> bool:
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return until(taken)
            await message.ack()
            taken.append(message)

    await eventually(_more, timeout=timeout, what=f"messages in {queue_name}")
    return taken


async def drain(channel: AbstractChannel, queue_name: str) -> list[AbstractIncomingMessage]:
    """Whatever is ready in the queue now (acked)."""
    queue = await channel.declare_queue(queue_name, passive=True)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await message.ack()
        taken.append(message)
    return taken
