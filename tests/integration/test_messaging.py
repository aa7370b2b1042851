"""shared.messaging against the real broker: publishing, consuming, retries, dead letters.

Every test builds its own topology under the prefix ``t<run_id>.`` in the session's
vhost, with a short retry schedule, and deletes its queues and exchanges afterwards.
Outcomes are read back from the broker (queue depths, dead-lettered messages and
their headers) and waited for with a deadline, never with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from urllib.parse import unquote, urlparse

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel

from shared import devinfra
from shared.events import Envelope, NotificationSent, make_envelope, new_id
from shared.messaging import (
    CONTENT_TYPE,
    H_ATTEMPT,
    H_FAILED_SERVICE,
    H_FIRST_ERROR,
    H_LAST_ERROR,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_ROUTING_KEY,
    Consumer,
    PublishError,
    Topology,
)

from .helpers_messaging import (
    SOURCE,
    HandlerBoom,
    MessagingEnv,
    Recorder,
    enrollment_confirmed,
    eventually,
    header_text,
    queue_counts,
    raw_message,
    ready_count,
    rejected,
    take_all,
    withdrawn,
)

REJECTED = "registration.rejected"
WITHDRAWN = "registration.withdrawn"


# --- fixtures --------------------------------------------------------------------


async def _assert_all_empty(channel: AbstractChannel, topology: Topology) -> None:
    async def _empty() -> bool:
        counts = await queue_counts(channel, topology.all_queues())
        assert not any(counts.values()), counts
        return True

    await eventually(_empty, what="every queue empty")


# --- 1. round trip -------------------------------------------------------------------


async def test_publish_consume_round_trip(env: MessagingEnv, inspect: AbstractChannel) -> None:
    topology = env.topology()
    broker = await env.broker(topology)
    received: list[Envelope] = []

    async def handle(envelope: Envelope) -> None:
        received.append(envelope)

    consumer = await broker.consume({REJECTED: handle})
    # A second queue on the same binding shows the AMQP properties as published.
    spy = await inspect.declare_queue(f"{topology.prefix}spy", exclusive=True)
    await spy.bind(topology.internal, routing_key=REJECTED)

    envelope = rejected(correlation_id=f"corr-{new_id()}")
    await broker.publish(envelope)

    await eventually(lambda: received, what="handler called")
    await consumer.stop()
    assert received == [envelope]
    assert isinstance(received[0], Envelope)
    assert received[0].payload() == envelope.payload()

    [message] = await take_all(inspect, spy.name, expected=1)
    assert message.message_id == envelope.id
    assert message.type == envelope.type == REJECTED
    assert message.correlation_id == envelope.correlationid
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == CONTENT_TYPE == "application/cloudevents+json"
    assert message.app_id == SOURCE
    assert message.exchange == topology.internal
    assert message.routing_key == REJECTED
    assert Envelope.model_validate_json(message.body) == envelope
    await _assert_all_empty(inspect, topology)


# --- 2. a handler that always fails ------------------------------------------------------


async def test_failing_handler_dead_letters_after_max_attempts_while_others_flow(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    delays = (200, 400)
    topology = env.topology(retry_delays_ms=delays)
    assert topology.max_attempts == 3
    broker = await env.broker(topology)
    recorder = Recorder()

    async def always_fails(envelope: Envelope) -> None:
        attempt = recorder.record("fail", envelope)
        raise HandlerBoom(f"attempt {attempt}")

    async def succeeds(envelope: Envelope) -> None:
        recorder.record("ok", envelope)
        recorder.succeeded.append(envelope)

    consumer = await broker.consume({REJECTED: always_fails, WITHDRAWN: succeeds})

    poison = rejected()
    await broker.publish(poison)
    await eventually(lambda: recorder.attempts[poison.id] >= 1, what="first attempt")
    good = [withdrawn() for _ in range(5)]
    for envelope in good:
        await broker.publish(envelope)

    await eventually(
        lambda: sorted(recorder.succeeded_ids()) == sorted(e.id for e in good),
        what="other events handled",
    )
    good_done = max(t for t, kind, _ in recorder.calls if kind == "ok")

    async def dead_lettered() -> bool:
        counts = await queue_counts(inspect, topology.all_queues())
        assert counts[topology.dlq] == 1, counts
        assert sum(counts.values()) == 1, counts
        return True

    await eventually(dead_lettered, what="poison in the DLQ, nothing elsewhere")
    # Stopping closes the consumer's channel: anything unacked would return to the queue.
    await consumer.stop()
    assert await ready_count(inspect, topology.queue) == 0

    times = recorder.times(poison.id)
    assert len(times) == topology.max_attempts == 3
    # Each retry waited at least its back-off step (TTL in the retry queue).
    assert times[1] - times[0] >= delays[0] / 1000 * 0.8
    assert times[2] - times[1] >= delays[1] / 1000 * 0.8
    # The other events did not wait behind the poison one's retries.
    assert good_done < times[-1]
    assert sorted(recorder.succeeded_ids()) == sorted(e.id for e in good)  # each once

    [dead] = await take_all(inspect, topology.dlq, expected=1)
    assert dead.message_id == poison.id
    assert dead.type == REJECTED
    assert Envelope.model_validate_json(dead.body) == poison
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert dead.headers[H_ATTEMPT] == topology.max_attempts
    first_error = header_text(dead, H_FIRST_ERROR)
    last_error = header_text(dead, H_LAST_ERROR)
    assert "HandlerBoom" in first_error and "attempt 1" in first_error
    assert "HandlerBoom" in last_error and "attempt 3" in last_error
    assert header_text(dead, H_ORIGINAL_ROUTING_KEY) == poison.type == REJECTED
    assert header_text(dead, H_ORIGINAL_EXCHANGE) == topology.internal
    assert header_text(dead, H_FAILED_SERVICE) == topology.service


# --- 3. a handler that fails twice, then succeeds -----------------------------------------


async def test_handler_succeeding_on_last_retry_is_not_dead_lettered(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    topology = env.topology(retry_delays_ms=(50, 100))
    broker = await env.broker(topology)
    recorder = Recorder()

    async def flaky(envelope: Envelope) -> None:
        attempt = recorder.record("call", envelope)
        if attempt <= 2:
            raise HandlerBoom(f"attempt {attempt}")
        recorder.succeeded.append(envelope)

    consumer = await broker.consume({REJECTED: flaky})
    envelope = rejected()
    await broker.publish(envelope)

    await eventually(lambda: recorder.succeeded, what="handled successfully")
    await _assert_all_empty(inspect, topology)
    await consumer.stop()

    assert recorder.succeeded == [envelope]
    assert recorder.attempts[envelope.id] == 3
    counts = await queue_counts(inspect, topology.all_queues())
    assert counts == {name: 0 for name in topology.all_queues()}
    assert counts[topology.dlq] == 0


# --- 4. poison bodies ------------------------------------------------------------------------


def _unknown_type_body() -> bytes:
    raw = json.loads(rejected().model_dump_json())
    raw["type"] = "registration.vanished"
    raw["dataschema"] = "urn:holdspace:event:registration.vanished:v1"
    return json.dumps(raw).encode()


async def test_poison_bodies_go_straight_to_dlq_and_consumer_keeps_consuming(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    topology = env.topology()
    broker = await env.broker(topology)
    recorder = Recorder()

    async def handle(envelope: Envelope) -> None:
        recorder.record("ok", envelope)
        recorder.succeeded.append(envelope)

    consumer = await broker.consume({REJECTED: handle})
    poison = {
        "not-json": b"this is { not json",
        "not-utf8": b"\xff\xfe\x00\xfa",
        "json-not-envelope": b'{"hello": "world", "type": "registration.rejected"}',
        "json-array": b"[1, 2, 3]",
        "unknown-type": _unknown_type_body(),
    }
    internal = await inspect.get_exchange(topology.internal)
    for label, body in poison.items():
        # A foreign producer may set no AMQP type at all; the others claim a known one.
        amqp_type = None if label == "not-json" else REJECTED
        await internal.publish(
            raw_message(body, message_id=label, type=amqp_type), routing_key=REJECTED
        )
    valid = rejected()
    await broker.publish(valid)

    await eventually(lambda: recorder.succeeded, what="valid event handled")

    async def all_dead_lettered() -> bool:
        assert await ready_count(inspect, topology.dlq) == len(poison)
        return True

    await eventually(all_dead_lettered, what="every poison body in the DLQ")
    await consumer.stop()
    assert recorder.succeeded == [valid]
    assert [e.id for _, _, e in recorder.calls] == [valid.id]  # no handler saw poison

    dead = await take_all(inspect, topology.dlq, expected=len(poison))
    by_label = {m.message_id: m for m in dead}
    assert set(by_label) == set(poison)
    for label, body in poison.items():
        message = by_label[label]
        assert message.body == body, label
        assert message.type == (None if label == "not-json" else REJECTED), label
        assert message.headers[H_ATTEMPT] == 1, label
        assert header_text(message, H_FIRST_ERROR).startswith("PoisonMessage"), label
        assert header_text(message, H_LAST_ERROR).startswith("PoisonMessage"), label
        assert header_text(message, H_ORIGINAL_ROUTING_KEY) == REJECTED, label
        assert header_text(message, H_ORIGINAL_EXCHANGE) == topology.internal, label
        assert header_text(message, H_FAILED_SERVICE) == topology.service, label
    assert "unknown event type" in header_text(by_label["unknown-type"], H_LAST_ERROR)
    counts = await queue_counts(inspect, topology.all_queues())
    assert sum(counts.values()) == 0, counts


async def test_deeply_nested_json_body_is_dead_lettered(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    topology = env.topology()
    broker = await env.broker(topology, prefetch=1)
    recorder = Recorder()

    async def handle(envelope: Envelope) -> None:
        recorder.record("ok", envelope)

    consumer = await broker.consume({REJECTED: handle})
    internal = await inspect.get_exchange(topology.internal)
    depth = 5000
    await internal.publish(
        raw_message(b"[" * depth + b"]" * depth, message_id="nested", type=REJECTED),
        routing_key=REJECTED,
    )
    valid = rejected()
    await broker.publish(valid)

    async def dead_lettered() -> bool:
        assert await ready_count(inspect, topology.dlq) == 1
        return True

    try:
        await eventually(dead_lettered, timeout=5, what="nested JSON body in the DLQ")
        # With prefetch 1 the next event is only delivered once the poison one is settled.
        await eventually(lambda: recorder.calls, timeout=5, what="next event handled")
    finally:
        await consumer.stop()
    [dead] = await take_all(inspect, topology.dlq, expected=1)
    assert dead.headers[H_ATTEMPT] == 1
    assert header_text(dead, H_LAST_ERROR).startswith("PoisonMessage")


# --- 5. mandatory publishing -----------------------------------------------------------------


async def test_unroutable_internal_event_raises_but_public_event_does_not(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    topology = env.topology()
    broker = await env.broker(topology)  # exchanges exist, no queue bound to anything

    with pytest.raises(PublishError):
        await broker.publish(rejected())
    # A public event may have no subscriber; the broker drops it and confirms.
    await broker.publish(enrollment_confirmed())
    # Notifications' own events are internal but not mandatory either.
    await broker.publish(
        make_envelope(
            NotificationSent(
                delivery_id=new_id(), template="t", channel="email", recipient_ref="r"
            ),
            source=SOURCE,
            correlation_id=new_id(),
        )
    )

    # The publishing channel survived the returned message: once a queue takes the
    # event type, the same publish goes through and is delivered.
    received: list[Envelope] = []

    async def handle(envelope: Envelope) -> None:
        received.append(envelope)

    await broker.consume({REJECTED: handle})
    envelope = rejected()
    await broker.publish(envelope)
    await eventually(lambda: received == [envelope], what="delivered once bound")
    with pytest.raises(PublishError):
        await broker.publish(withdrawn())  # still unbound


# --- 6. graceful stop ------------------------------------------------------------------------


async def test_stop_lets_in_flight_handler_finish_and_leaves_the_rest_queued(
    env: MessagingEnv, inspect: AbstractChannel
) -> None:
    topology = env.topology()
    broker = await env.broker(topology, prefetch=1)
    started: list[str] = []
    finished: list[str] = []

    async def slow(envelope: Envelope) -> None:
        started.append(envelope.id)
        await asyncio.sleep(0.5)
        finished.append(envelope.id)

    consumer = await broker.consume({REJECTED: slow})
    first, second = rejected(), rejected()
    await broker.publish(first)
    await broker.publish(second)
    await eventually(lambda: started, what="a handler started")
    assert started == [first.id]

    began = time.monotonic()
    await consumer.stop(grace_s=5)
    took = time.monotonic() - began
    # stop() returned only after the in-flight handler had finished (and acked) ...
    assert finished == [first.id]
    assert took < 5
    # ... and never started the other one.
    assert started == [first.id]

    async def only_second_left() -> bool:
        assert await ready_count(inspect, topology.queue) == 1
        return True

    await eventually(only_second_left, what="the unstarted message back in the queue")

    # A new consumer (another process, as after a deploy) gets exactly the unstarted one.
    successor = await env.broker(topology)
    received: list[str] = []

    async def record(envelope: Envelope) -> None:
        received.append(envelope.id)

    consumer2 = await successor.consume({REJECTED: record})
    await eventually(lambda: received == [second.id], what="successor handled the rest")
    await _assert_all_empty(inspect, topology)
    await consumer2.stop()
    assert received == [second.id]  # the first one was acked, not redelivered
    assert started == [first.id]


# --- 7. broker restart -----------------------------------------------------------------------


def _controls_this_broker(url: str) -> bool:
    """True when rabbitmqctl on this host manages the broker behind ``url``."""
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost") or (parsed.port or 5672) != 5672:
        return False
    if not (shutil.which("rabbitmqctl") or shutil.which("/usr/sbin/rabbitmqctl")):
        return False
    vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    try:
        out = devinfra.rabbitmqctl("list_vhosts", timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return vhost in out.split()


async def _refuses_connections(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=2)
    except (OSError, aiormq.exceptions.AMQPError, TimeoutError):
        return True
    await connection.close()
    return False


async def _rabbitmqctl(*args: str, timeout: float) -> None:
    await asyncio.wait_for(
        asyncio.to_thread(devinfra.rabbitmqctl, *args, timeout=timeout), timeout + 5
    )


async def _start_app() -> None:
    for attempt in (1, 2):
        try:
            await _rabbitmqctl("start_app", timeout=60)
            return
        except (subprocess.SubprocessError, TimeoutError):
            if attempt == 2:
                raise


@pytest.mark.faults
async def test_consumer_resumes_after_broker_restart(env: MessagingEnv, rabbitmq_url: str) -> None:
    if not await asyncio.to_thread(_controls_this_broker, rabbitmq_url):
        pytest.skip("needs the local broker that rabbitmqctl controls")
    began = time.monotonic()
    topology = env.topology()
    broker = await env.broker(topology, publish_timeout_s=3.0)
    received: list[str] = []

    async def handle(envelope: Envelope) -> None:
        received.append(envelope.id)

    consumer = await broker.consume({REJECTED: handle})
    before = rejected()
    await broker.publish(before)
    await eventually(lambda: received == [before.id], what="handled before the restart")

    try:
        await _rabbitmqctl("stop_app", timeout=30)
        # The broker really went away: it takes no new connection.
        await eventually(lambda: _refuses_connections(rabbitmq_url), timeout=10, what="broker down")
        # Meanwhile publishing fails fast with PublishError (the outbox keeps the event).
        with pytest.raises(PublishError):
            await asyncio.wait_for(broker.publish(rejected()), 5)
    finally:
        await _start_app()  # always: the broker is shared with every other vhost
    restarted = time.monotonic()

    after = rejected()
    deadline = time.monotonic() + 30
    failures: list[str] = []
    while True:
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(broker.publish(after), 5)
            break
        except (PublishError, TimeoutError) as exc:
            failures.append(f"{str(exc).split(':')[0]} in {time.monotonic() - t0:.2f}s")
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)
    attempts = len(failures) + 1
    await eventually(lambda: after.id in received, timeout=15, what="handled after restart")

    assert broker._consumers == [consumer]  # the same consumer, not recreated
    assert isinstance(consumer, Consumer)
    assert received.count(before.id) == 1
    assert set(received) == {before.id, after.id}
    total = time.monotonic() - began
    print(
        f"restart: {restarted - began:.1f}s to restart, publish after {attempts} attempt(s), "
        f"{total:.1f}s in all; failed publishes: {failures}"
    )
    assert total < 60
