"""RabbitMQ on aio-pika: topology, confirmed publishing, consuming with retries and dead letters.

Topology (names carry the configurable prefix, ``holdspace.`` by default):

- ``internal`` and ``public``: durable topic exchanges; the routing key is the event type.
- ``<service>``: one durable quorum queue per consuming service, bound to the event
  types its handlers take.
- ``<service>.retry.<ms>``: one quorum queue per back-off step; a message waits there
  for its TTL and is dead-lettered straight back into ``<service>``.
- ``<service>.dlq``: the dead letters, with the error and attempt count in headers.
  The service queue's own broker-side dead-lettering (delivery limit) lands here too,
  so a consumer that crashes in a loop cannot block the queue. Bounded in length and
  age by the deployment's policy (shared/brokeraccess.py), not by queue arguments.
- ``<service>.requeue``: the service's own direct exchange to its retry queues
  (routing key ``retry.<ms>ms``) and its DLQ (``dlq``). The consumer parks messages
  through it, not through the default exchange, so its broker user needs no right
  to write to every queue.

A service whose broker user may not declare (one user per service, least privilege:
shared/brokeraccess.py) checks passively that what it uses exists; the deployment
declared it.

Publishing uses publisher confirms, persistent messages, ``mandatory`` with returns
raised as errors, and a timeout. Consuming acks manually after the handler's write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared import metrics, tracing, wire
from shared.events import EVENT_TYPES, Envelope, Exchange
from shared.logs import get_logger
from shared.security import FieldCipher

log = get_logger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

H_ATTEMPT = "x-holdspace-attempt"
H_FIRST_ERROR = "x-holdspace-first-error"
H_LAST_ERROR = "x-holdspace-last-error"
H_ORIGINAL_EXCHANGE = "x-holdspace-original-exchange"
H_ORIGINAL_ROUTING_KEY = "x-holdspace-original-routing-key"
H_FAILED_SERVICE = "x-holdspace-failed-service"
CONTENT_TYPE = "application/cloudevents+json"


class Gate(Protocol):
    """A dependency handlers need (the database: shared/mongo.py DatabaseGate). While it
    does not answer, deliveries wait for it and spend no attempt."""

    def may_be_outage(self, exc: BaseException) -> bool: ...
    async def answers(self) -> bool: ...
    def down(self) -> None: ...
    async def wait_up(self, timeout_s: float) -> bool: ...


class DependencyDown(Exception):
    """What a delivery deferred during an outage carries in its last-error header."""


class PoisonMessage(Exception):
    """A delivery that no retry can fix (not JSON, not an envelope, unknown type)."""


class PublishError(Exception):
    """The broker did not confirm a publish (returned, nacked, timed out, disconnected)."""


@dataclass(frozen=True)
class Topology:
    prefix: str
    service: str
    retry_delays_ms: tuple[int, ...]

    @property
    def internal(self) -> str:
        return f"{self.prefix}internal"

    @property
    def public(self) -> str:
        return f"{self.prefix}public"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}dlx"

    @property
    def queue(self) -> str:
        return f"{self.prefix}{self.service}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}{self.service}.dlq"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.prefix}{self.service}.retry.{delay_ms}ms"

    @property
    def requeue(self) -> str:
        """The service's own exchange to its retry queues and DLQ."""
        return f"{self.prefix}{self.service}.requeue"

    @staticmethod
    def retry_key(delay_ms: int) -> str:
        return f"retry.{delay_ms}ms"

    DLQ_KEY = "dlq"

    def exchange_name(self, exchange: Exchange) -> str:
        return self.internal if exchange is Exchange.internal else self.public

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_ms) + 1

    def all_queues(self) -> list[str]:
        return [
            self.queue,
            *(self.retry_queue(d) for d in sorted(set(self.retry_delays_ms))),
            self.dlq,
        ]


