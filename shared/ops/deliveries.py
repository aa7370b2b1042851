"""Failed deliveries and unacknowledged safety alerts in notifications (its database,
read directly by the tool).

Coordinated with services/notifications/store.py: the ``deliveries`` collection is
the working set of deliveries; failed ones (``status: "failed"``, permanent or out of
attempts) stay there for operators, indexed by status. When notifications has no
such collection (not deployed, or not yet started) the answer is "n/a".
"""

from __future__ import annotations

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
    db = client[settings.database_name(SERVICE)]
    try:
        if COLLECTION not in await db.list_collection_names():
            return {"service": SERVICE, "failed": None, "source": "n/a", "recent": []}
        failed = await db[COLLECTION].count_documents({"status": FAILED})
        recent = []
        if failed:
            cursor = db[COLLECTION].find({"status": FAILED}).limit(show)
            recent = [safe_fields(doc) async for doc in cursor]
    except Exception as exc:
        return {
            "service": SERVICE,
            "failed": None,
            "source": "error",
            "error": f"{type(exc).__name__}: {str(exc)[:200]}",
            "recent": [],
        }
    return {
        "service": SERVICE,
        "failed": failed,
        "source": f"{db.name}.{COLLECTION}",
        "recent": recent,
    }


ALERTS = "alerts"


async def safety_alerts(settings: OpsSettings, client: AsyncMongoClient) -> dict[str, Any]:
    """Safety flags no coordinator has acknowledged; ``escalated`` ones waited past
    SAFETY_ACK_S and were sent again (coordinated with services/notifications/alerts.py)."""
    db = client[settings.database_name(SERVICE)]
    try:
        if ALERTS not in await db.list_collection_names():
            return {"unacknowledged": None, "escalated": None, "source": "n/a"}
        waiting = {"acknowledged": None}
        unacknowledged = await db[ALERTS].count_documents(waiting)
        escalated = await db[ALERTS].count_documents({**waiting, "escalations": {"$gte": 1}})
    except Exception as exc:
        return {
            "unacknowledged": None,
            "escalated": None,
            "source": "error",
            "error": f"{type(exc).__name__}: {str(exc)[:200]}",
        }
    return {
        "unacknowledged": unacknowledged,
        "escalated": escalated,
        "source": f"{db.name}.{ALERTS}",
    }
