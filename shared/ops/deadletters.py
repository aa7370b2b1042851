"""Dead letters: list, show, replay and purge one dead-letter queue.

Messages are read with ``basic.get`` without auto-ack and held unacknowledged while
the command looks at them; those it does not take go back to the queue when its
channel closes (a requeue, in their original order). A replayed message is
republished with publisher confirms and mandatory routing, and acknowledged (removed
from the DLQ) only after the broker confirmed the copy: a crash in between replays it
twice, which the consumers' inboxes turn into one effect.

What a dead letter says about itself (shared/messaging.py): the ``x-holdspace-*``
headers of a message the consumer dead-lettered (attempt, first and last error, the
failed service, the original exchange and routing key); or RabbitMQ's ``x-death`` for
one the broker dead-lettered past the queue's delivery limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.messaging import (
    H_ATTEMPT,
    H_FAILED_SERVICE,
    H_FIRST_ERROR,
    H_LAST_ERROR,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    persistent_copy,
)
from shared.ops.redact import redact_envelope

H_REPLAYED = "x-holdspace-replayed"
DROPPED_ON_REPLAY = frozenset(
    {
        H_ATTEMPT,
        H_FIRST_ERROR,
        H_LAST_ERROR,
        H_FAILED_SERVICE,
        H_ORIGINAL_EXCHANGE,
        H_ORIGINAL_ROUTING_KEY,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class DeadLetter:
    position: int  # 1 = head of the queue
    message_id: str | None
    type: str | None
    correlation_id: str | None
    attempts: int | None
    first_error: str | None
    last_error: str | None
    failed_service: str | None
    original_exchange: str | None
    original_routing_key: str | None
    dead_lettered_by: str  # "consumer" (x-holdspace-*) or "broker" (x-death)
    timestamp: str | None
    size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(position: int, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    first_death = deaths[-1] if deaths else {}  # x-death is most recent first
    by_consumer = H_LAST_ERROR in headers or H_ATTEMPT in headers
    attempts = _int(headers.get(H_ATTEMPT))
    if attempts is None and headers.get("x-delivery-count") is not None:
        attempts = (_int(headers.get("x-delivery-count")) or 0) + 1
    broker_reason = _text(first_death.get("reason")) if first_death else None
    routing_keys = first_death.get("routing-keys") or []
    timestamp = message.timestamp
    return DeadLetter(
        position=position,
        message_id=message.message_id,
        type=message.type,
        correlation_id=message.correlation_id,
        attempts=attempts,
        first_error=_text(headers.get(H_FIRST_ERROR))
        or (f"broker: {broker_reason}" if broker_reason else None),
        last_error=_text(headers.get(H_LAST_ERROR))
        or (f"broker: {broker_reason}" if broker_reason else None),
        failed_service=_text(headers.get(H_FAILED_SERVICE)),
        original_exchange=_text(headers.get(H_ORIGINAL_EXCHANGE))
        if H_ORIGINAL_EXCHANGE in headers
        else _text(first_death.get("exchange")),
        original_routing_key=_text(headers.get(H_ORIGINAL_ROUTING_KEY))
        if H_ORIGINAL_ROUTING_KEY in headers
        else (_text(routing_keys[0]) if routing_keys else None),
        dead_lettered_by="consumer" if by_consumer else "broker",
        timestamp=timestamp.isoformat() if isinstance(timestamp, datetime) else None,
        size=len(message.body),
    )


def shown_body(message: AbstractIncomingMessage) -> Any:
    """The body as JSON with personal fields redacted; never the raw bytes."""
    try:
        body = json.loads(message.body)
    except (ValueError, RecursionError):
        return f"<{len(message.body)} bytes, not JSON: not shown>"
    return redact_envelope(body)


@dataclass
class Selection:
    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    everything: bool = False

    @classmethod
    def of(cls, ids: Iterable[str] = (), types: Iterable[str] = (), everything: bool = False):
        return cls(frozenset(ids), frozenset(types), everything)

    @property
    def empty(self) -> bool:
        return not (self.ids or self.types or self.everything)

    def matches(self, letter: DeadLetter) -> bool:
        return (
            self.everything
            or (letter.message_id is not None and letter.message_id in self.ids)
            or (letter.type is not None and letter.type in self.types)
        )


@dataclass
class Outcome:
    letter: DeadLetter
    done: bool
    target: str  # "exchange -> routing key", or what was done
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.letter.message_id,
            "type": self.letter.type,
            "done": self.done,
            "target": self.target,
            "detail": self.detail,
        }


class DeadLetterQueue:
    """One DLQ opened for inspection: held messages return to it when closed."""

    def __init__(
        self,
        connection: aio_pika.abc.AbstractConnection,
        channel: AbstractChannel,
        queue: AbstractQueue,
        service_queue: str | None,
        timeout_s: float,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.queue = queue
        self.service_queue = service_queue
        self.timeout_s = timeout_s
        self.held: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
        self._publisher: AbstractChannel | None = None
        # Ready at opening, minus what this command removed: what the queue holds again
        # once the held messages are back (others may have been added meanwhile).
        self.expected_after = queue.declaration_result.message_count or 0

    @property
    def name(self) -> str:
        return self.queue.name

    async def fetch(self, limit: int) -> list[tuple[AbstractIncomingMessage, DeadLetter]]:
        """Hold up to ``limit`` messages from the head of the queue (no ack)."""
        while len(self.held) < limit:
            message = await self.queue.get(no_ack=False, fail=False, timeout=self.timeout_s)
            if message is None:
                break
            self.held.append((message, describe(len(self.held) + 1, message)))
        return self.held

    async def find(
        self, message_id: str, limit: int
    ) -> tuple[AbstractIncomingMessage, DeadLetter] | None:
        for message, letter in await self.fetch(limit):
            if letter.message_id == message_id:
                return message, letter
        return None

    async def replay(
        self, selection: Selection, limit: int, *, to_service_queue: bool = False
    ) -> list[Outcome]:
        outcomes = []
        for message, letter in await self.fetch(limit):
            if not selection.matches(letter):
                continue
            outcomes.append(await self._replay_one(message, letter, to_service_queue))
        return outcomes

    async def _replay_one(
        self, message: AbstractIncomingMessage, letter: DeadLetter, to_service_queue: bool
    ) -> Outcome:
        if to_service_queue:
            if self.service_queue is None:
                return Outcome(letter, False, "-", "no service queue known for this DLQ")
            exchange_name, routing_key = "", self.service_queue
        else:
            exchange_name = letter.original_exchange
            routing_key = letter.original_routing_key
            if exchange_name is None or not routing_key:
                return Outcome(
                    letter, False, "-", "no original exchange/routing key; use --to-queue"
                )
        target = f"{exchange_name or '(default)'} -> {routing_key}"
        headers = {k: v for k, v in (message.headers or {}).items() if k not in DROPPED_ON_REPLAY}
        headers[H_REPLAYED] = (_int(headers.get(H_REPLAYED)) or 0) + 1
        copy = persistent_copy(message, headers)
        try:
            publisher = await self._publishing_channel()
            exchange = (
                publisher.default_exchange
                if exchange_name == ""
                else await publisher.get_exchange(exchange_name, ensure=False)
            )
            await exchange.publish(
                copy, routing_key=routing_key, mandatory=True, timeout=self.timeout_s
            )
        except Exception as exc:  # returned, nacked, timed out, exchange missing
            return Outcome(letter, False, target, f"not confirmed: {type(exc).__name__}")
        # Confirmed: only now does it leave the dead-letter queue.
        await message.ack()
        self.expected_after -= 1
        self.held = [(m, d) for m, d in self.held if m is not message]
        return Outcome(letter, True, target)

    async def _publishing_channel(self) -> AbstractChannel:
        if self._publisher is None or self._publisher.is_closed:
            self._publisher = await self.connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        return self._publisher

    async def remove(self, selection: Selection, limit: int) -> list[Outcome]:
        """Acknowledge (drop) the selected messages among the first ``limit``."""
        outcomes = []
        for message, letter in await self.fetch(limit):
            if selection.matches(letter):
                await message.ack()
                self.expected_after -= 1
                outcomes.append(Outcome(letter, True, "purged"))
        taken = {id(o.letter) for o in outcomes}
        self.held = [(m, d) for m, d in self.held if id(d) not in taken]
        return outcomes

    async def purge_all(self) -> int:
        """Drop every ready message (one held by another reader stays)."""
        result = await self.queue.purge(timeout=self.timeout_s)
        self.expected_after = 0
        return int(getattr(result, "message_count", 0) or 0)

    async def hand_back(self) -> None:
        """Return every held message and wait (briefly) until the queue shows them again.

        The broker requeues a closed channel's messages asynchronously; without the wait
        a command run right after this one could miss them.
        """
        await self.channel.close()
        if not self.held:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.timeout_s, 5.0)
        while loop.time() < deadline:
            channel = await self.connection.channel()
            declared = await channel.declare_queue(self.name, passive=True)
            await channel.close()
            if (declared.declaration_result.message_count or 0) >= self.expected_after:
                return
            await asyncio.sleep(0.02)


@asynccontextmanager
async def open_dlq(
    amqp_url: str, queue_name: str, service_queue: str | None, timeout_s: float
) -> AsyncIterator[DeadLetterQueue]:
    """Raises aio_pika.exceptions.ChannelClosed (404) when the queue does not exist."""
    connection = await asyncio.wait_for(aio_pika.connect(amqp_url), timeout_s)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True, timeout=timeout_s)
        dlq = DeadLetterQueue(connection, channel, queue, service_queue, timeout_s)
        yield dlq
        await dlq.hand_back()
    finally:
        # Closing the channel hands back every message still held, unacknowledged.
        await connection.close()