def describe_error(exc: BaseException) -> str:
    """A short error text for headers and logs, without the offending values."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()[:5]]
        return "ValidationError: " + "; ".join(parts)
    if isinstance(exc, PoisonMessage):
        return f"PoisonMessage: {exc}"[:300]
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "TimeoutError: handler took too long"
    # Exception texts are ours or a driver's; keep them short, never a body.
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def parse_envelope(message: AbstractIncomingMessage, cipher: FieldCipher | None = None) -> Envelope:
    """The event in ``message``, its data opened if it travelled sealed (shared/wire.py)."""
    try:
        raw = json.loads(message.body)
        if not isinstance(raw, dict):
            raise PoisonMessage("body is not a JSON object")
        envelope = Envelope.model_validate(wire.open_body(raw, cipher))
    except wire.UnreadableBody as exc:
        raise PoisonMessage(str(exc)) from None
    except (ValueError, ValidationError) as exc:
        raise PoisonMessage(describe_error(exc)) from None
    except RecursionError:  # absurdly nested JSON: not a ValueError
        raise PoisonMessage("body nested too deeply") from None
    if envelope.type not in EVENT_TYPES:
        raise PoisonMessage(f"unknown event type {envelope.type!r}")
    return envelope


def _messaging_attributes(envelope: Envelope, destination: str) -> dict[str, str]:
    """What a messaging span says of an event: ids and names, never its data."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": destination,
        "messaging.message.id": envelope.id,
        "messaging.message.conversation_id": envelope.correlationid,
        "cloudevents.event_type": envelope.type,
    }


def build_message(
    envelope: Envelope,
    headers: dict[str, Any] | None = None,
    cipher: FieldCipher | None = None,
) -> aio_pika.Message:
    """The AMQP message of ``envelope``; a personal event needs ``cipher`` (its data is
    sealed for the journey, shared/wire.py)."""
    return aio_pika.Message(
        body=wire.body_of(envelope, cipher),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=envelope.id,
        correlation_id=envelope.correlationid,
        type=envelope.type,
        timestamp=envelope.time,
        app_id=envelope.source,
        headers=headers or {},
    )


