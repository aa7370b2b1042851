"""What notifications erases for ``registration.erasure_requested``: the applicant's
contact (the recipient projection), every delivery and delivery-log entry about the
registration. A safety alert stays (it names nobody: a coordinator must still answer
it). A tombstone stays in ``recipients`` (the id and
when), so an event about the registration that comes later is dropped, not retried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notifications.store import Stores
from shared.aggregates import AggregateStore, Change
from shared.erasure import report_erased


async def erase(
    stores: Stores, erasures: AggregateStore, registration_id: str, now: datetime
) -> None:
    def tombstone(doc: dict[str, Any], _state: Any) -> Change | None:
        if doc.get("erased_at"):
            return None
        return Change(set={"sealed": None, "erased_at": now, "standing": "closed"})

    if await stores.recipients.get(registration_id) is not None:
        await stores.recipients.mutate(registration_id, tombstone)
    else:
        await stores.recipients.collection.update_one(
            {"_id": registration_id},
            {"$setOnInsert": {"erased_at": now, "standing": "closed", "version": 1}},
            upsert=True,
        )
    await stores.deliveries.collection.delete_many({"registration_id": registration_id})
    await stores.delivery_log.delete_many({"registration_id": registration_id})
    await report_erased(erasures, registration_id, "notifications", now)
