"""What progress erases for ``registration.erasure_requested``: the whole space (every
answer, tick, journal note and what was shared), the person's feedback, and any share
others made with them. Then it reports once with progress.erased."""

from __future__ import annotations

from datetime import datetime

from progress.store import ProgressStores
from shared.erasure import report_erased


async def erase(stores: ProgressStores, registration_id: str, now: datetime) -> None:
    await stores.spaces.collection.delete_one({"_id": registration_id})
    await stores.feedback.delete_many({"registration_id": registration_id})
    # Someone who shared with this person shares with nobody now.
    await stores.spaces.collection.update_many(
        {"peer_id": registration_id}, {"$set": {"peer_id": None}}
    )
    await report_erased(stores.erasures, registration_id, "progress", now)