class Broker:
    """One robust connection per process: a confirmed publishing channel and consumers."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        prefetch: int = 32,
        publish_timeout_s: float = 10.0,
        handler_timeout_s: float = 30.0,
        connect_timeout_s: float = 60.0,
        cipher: FieldCipher | None = None,
        gate: Gate | None = None,
    ) -> None:
        """``cipher``: seals the personal events this broker publishes and opens the
        ones it consumes (shared/wire.py); without one, those are refused. ``gate``:
        what consumers wait for instead of spending attempts while it is down."""
        self.url = url
        self.cipher = cipher
        self.gate = gate
        self.topology = topology
        self.prefetch = prefetch
        self.publish_timeout_s = publish_timeout_s
        self.handler_timeout_s = handler_timeout_s
        self.connect_timeout_s = connect_timeout_s
        # Strong references for the life of the process: a robust connection only
        # restores channels, queues and consumers that are still referenced.
        self.connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._consumers: list[Consumer] = []

    # --- lifecycle -------------------------------------------------------------

    async def connect(self) -> None:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self.connect_timeout_s),
            wait=wait_exponential(multiplier=0.2, max=3),
            retry=retry_if_exception_type((OSError, aiormq.exceptions.AMQPConnectionError)),
            reraise=True,
        ):
            with attempt:
                self.connection = await aio_pika.connect_robust(self.url)
        await self.declare_or_verify(self.declare_exchanges, self.exchange_names())
        # Nothing is declared on the long-lived channels: a robust channel redeclares
        # what it declared after a reconnect, which a least-privilege user may not.
        self._publish_channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        for name in (self.topology.internal, self.topology.public, ""):
            self._exchanges[name] = (
                self._publish_channel.default_exchange
                if name == ""
                else await self._publish_channel.get_exchange(name, ensure=False)
            )
        log.info("broker connected", service=self.topology.service)

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    @property
    def is_connected(self) -> bool:
        return (
            self.connection is not None
            and not self.connection.is_closed
            and self._publish_channel is not None
            and not self._publish_channel.is_closed
        )

    # --- topology --------------------------------------------------------------

    def exchange_names(self) -> list[tuple[str, str]]:
        t = self.topology
        return [("exchange", n) for n in (t.internal, t.public, t.dead_letter_exchange)]

    def own_names(self) -> list[tuple[str, str]]:
        """What this service's consumer uses: its exchanges and queues."""
        t = self.topology
        return [*self.exchange_names(), ("exchange", t.requeue)] + [
            ("queue", q) for q in t.all_queues()
        ]

    async def declare_or_verify(
        self,
        declare: Callable[[AbstractChannel], Awaitable[Any]],
        names: list[tuple[str, str]],
    ) -> bool:
        """Run ``declare`` on a channel of its own; when the broker user may not declare
        (ACCESS_REFUSED), check passively that ``names`` exist. True if it declared."""
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            await declare(channel)
            return True
        except aiormq.exceptions.ChannelAccessRefused as exc:
            log.info(
                "not permitted to declare; checking the deployment's topology",
                service=self.topology.service,
                refused=describe_error(exc),
            )
        finally:
            if not channel.is_closed:
                await channel.close()
        await self.verify(names)
        return False

    async def verify(self, names: list[tuple[str, str]]) -> None:
        """Passive declarations (no permission needed); a missing one stops the start."""
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            for kind, name in names:
                try:
                    if kind == "exchange":
                        await channel.get_exchange(name, ensure=True)
                    else:
                        await channel.get_queue(name, ensure=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    raise RuntimeError(
                        f"{kind} {name!r} does not exist and this broker user may not declare"
                        " it: the deployment declares the topology (docs/decisions/"
                        "0005-broker-users-and-dead-letter-bounds.md)"
                    ) from None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def declare_exchanges(self, channel: AbstractChannel) -> None:
        t = self.topology
        for name in (t.internal, t.public):
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.declare_exchange(
            t.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def declare_service_queues(
        self, channel: AbstractChannel, event_types: Iterable[str]
    ) -> AbstractQueue:
        """Declare this service's queue, its retry steps and dead-letter queue; bind it."""
        t = self.topology
        await self.declare_exchanges(channel)
        await channel.declare_exchange(t.requeue, aio_pika.ExchangeType.DIRECT, durable=True)
        # No length or age arguments: the deployment's policy bounds the DLQ, and so
        # also a DLQ declared before the bounds existed.
        dlq = await channel.declare_queue(t.dlq, durable=True, arguments={"x-queue-type": "quorum"})
        await dlq.bind(t.dead_letter_exchange, routing_key=t.service)
        await dlq.bind(t.requeue, routing_key=t.DLQ_KEY)
        queue = await channel.declare_queue(
            t.queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # Safety net for crash loops (a reject counts); handler failures
                # normally go through the retry queues and reach the DLQ first.
                "x-delivery-limit": max(10, 2 * t.max_attempts),
                "x-dead-letter-exchange": t.dead_letter_exchange,
                "x-dead-letter-routing-key": t.service,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        for delay in sorted(set(t.retry_delays_ms)):
            retry = await channel.declare_queue(
                t.retry_queue(delay),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": t.queue,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            await retry.bind(t.requeue, routing_key=t.retry_key(delay))
        for event_type in sorted(set(event_types)):
            exchange = t.exchange_name(EVENT_TYPES[event_type].exchange)
            await queue.bind(exchange, routing_key=event_type)
        return queue

    # --- publishing ------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        """Publish one event and wait for the broker's confirm; raise PublishError otherwise."""
        exchange = self.topology.exchange_name(envelope.exchange)
        # The publish continues the trace of the work that recorded the event, and the
        # message names the publish as its consumers' parent.
        with tracing.span(
            f"{envelope.type} publish",
            kind=tracing.SpanKind.PRODUCER,
            parent=envelope.traceparent,
            attributes=_messaging_attributes(envelope, exchange),
        ):
            headers = {tracing.TRACEPARENT: tracing.current_traceparent()}
            try:
                message = build_message(envelope, headers, cipher=self.cipher)
            except ValueError as exc:
                raise PublishError(str(exc)) from None
            await self._publish(exchange, envelope.type, message, envelope.must_be_routed, envelope)
        metrics.EVENTS_PUBLISHED.labels(self.topology.service, envelope.type).inc()

    async def publish_raw(
        self, exchange: str, routing_key: str, message: aio_pika.Message, *, mandatory: bool = True
    ) -> None:
        await self._publish(exchange, routing_key, message, mandatory, None)

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        message: aio_pika.Message,
        mandatory: bool,
        envelope: Envelope | None,
    ) -> None:
        if self._publish_channel is None:
            raise PublishError("not connected")
        try:
            target = self._exchanges.get(exchange)
            if target is None:
                target = await self._publish_channel.get_exchange(exchange, ensure=False)
                self._exchanges[exchange] = target
            await target.publish(
                message,
                routing_key=routing_key,
                mandatory=mandatory,
                timeout=self.publish_timeout_s,
            )
        except Exception as exc:  # returned, nacked, timed out, channel closed
            metrics.PUBLISH_FAILURES.labels(
                self.topology.service, envelope.type if envelope else routing_key
            ).inc()
            raise PublishError(describe_error(exc)) from exc

    # --- consuming -------------------------------------------------------------

    async def consume(self, handlers: dict[str, Handler]) -> Consumer:
        consumer = Consumer(self, handlers)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer


class Consumer:
    """Consumes the service queue; each delivery is acked only after its handler finished."""

    def __init__(self, broker: Broker, handlers: dict[str, Handler]) -> None:
        unknown = set(handlers) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"handlers for unknown event types: {sorted(unknown)}")
        self.broker = broker
        self.handlers = handlers
        self.topology = broker.topology
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task] = set()
        self._stopping = False

    async def start(self) -> None:
        assert self.broker.connection is not None
        self._channel = await self.broker.connection.channel()
        await self._channel.set_qos(prefetch_count=self.broker.prefetch)
        handlers = self.handlers
        await self.broker.declare_or_verify(
            lambda channel: self.broker.declare_service_queues(channel, handlers),
            self.broker.own_names(),
        )
        # Passive: restored as such after a reconnect, whatever the user may declare.
        self._queue = await self._channel.get_queue(self.topology.queue, ensure=True)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking deliveries, let in-flight ones finish, return the rest to the queue."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # channel already gone: its deliveries return anyway
                pass
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace_s)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            # Delivered between our cancel and the broker's cancel-ok: hand it back.
            await self._settle(message.reject(requeue=True))
            return
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(message)
        except Exception as exc:  # a bug of ours must not leave a delivery unsettled
            log.exception("consumer failed outside the handler", error=describe_error(exc))
            await self._settle(message.reject(requeue=True))
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        service = self.topology.service
        event_type = message.type or "unknown"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            service=service,
            event_id=message.message_id,
            event_type=event_type,
            correlation_id=message.correlation_id,
        )
        if message.redelivered:
            metrics.EVENTS_REDELIVERED.labels(service, event_type).inc()
        try:
            envelope = parse_envelope(message, self.broker.cipher)
        except PoisonMessage as exc:
            log.warning("poison message", error=str(exc))
            await self._dead_letter(message, exc)
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            log.warning("no handler for event type; acknowledged")
            metrics.EVENTS_CONSUMED.labels(service, envelope.type, "unroutable").inc()
            await self._settle(message.ack())
            return
        # The handler's span continues the publisher's trace (the message's header names
        # the publish; the envelope, for a message from elsewhere, the recording).
        with tracing.span(
            f"{envelope.type} process",
            kind=tracing.SpanKind.CONSUMER,
            parent=tracing.traceparent_in(message.headers or {}) or envelope.traceparent,
            attributes=_messaging_attributes(envelope, self.topology.queue),
        ) as current:
            await self._run_handler(message, envelope, handler, current)

    async def _run_handler(
        self,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        handler: Handler,
        current: tracing.Span,
    ) -> None:
        service = self.topology.service
        gate = self.broker.gate
        if gate is not None and not await gate.wait_up(self.broker.handler_timeout_s):
            await self._defer(message, envelope.type, DependencyDown("still unreachable"))
            return
        try:
            with metrics.HANDLER_LATENCY.labels(service, envelope.type).time():
                await asyncio.wait_for(handler(envelope), self.broker.handler_timeout_s)
        except Exception as exc:
            tracing.failed(current, exc)
            if gate is not None and gate.may_be_outage(exc) and not await gate.answers():
                gate.down()
                await self._defer(message, envelope.type, exc)
                return
            await self._retry_or_dead_letter(message, envelope.type, exc)
            return
        metrics.EVENTS_CONSUMED.labels(service, envelope.type, "ok").inc()
        await self._settle(message.ack())

    async def _retry_or_dead_letter(
        self, message: AbstractIncomingMessage, event_type: str, exc: BaseException
    ) -> None:
        attempt = _attempt(message)
        if attempt >= self.topology.max_attempts:
            log.error("handler failed; dead-lettering", attempt=attempt, error=describe_error(exc))
            await self._dead_letter(message, exc)
            return
        delay = self.topology.retry_delays_ms[attempt - 1]
        log.warning(
            "handler failed; will retry", attempt=attempt, delay_ms=delay, error=describe_error(exc)
        )
        copy = _copy(message, attempt + 1, exc)
        try:
            t = self.topology
            await self.broker.publish_raw(t.requeue, t.retry_key(delay), copy)
        except PublishError:
            # Could not park it for a retry: give it back; the reject counts toward
            # the queue's delivery limit, past which the broker dead-letters it.
            await self._settle(message.reject(requeue=True))
            return
        metrics.EVENTS_RETRIED.labels(self.topology.service, event_type).inc()
        metrics.EVENTS_CONSUMED.labels(self.topology.service, event_type, "retried").inc()
        await self._settle(message.ack())

    async def _defer(
        self, message: AbstractIncomingMessage, event_type: str, exc: BaseException
    ) -> None:
        """A dependency is down: park the delivery for the first back-off step without
        counting an attempt (an outage is not the message's fault, however long)."""
        log.warning("a dependency is down; delivery deferred", error=describe_error(exc))
        t = self.topology
        if not t.retry_delays_ms:
            await self._settle(message.reject(requeue=True))
            return
        copy = _copy(message, _attempt(message), exc)
        try:
            await self.broker.publish_raw(t.requeue, t.retry_key(t.retry_delays_ms[0]), copy)
        except PublishError:
            await self._settle(message.reject(requeue=True))
            return
        metrics.EVENTS_CONSUMED.labels(t.service, event_type, "deferred").inc()
        await self._settle(message.ack())

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: BaseException) -> None:
        event_type = message.type or "unknown"
        copy = _copy(message, _attempt(message), exc)
        copy.headers[H_FAILED_SERVICE] = self.topology.service
        try:
            await self.broker.publish_raw(self.topology.requeue, self.topology.DLQ_KEY, copy)
        except PublishError:
            await self._settle(message.reject(requeue=True))
            return
        metrics.EVENTS_DEAD_LETTERED.labels(self.topology.service, event_type).inc()
        metrics.EVENTS_CONSUMED.labels(self.topology.service, event_type, "dead_lettered").inc()
        await self._settle(message.ack())

    @staticmethod
    async def _settle(awaitable: Awaitable[Any]) -> None:
        # After a reconnect the delivery tag is void; the broker redelivers it and
        # the inbox turns the redelivery into a no-op.
        try:
            await awaitable
        except Exception as exc:
            log.warning(
                "could not settle delivery; broker will redeliver", error=describe_error(exc)
            )


def _attempt(message: AbstractIncomingMessage) -> int:
    try:
        return max(1, int((message.headers or {}).get(H_ATTEMPT, 1)))
    except (TypeError, ValueError):
        return 1


def _copy(message: AbstractIncomingMessage, attempt: int, exc: BaseException) -> aio_pika.Message:
    headers = dict(message.headers or {})
    error = describe_error(exc)
    headers[H_ATTEMPT] = attempt
    headers.setdefault(H_FIRST_ERROR, error)
    headers[H_LAST_ERROR] = error
    headers.setdefault(H_ORIGINAL_EXCHANGE, message.exchange or "")
    headers.setdefault(H_ORIGINAL_ROUTING_KEY, message.routing_key or "")
    return persistent_copy(message, headers)


def persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent message with the delivery's body and properties and these headers."""
    return aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        headers=headers,
    )
