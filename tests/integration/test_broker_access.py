"""The broker users and the dead-letter bounds, on the live local broker.

Each test gets a fresh vhost (and its own user names: users are the broker's, not
the vhost's). The topology is declared by an administrator (guest, as the
deployment's definitions would), the users get exactly shared/brokeraccess.py's
permissions, and then each is attacked: what it must not do is refused by the
broker with ACCESS_REFUSED, and its own work (start, consume, retry, dead-letter)
still succeeds. The bounds are the deployment's policy applied with rabbitmqctl,
on dead-letter queues that existed, unbounded, before it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import aio_pika
import aiormq
import pytest

from shared import brokeraccess, devinfra
from shared.brokeraccess import DlqBoundSettings
from shared.messaging import Broker, PublishError, Topology, build_message
from shared.topology import subscriptions
from tests.integration.helpers_messaging import eventually, ready_count, take_all, withdrawn

DELAYS = (50,)


def amqp_url(user: str, password: str, vhost: str) -> str:
    return f"amqp://{quote(user, safe='')}:{password}@127.0.0.1:5672/{quote(vhost, safe='')}"


@pytest.fixture
def vhost(rabbitmq_url: str) -> Iterator[str]:  # rabbitmq_url: the local broker is up
    name = f"holdspace-access-{uuid.uuid4().hex[:8]}"
    devinfra.create_vhost(name)
    yield name
    devinfra.delete_vhost(name)


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def created_users() -> Iterator[list[str]]:
    users: list[str] = []
    yield users
    for user in users:
        try:
            devinfra.rabbitmqctl("delete_user", user)
        except Exception:
            pass


async def declare_topology(vhost: str, prefix: str) -> None:
    """What the deployment does with an administrator: every service's queues."""
    admin = Broker(amqp_url("guest", "guest", vhost), Topology(prefix, "registration", DELAYS))
    await admin.connect()
    channel = await admin.connection.channel()
    for service, event_types in subscriptions().items():
        other = Broker(admin.url, Topology(prefix, service, DELAYS))
        await other.declare_service_queues(channel, event_types)
    await admin.close()


def make_user(
    vhost: str, permissions: brokeraccess.Permissions, created: list[str]
) -> tuple[str, str]:
    password = uuid.uuid4().hex
    brokeraccess.apply_permissions(vhost, permissions, password)
    created.append(permissions.user)
    return permissions.user, password


@pytest.fixture
async def admin_channel(vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url("guest", "guest", vhost))
    yield await connection.channel()
    await connection.close()


async def refused(coro) -> bool:
    try:
        await coro
    except (aiormq.exceptions.ChannelAccessRefused, PublishError) as exc:
        text = str(exc) + str(exc.__cause__ or "")
        assert "ACCESS_REFUSED" in text or "403" in text or isinstance(exc, PublishError), text
        return True
    return False


async def test_a_service_user_does_its_own_work_and_nothing_of_another_services(
    vhost: str, run_id: str, created_users: list[str], admin_channel
) -> None:
    prefix = f"t{run_id}."
    await declare_topology(vhost, prefix)
    user, password = make_user(
        vhost,
        brokeraccess.service_permissions(prefix, "consent", f"t{run_id}-consent"),
        created_users,
    )
    url = amqp_url(user, password, vhost)
    mine = Topology(prefix, "consent", DELAYS)
    payments = Topology(prefix, "payments", DELAYS)

    # Its own work: it starts (declaring is refused, the passive check passes), consumes,
    # retries and dead-letters through its own requeue exchange.
    broker = Broker(url, mine, publish_timeout_s=5)
    await broker.connect()
    assert not await broker.declare_or_verify(
        lambda ch: broker.declare_service_queues(ch, ["registration.withdrawn"]),
        broker.own_names(),
    )
    seen: list[str] = []

    async def always_fails(envelope) -> None:
        seen.append(envelope.id)
        raise RuntimeError("boom")

    await broker.consume({"registration.withdrawn": always_fails})
    event = withdrawn()
    exchange = await admin_channel.get_exchange(mine.internal)
    await exchange.publish(build_message(event), routing_key=event.type)
    [dead] = await take_all(admin_channel, mine.dlq, expected=1)
    assert dead.message_id == event.id and seen == [event.id, event.id]  # retried once

    # What it must not do, each refused by the broker:
    forged = build_message(withdrawn())
    # publish another service's event type (topic permission) ...
    assert await refused(broker.publish_raw(mine.internal, "payment.confirmed", forged))
    await broker.close()
    broker = Broker(url, mine, publish_timeout_s=5)
    await broker.connect()
    # ... to another service's requeue exchange, the dead-letter exchange or the default
    # exchange (which would reach any queue, its own included) ...
    for exchange_name, key in (
        (payments.requeue, payments.DLQ_KEY),
        (mine.dead_letter_exchange, "payments"),
        ("", payments.queue),
        (mine.public, "enrollment.confirmed"),
    ):
        assert await refused(broker.publish_raw(exchange_name, key, forged)), exchange_name
        await broker.close()
        broker = Broker(url, mine, publish_timeout_s=5)
        await broker.connect()
    # ... consume another service's queue or DLQ, declare, delete or purge anything.
    connection = await aio_pika.connect(url)
    for name in (payments.queue, payments.dlq, mine.dlq):
        channel = await connection.channel()
        queue = await channel.get_queue(name, ensure=True)  # passive: no right needed
        assert await refused(queue.consume(lambda m: None)), name
    channel = await connection.channel()
    assert await refused(channel.declare_queue(f"{prefix}consent.extra", durable=True))
    channel = await connection.channel()
    queue = await channel.get_queue(payments.queue, ensure=True)
    assert await refused(queue.purge())
    await connection.close()
    # And its own events still go out.
    await broker.publish_raw(mine.internal, "consent.requested", forged, mandatory=False)
    await broker.close()
    assert await ready_count(admin_channel, payments.dlq) == 0


