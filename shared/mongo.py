"""MongoDB lifecycle: one AsyncMongoClient per process, indexes declared at start-up.

The same code runs on MongoDB and on FerretDB 1.x (development and tests); every
operation relied on is pinned by tests/compat against the live server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from shared.logs import get_logger

log = get_logger(__name__)


def make_client(url: str, *, max_pool_size: int = 50) -> AsyncMongoClient:
    return AsyncMongoClient(
        url,
        w="majority",
        tz_aware=True,
        maxPoolSize=max_pool_size,
        serverSelectionTimeoutMS=5_000,
        connectTimeoutMS=5_000,
        appname="holdspace",
    )


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")


async def wait_until_reachable(client: AsyncMongoClient, timeout_s: float = 60.0) -> None:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout_s), wait=wait_exponential(0.2, max=3), reraise=True
    ):
        with attempt:
            await ping(client)


async def is_ferretdb(client: AsyncMongoClient) -> bool:
    info = await client.admin.command("buildInfo")
    return "ferretdbVersion" in info or "ferretdbFeatures" in info


IndexPlan = Mapping[str, Sequence[IndexModel]]


async def ensure_indexes(db: AsyncDatabase, plan: IndexPlan) -> None:
    """Create the collections and indexes a service declares (idempotent)."""
    for collection, indexes in plan.items():
        # One index per call: FerretDB 1.24 drops the connection when a multi-index
        # createIndexes names indexes that all exist already (tests/compat pins it).
        for index in indexes:
            await db[collection].create_indexes([index])
        log.debug("indexes ensured", collection=collection, count=len(indexes))
