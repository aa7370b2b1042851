"""The pages' outbox relay: it publishes the ``staff.access_revoked`` events that signing
out and deactivating an account write (web/accounts.py), so every service refuses the
account's tokens.

The pages need the broker for nothing else, so they start without it: the relay
connects in the background, and an event it cannot publish yet stays in the outbox
and is published once the broker answers (written by ``ops web deactivate-coordinator``
in another process, it is found by the relay's poll, every OUTBOX_POLL_S).
"""

from __future__ import annotations

import asyncio

from shared import mongo
from shared.logs import get_logger
from shared.messaging import Broker, Topology
from shared.outbox import PENDING_OUTBOX, OutboxRelay
from web.accounts import Accounts
from web.settings import WebSettings

log = get_logger(__name__)


class RevocationRelay:
    def __init__(self, settings: WebSettings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        topology = Topology(
            settings.holdspace_topology_prefix, "web", tuple(settings.retry_delays_ms())
        )
        self.broker = Broker(
            settings.rabbitmq_url, topology, publish_timeout_s=settings.publish_timeout_s
        )
        self.relay = OutboxRelay(
            self.broker,
            [accounts.revocations],
            service="web",
            poll_s=settings.outbox_poll_s,
            claim_s=settings.outbox_claim_s,
        )
        self._connecting: asyncio.Task | None = None

    async def start(self) -> None:
        collection = self.accounts.revocations.collection
        await mongo.ensure_indexes(collection.database, {collection.name: [PENDING_OUTBOX]})
        self._connecting = asyncio.create_task(self._connect(), name="web-broker-connect")
        await self.relay.start()

    async def _connect(self) -> None:
        while True:
            try:
                await self.broker.connect()
                return
            except Exception as exc:
                log.warning("broker not reachable; revocations wait", error=type(exc).__name__)
                await asyncio.sleep(5)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        await self.relay.stop()
        await self.broker.close()