async def test_a_service_user_cannot_start_where_the_topology_was_not_declared(
    vhost: str, run_id: str, created_users: list[str]
) -> None:
    prefix = f"t{run_id}."
    user, password = make_user(
        vhost,
        brokeraccess.service_permissions(prefix, "payments", f"t{run_id}-payments"),
        created_users,
    )
    broker = Broker(amqp_url(user, password, vhost), Topology(prefix, "payments", DELAYS))
    with pytest.raises(RuntimeError, match=f"exchange '{prefix}internal' does not exist"):
        await broker.connect()
    await broker.close()


async def test_the_subscriber_binds_its_own_queue_to_enrollments_and_reads_nothing_else(
    vhost: str, run_id: str, created_users: list[str], admin_channel
) -> None:
    prefix = f"t{run_id}."
    await declare_topology(vhost, prefix)
    name = f"t{run_id}-acme"
    user, password = make_user(
        vhost, brokeraccess.subscriber_permissions(prefix, name), created_users
    )
    connection = await aio_pika.connect(amqp_url(user, password, vhost))
    channel = await connection.channel()
    own = await channel.declare_queue(f"{name}.enrollments", durable=True)
    await own.bind(f"{prefix}public", routing_key="enrollment.*")
    for exchange, key in ((f"{prefix}public", "#"), (f"{prefix}internal", "registration.*")):
        channel = await connection.channel()
        queue = await channel.get_queue(f"{name}.enrollments", ensure=True)
        assert await refused(queue.bind(exchange, routing_key=key)), (exchange, key)
    for service in ("registration", "notifications"):
        t = Topology(prefix, service, DELAYS)
        for internal_queue in (t.queue, t.dlq):
            channel = await connection.channel()
            queue = await channel.get_queue(internal_queue, ensure=True)
            assert await refused(queue.get(fail=False)), internal_queue
    channel = await connection.channel()
    public = await channel.get_exchange(f"{prefix}public")
    assert await refused(
        public.publish(aio_pika.Message(b"{}"), routing_key="enrollment.confirmed")
    )
    # What it may read arrives.
    publish = await admin_channel.get_exchange(f"{prefix}public")
    await publish.publish(
        aio_pika.Message(b"{}", message_id="e1"), routing_key="enrollment.confirmed"
    )
    channel = await connection.channel()
    queue = await channel.get_queue(f"{name}.enrollments", ensure=True)
    message = await eventually(lambda: queue.get(fail=False), what="the enrollment event")
    assert message.message_id == "e1"
    await connection.close()


async def test_a_full_dead_letter_queue_drops_its_oldest_and_an_old_one_is_gone(
    vhost: str, run_id: str, admin_channel
) -> None:
    prefix = f"t{run_id}."
    t = Topology(prefix, "payments", DELAYS)
    await declare_topology(vhost, prefix)  # the DLQs exist, unbounded, before the policy
    requeue = await admin_channel.get_exchange(t.requeue)
    for i in range(2):
        await requeue.publish(aio_pika.Message(b"x", message_id=f"old{i}"), routing_key="dlq")

    brokeraccess.apply_dlq_bounds(vhost, prefix, DlqBoundSettings(dlq_max_length=3, dlq_ttl_s=2))
    await declare_topology(vhost, prefix)  # a service starting again: no PRECONDITION_FAILED

    for i in range(4):
        await requeue.publish(aio_pika.Message(b"x", message_id=f"new{i}"), routing_key="dlq")
    kept = await take_all(admin_channel, t.dlq, expected=3)
    assert [m.message_id for m in kept] == ["new1", "new2", "new3"]  # the oldest dropped

    await requeue.publish(aio_pika.Message(b"x", message_id="aging"), routing_key="dlq")
    assert await ready_count(admin_channel, t.dlq) == 1
    await asyncio.sleep(2.5)  # past DLQ_TTL_S
    queue = await admin_channel.get_queue(t.dlq, ensure=True)
    assert await queue.get(fail=False) is None
