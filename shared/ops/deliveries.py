"""Failed deliveries and unacknowledged safety alerts in notifications (its database,
read directly by the tool).

Coordinated with services/notifications/store.py: the ``deliveries`` collection is
the working set of deliveries; failed ones (``status: "failed"``, permanent or out of
attempts) stay there for operators, indexed by status. When notifications has no
such collection (not deployed, or not yet started) the answer is "n/a".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient

from shared.ops.redact import safe_fields
from shared.ops.settings import OpsSettings

SERVICE = "notifications"
COLLECTION = "deliveries"
FAILED = "failed"


async def failed_deliveries(
    settings: OpsSettings, client: AsyncMongoClient, show: int = 10
) -> dict[str, Any]:
    async def read(collection: Any) -> dict[str, Any]:
        failed = await collection.count_documents({"status": FAILED})
        recent = []
        if failed:
            cursor = collection.find({"status": FAILED}).limit(show)
            recent = [safe_fields(doc) async for doc in cursor]
        return {"failed": failed, "recent": recent}

    empty = {"service": SERVICE, "failed": None, "recent": []}
    return await _inspect(client[settings.database_name(SERVICE)], COLLECTION, empty, read)


ALERTS = "alerts"


async def safety_alerts(settings: OpsSettings, client: AsyncMongoClient) -> dict[str, Any]:
    """Safety flags no coordinator has acknowledged; ``escalated`` ones waited past
    SAFETY_ACK_S and were sent again (coordinated with services/notifications/alerts.py)."""

    async def read(collection: Any) -> dict[str, Any]:
        waiting = {"acknowledged": None}
        return {
            "unacknowledged": await collection.count_documents(waiting),
            "escalated": await collection.count_documents({**waiting, "escalations": {"$gte": 1}}),
        }

    empty = {"unacknowledged": None, "escalated": None}
    return await _inspect(client[settings.database_name(SERVICE)], ALERTS, empty, read)


async def _inspect(
    db: Any,
    name: str,
    empty: dict[str, Any],
    read: Callable[[Any], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """``read`` of one collection, with where it came from; "n/a" when notifications has
    no such collection (not deployed, or not started yet), "error" when it failed."""
    try:
        if name not in await db.list_collection_names():
            return {**empty, "source": "n/a"}
        return {**empty, **await read(db[name]), "source": f"{db.name}.{name}"}
    except Exception as exc:
        return {**empty, "source": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
