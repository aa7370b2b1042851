"""What operators read of notifications (failed deliveries, one delivery), and an
applicant's part of their data export.

Reads only: nothing here writes, and the routes read through this module, never
through a collection. A delivery is shown by references only: its sealed address and
text are never read here.
"""

from __future__ import annotations

from typing import Any

from notifications.domain.delivery import Status
from notifications.store import Sealer, Stores
from shared import metrics

# What an export says of each message: which one, how, when, and whether it arrived.
EXPORTED = ("template", "channel", "audience", "status", "created_at", "finished_at", "attempts")
NOT_EXPORTED = ("access_token",)  # a credential, not data about them


class NotificationViews:
    def __init__(self, stores: Stores, service_name: str, sealer: Sealer) -> None:
        self.stores = stores
        self.service_name = service_name
        self.sealer = sealer

    async def export(self, registration_id: str) -> dict[str, Any]:
        """Everything notifications holds about the applicant's registration, for their
        data export: the contact it writes to, and each message about them."""
        recipient = await self.stores.recipients.collection.find_one({"_id": registration_id})
        contact = None
        if recipient is not None:
            opened = self.sealer.open_contact(recipient)
            contact = {
                **{k: v for k, v in opened.items() if k not in NOT_EXPORTED},
                **{k: recipient.get(k) for k in ("language", "timezone", "standing")},
            }
        messages = []
        for collection in (self.stores.deliveries.collection, self.stores.delivery_log):
            async for doc in collection.find({"registration_id": registration_id}, {"sealed": 0}):
                messages.append({k: doc.get(k) for k in EXPORTED})
        messages.sort(key=lambda m: str(m["created_at"]))
        return {"contact": contact, "messages": messages}

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
