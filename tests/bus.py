"""The broker as a test of a real service process sees it: publish the events another
service would, and listen on an exchange as a subscriber would.

The test systems of tests/integration (one service or two under test) build on it; the
e2e harness has its own durable listeners, since its journeys restart the broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aio_pika

from shared import events as ev
from shared.messaging import build_message
from shared.wire import open_body
from tests.services import WIRE_CIPHER


def opened(body: bytes) -> dict[str, Any]:
    """A body as the consuming service reads it: a personal event's data opened."""
    return open_body(json.loads(body), WIRE_CIPHER)


class TestBus:
    """One robust connection in the system's vhost, under the system's topology prefix."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    @property
    def prefix(self) -> str:
        return self.env["HOLDSPACE_TOPOLOGY_PREFIX"]

    async def connect(self) -> None:
        if self.connection is None:
            self.connection = await aio_pika.connect_robust(self.env["RABBITMQ_URL"])

    async def listen(
        self, exchange: str, *routing_keys: str, parse: Callable[[bytes], Any] = opened
    ) -> list[Any]:
        """Every message routed to ``<prefix><exchange>`` by ``routing_keys`` from now on,
        parsed, in the order received (an exclusive queue: it goes with the connection)."""
        await self.connect()
        assert self.connection is not None
        received: list[Any] = []
        channel = await self.connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for key in routing_keys:
            await queue.bind(f"{self.prefix}{exchange}", routing_key=key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                received.append(parse(message.body))

        await queue.consume(on_message)
        return received

    async def publish(
        self,
        data: ev.EventData | None = None,
        event_id: str | None = None,
        *,
        envelope: ev.Envelope | None = None,
    ) -> ev.Envelope:
        """Publish ``data`` in a new envelope (or ``envelope`` as it is) to the exchange
        its type belongs on, as the owning service's relay would: confirmed, mandatory."""
        if envelope is None:
            assert data is not None
            envelope = ev.make_envelope(
                data,
                source="urn:holdspace:test",
                correlation_id=getattr(data, "registration_id", "test"),
                event_id=event_id,
            )
        await self.connect()
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            exchange = await channel.get_exchange(f"{self.prefix}{envelope.exchange.value}")
            await exchange.publish(
                build_message(envelope, cipher=WIRE_CIPHER),
                routing_key=envelope.type,
                mandatory=True,
            )
        finally:
            await channel.close()
        return envelope

    async def close_bus(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
