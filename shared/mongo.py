"""MongoDB lifecycle: one AsyncMongoClient per process, indexes declared at start-up.

The same code runs on MongoDB (production) and on the embedded mongo-java-server
(development and tests); every operation relied on is pinned by tests/compat
against the live server, and what the embedded server lacks is listed there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymongo import AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from shared.logs import get_logger
from shared.metrics import DB_COMMANDS

log = get_logger(__name__)


# The driver's handshake, health checks and session clean-up: not the service's work.
UNCOUNTED_COMMANDS = frozenset({"hello", "ismaster", "ping", "endsessions"})


class CommandCounter(monitoring.CommandListener):
    """Counts every command a client sends in
    holdspace_db_commands_total{service,command,collection}.

    Counted on the client, so it is the same on every server (the benchmark reads it).
    """

    def __init__(self, service: str) -> None:
        self.service = service

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name.lower() not in UNCOUNTED_COMMANDS:
            DB_COMMANDS.labels(self.service, name, command_collection(event.command, name)).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def command_collection(command: Mapping[str, object], name: str) -> str:
    """The collection a command works on: the value of its first key for most commands,
    its ``collection`` field for getMore, none for commands on the database."""
    target = command.get(name)
    if isinstance(target, str):
        return target
    collection = command.get("collection")
    return collection if isinstance(collection, str) else ""


def make_client(url: str, *, service: str = "unknown", max_pool_size: int = 50) -> AsyncMongoClient:
    return AsyncMongoClient(
        url,
        w="majority",
        tz_aware=True,
        maxPoolSize=max_pool_size,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname="holdspace",
        event_listeners=[CommandCounter(service)],
    )


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")


async def wait_until_reachable(client: AsyncMongoClient, timeout_s: float = 60.0) -> None:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout_s), wait=wait_exponential(0.2, max=3), reraise=True
    ):
        with attempt:
            await ping(client)


IndexPlan = Mapping[str, Sequence[IndexModel]]


async def ensure_indexes(db: AsyncDatabase, plan: IndexPlan) -> None:
    """Create the collections and indexes a service declares (idempotent)."""
    for collection, indexes in plan.items():
        if indexes:
            await db[collection].create_indexes(list(indexes))
        log.debug("indexes ensured", collection=collection, count=len(indexes))
