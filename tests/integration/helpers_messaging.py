"""Helpers for the messaging integration tests: polling, queue inspection, sample events.

Everything here talks to the real broker; nothing is mocked. Assertions wait on
outcomes with a deadline (``eventually``) instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from shared.events import (
    EnrollmentConfirmed,
    Envelope,
    RegistrationRejected,
    RegistrationWithdrawn,
    make_envelope,
    new_id,
    utcnow,
)
from shared.messaging import Broker, Topology
from tests.services import WIRE_CIPHER

T = TypeVar("T")

SOURCE = "urn:holdspace:test"


# --- polling -------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call ``check`` until it returns a truthy value without raising AssertionError.

    Returns that value; fails with the last AssertionError (or a plain message)
    when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            if result:
                return result
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            if last_error is not None:
                raise AssertionError(f"{what} not met within {timeout}s: {last_error}")
            raise AssertionError(f"{what} not met within {timeout}s (last value {result!r})")
        await asyncio.sleep(interval)


# --- queue inspection ----------------------------------------------------------


async def ready_count(channel: AbstractChannel, queue_name: str) -> int:
    """Messages ready in a queue (passive declare; unacknowledged ones are not counted)."""
    queue = await channel.declare_queue(queue_name, passive=True)
    return queue.declaration_result.message_count or 0


async def queue_counts(channel: AbstractChannel, names: list[str]) -> dict[str, int]:
    return {name: await ready_count(channel, name) for name in names}


async def all_empty(channel: AbstractChannel, names: list[str]) -> bool:
    """True when no queue of ``names`` holds a message (for ``eventually``)."""
    counts = await queue_counts(channel, names)
    assert not any(counts.values()), counts
    return True


async def take_all(
    channel: AbstractChannel, queue_name: str, *, expected: int, timeout: float = 10.0
) -> list[AbstractIncomingMessage]:
    """Get (and ack) messages from a queue until ``expected`` were read; then check none is left."""
    queue = await channel.declare_queue(queue_name, passive=True)
    taken: list[AbstractIncomingMessage] = []

    async def _more() -> bool:
        while len(taken) < expected:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return False
            await message.ack()
            taken.append(message)
        return True

    await eventually(_more, timeout=timeout, what=f"{expected} message(s) in {queue_name}")
    extra = await queue.get(no_ack=False, fail=False)
    if extra is not None:
        await extra.nack(requeue=True)
        raise AssertionError(f"more than {expected} message(s) in {queue_name}")
    return taken


def header_text(message: AbstractIncomingMessage, name: str) -> Any:
    """A header value, with AMQP byte strings decoded to text."""
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode()
    return value


# --- recording handlers --------------------------------------------------------


class Recorder:
    """Remembers every handler call (per envelope id), in order, with a monotonic time."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, Envelope]] = []
        self.succeeded: list[Envelope] = []
        self.attempts: dict[str, int] = defaultdict(int)

    def record(self, kind: str, envelope: Envelope) -> int:
        self.calls.append((time.monotonic(), kind, envelope))
        self.attempts[envelope.id] += 1
        return self.attempts[envelope.id]

    def succeeded_ids(self) -> list[str]:
        return [e.id for e in self.succeeded]

    def times(self, envelope_id: str) -> list[float]:
        return [t for t, _, e in self.calls if e.id == envelope_id]


class HandlerBoom(RuntimeError):
    """What the failing test handlers raise; its name must show in the DLQ headers."""


# --- topology and events -------------------------------------------------------


def make_topology(run_id: str, retry_delays_ms: tuple[int, ...] = (50, 100)) -> Topology:
    return Topology(prefix=f"t{run_id}.", service="svc", retry_delays_ms=retry_delays_ms)


def rejected(correlation_id: str | None = None) -> Envelope:
    return make_envelope(
        RegistrationRejected(registration_id=new_id(), cohort_id="c-1"),
        source=SOURCE,
        correlation_id=correlation_id or new_id(),
        subject="registration",
    )


def withdrawn() -> Envelope:
    return make_envelope(
        RegistrationWithdrawn(registration_id=new_id(), cohort_id="c-1", previous_status="held"),
        source=SOURCE,
        correlation_id=new_id(),
    )


def enrollment_confirmed() -> Envelope:
    return make_envelope(
        EnrollmentConfirmed(
            registration_id=new_id(),
            cohort_id="c-1",
            program_id="p-1",
            occurred_at=utcnow() - timedelta(seconds=1),
        ),
        source=SOURCE,
        correlation_id=new_id(),
    )


def raw_message(body: bytes, **properties: Any) -> aio_pika.Message:
    return aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties)


# --- one test's topologies and brokers ---------------------------------------------


async def connect_plain(url: str, timeout: float = 30.0) -> AbstractConnection:
    """A plain (non-robust) connection for inspection, retried while the broker starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await aio_pika.connect(url, timeout=5)
        except Exception:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)


class MessagingEnv:
    """Creates this test's topologies and brokers; tears them all down afterwards."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self.topologies: list[Topology] = []
        self.brokers: list[Broker] = []

    def topology(self, retry_delays_ms: tuple[int, ...] = (50, 100)) -> Topology:
        topology = make_topology(self.run_id, retry_delays_ms)
        self.topologies.append(topology)
        return topology

    async def broker(self, topology: Topology, **kwargs) -> Broker:
        kwargs.setdefault("handler_timeout_s", 5.0)
        kwargs.setdefault("publish_timeout_s", 5.0)
        kwargs.setdefault("connect_timeout_s", 10.0)
        kwargs.setdefault("cipher", WIRE_CIPHER)
        broker = Broker(self.url, topology, **kwargs)
        self.brokers.append(broker)  # closed in teardown even if connect fails halfway
        await broker.connect()
        return broker

    async def aclose(self) -> None:
        for broker in reversed(self.brokers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.close(), 20)
        if not self.topologies:
            return
        connection = await connect_plain(self.url)
        try:
            for topology in self.topologies:
                for name in [*topology.all_queues(), f"{topology.prefix}spy"]:
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.queue_delete(name)
                    with contextlib.suppress(Exception):
                        await channel.close()
                for name in (topology.internal, topology.public, topology.dead_letter_exchange):
                    channel = await connection.channel()
                    with contextlib.suppress(Exception):
                        await channel.exchange_delete(name)
                    with contextlib.suppress(Exception):
                        await channel.close()
        finally:
            await connection.close()
