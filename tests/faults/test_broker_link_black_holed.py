"""Matrix row 3: the link between a service and the broker black-holed for 90 s
(reliability.md §9; docs/reliability.md).

Nothing gets through either way and no connection is closed, so only AMQP heartbeats
can tell the client its connection is dead; aio-pika's reconnection has had bugs right
here (#231, #563, #588). The service's broker connects through Toxiproxy with a
3-second heartbeat; events are published to its queue over a direct connection
meanwhile (the rest of the system still reaches the broker).

Pass: the loss is seen within aiormq's grace, (heartbeat + 1) x 3 (the matrix asks for
2 heartbeats; aiormq allows three missed ones and has no setting for it, see
docs/reliability.md); a publish during the outage fails within its timeout instead of
hanging; after healing the consumer is back within a heartbeat + 15 s; every event
published is applied once (tally: lost 0, duplicated 0).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from aio_pika.abc import AbstractChannel

from shared.events import Envelope
from shared.messaging import PublishError
from tests.faults.harness import Tally, Toxiproxy
from tests.integration.helpers_messaging import (
    MessagingEnv,
    connect_plain,
    eventually,
    queue_counts,
    withdrawn,
)

WITHDRAWN = "registration.withdrawn"
HEARTBEAT_S = 3
GRACE_S = (HEARTBEAT_S + 1) * 3  # aiormq's HEARTBEAT_GRACE_MULTIPLIER
BLACK_HOLE_S = 90
PUBLISH_TIMEOUT_S = 2.0


@pytest.fixture
def toxiproxy(tmp_path: Path) -> Iterator[Toxiproxy]:
    proxy = Toxiproxy(tmp_path)
    try:
        yield proxy
    finally:
        proxy.close()


def through(url: str, port: int) -> str:
    parts = urlparse(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc_new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return urlunparse(parts._replace(netloc=netloc_new, query=f"heartbeat={HEARTBEAT_S}"))


@pytest.fixture
async def envs(rabbitmq_url: str, run_id: str) -> AsyncIterator[tuple[MessagingEnv, MessagingEnv]]:
    service, direct = MessagingEnv(rabbitmq_url, run_id), MessagingEnv(rabbitmq_url, run_id)
    try:
        yield service, direct
    finally:
        await service.aclose()
        await direct.aclose()


@pytest.mark.faults
@pytest.mark.timeout(300)
async def test_a_black_holed_broker_link_is_seen_survived_and_loses_nothing(
    toxiproxy: Toxiproxy, envs: tuple[MessagingEnv, MessagingEnv], rabbitmq_url: str
) -> None:
    service_env, direct_env = envs
    broker_port = urlparse(rabbitmq_url).port or 5672
    service_env.url = through(rabbitmq_url, toxiproxy.proxy("amqp", broker_port))
    topology = service_env.topology(retry_delays_ms=(100, 200))
    service = await service_env.broker(topology, publish_timeout_s=PUBLISH_TIMEOUT_S)
    direct = await direct_env.broker(topology)
    applied: Counter[str] = Counter()
    arrived: dict[str, float] = {}

    async def apply(envelope: Envelope) -> None:
        applied[envelope.id] += 1
        arrived.setdefault(envelope.id, time.monotonic())

    await service.consume({WITHDRAWN: apply})
    tally = Tally()

    async def publish(count: int) -> list[Envelope]:
        sent = [withdrawn() for _ in range(count)]
        for envelope in sent:
            await direct.publish(envelope)  # confirmed by the broker: acknowledged
            tally.attempt(envelope.id, acknowledged=True)
        return sent

    await publish(10)
    await eventually(lambda: len(applied) == 10, what="the first 10 applied")

    toxiproxy.black_hole("amqp")
    cut = time.monotonic()
    # A publish through the dead link fails within its timeout; it does not hang.
    stranded = withdrawn()
    with pytest.raises(PublishError):
        await asyncio.wait_for(service.publish(stranded), PUBLISH_TIMEOUT_S + 5)
    publish_failed_after = time.monotonic() - cut
    tally.attempt(stranded.id, acknowledged=False)

    await eventually(lambda: not service.is_connected, timeout=GRACE_S + 5, what="the loss seen")
    loss_seen_after = time.monotonic() - cut
    during = await publish(20)
    await asyncio.sleep(max(0.0, BLACK_HOLE_S - (time.monotonic() - cut)))
    assert not any(e.id in applied for e in during), "delivered through a black hole?"

    toxiproxy.heal("amqp")
    healed = time.monotonic()
    await eventually(
        lambda: all(e.id in applied for e in during),
        timeout=HEARTBEAT_S + 15,
        what="the consumer back",
    )
    back_after = max(arrived[e.id] for e in during) - healed
    after = await publish(5)
    await eventually(lambda: all(e.id in applied for e in after), what="the last 5 applied")

    tally.found(applied.elements())
    tally.assert_valid()
    connection = await connect_plain(rabbitmq_url)
    try:
        channel: AbstractChannel = await connection.channel()
        counts = await queue_counts(channel, topology.all_queues())
    finally:
        await connection.close()
    assert not any(counts.values()), counts
    assert loss_seen_after <= GRACE_S, loss_seen_after
    assert publish_failed_after <= PUBLISH_TIMEOUT_S + 1, publish_failed_after
    print(  # the figures docs/reliability.md quotes
        f"row 3: loss seen after {loss_seen_after:.1f}s, publish failed after "
        f"{publish_failed_after:.1f}s, consumer back {back_after:.1f}s after healing, "
        f"tally {tally.score()}"
    )
