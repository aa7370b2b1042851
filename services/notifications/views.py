"""What operators read of notifications: failed deliveries and one delivery.

Reads only: nothing here writes, and the routes read through this module, never
through a collection. A delivery is shown by references only: its sealed address and
text are never read here.
"""

from __future__ import annotations

from typing import Any

from notifications.domain.delivery import Status
from notifications.store import Stores
from shared import metrics


class NotificationViews:
    def __init__(self, stores: Stores, service_name: str) -> None:
        self.stores = stores
        self.service_name = service_name

    async def failed(self, limit: int) -> list[dict[str, Any]]:
        """Failed deliveries, newest first."""
        cursor = (
            self.stores.deliveries.collection.find({"status": Status.failed.value}, {"sealed": 0})
            .sort("failed_at", -1)
            .limit(limit)
        )
        found = [d async for d in cursor]
        if len(found) < limit:  # the whole set: keep the gauge for operators' alerts true
            metrics.DELIVERIES_FAILED.labels(self.service_name).set(len(found))
        return found

    async def delivery(self, did: str) -> dict[str, Any]:
        return await self.stores.delivery(did)
