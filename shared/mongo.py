"""MongoDB lifecycle: one AsyncMongoClient per process, indexes declared at start-up.

The same code runs on MongoDB (production) and on the embedded mongo-java-server
(development and tests); every operation relied on is pinned by tests/compat
against the live server, and what the embedded server lacks is listed there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pymongo
from pymongo import AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError
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


def make_client(
    url: str,
    *,
    service: str = "unknown",
    max_pool_size: int = 50,
    operation_timeout_s: float = 10.0,
) -> AsyncMongoClient:
    """``operation_timeout_s``: how long one operation may wait for the server's answer
    (a socket timeout: the time the database takes, not the time a request spent
    queueing in this process), so a database that stops answering fails operations
    instead of hanging them; ``unreachable`` then says so."""
    return AsyncMongoClient(
        url,
        w="majority",
        tz_aware=True,
        maxPoolSize=max_pool_size,
        serverSelectionTimeoutMS=int(min(5.0, operation_timeout_s) * 1000),
        connectTimeoutMS=int(min(5.0, operation_timeout_s) * 1000),
        socketTimeoutMS=int(operation_timeout_s * 1000),
        # The driver's own retry of a read that timed out opens a new connection and
        # waits again (measured: 10 s for a 2 s timeout against a frozen server); the
        # retries are ours instead: a 503 with Retry-After, a consumer's next attempt.
        retryReads=False,
        appname="holdspace",
        event_listeners=[CommandCounter(service)],
    )


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")


def unreachable(exc: BaseException) -> bool:
    """The database did not answer (down, black-holed, past the operation timeout, or
    shedding load: the ``SystemOverloadedError`` label, MongoDB's own admission control),
    as opposed to refusing an operation (a duplicate key, a bad query)."""
    return isinstance(exc, ConnectionFailure) or (
        isinstance(exc, PyMongoError)
        and (exc.timeout or exc.has_error_label("SystemOverloadedError"))
    )


PROBE_TIMEOUT_S = 2.0


class DatabaseGate:
    """Whether the database answers, for consumers (shared/messaging.py ``Gate``).

    A handler that failed because the database did not answer spends no attempt: the
    consumer checks with a ping, marks the gate down, and every delivery waits for it to
    open again instead of walking towards the dead letters; one probe pings until the
    database answers, and then everything resumes by itself.
    """

    def __init__(self, client: AsyncMongoClient, *, probe_every_s: float = 1.0) -> None:
        self.client = client
        self.probe_every_s = probe_every_s
        self._up = asyncio.Event()
        self._up.set()
        self._probe: asyncio.Task | None = None

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def may_be_outage(self, exc: BaseException) -> bool:
        # A handler cut off by its own timeout may have been waiting on the database.
        return unreachable(exc) or isinstance(exc, TimeoutError)

    async def answers(self) -> bool:
        try:
            with pymongo.timeout(PROBE_TIMEOUT_S):
                await ping(self.client)
        except PyMongoError:
            return False
        return True

    def down(self) -> None:
        if not self._up.is_set():
            return
        self._up.clear()
        log.warning("database unreachable; consumers wait for it")
        self._probe = asyncio.create_task(self._until_up(), name="database-probe")

    async def wait_up(self, timeout_s: float) -> bool:
        """True once the database answers (at once when it does), False after ``timeout_s``."""
        if self._up.is_set():
            return True
        try:
            await asyncio.wait_for(self._up.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    async def _until_up(self) -> None:
        while True:
            if await self.answers():
                break
            await asyncio.sleep(self.probe_every_s)
        log.info("database answers again; consumers resume")
        self._up.set()


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
