"""What consent erases for ``registration.erasure_requested``: the typed name, IP and
user agent of every signature (sealed in the chain records and in records not yet
appended). What a signature proves stays: the form, its version and text hash, the
clauses, the time. The chain still verifies: a record's personal fields are covered
by a digest in its hashed body, and a record without them is checked without them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consent.store import ConsentStores
from shared.aggregates import AggregateStore, Change
from shared.erasure import report_erased


async def erase(
    stores: ConsentStores, erasures: AggregateStore, registration_id: str, now: datetime
) -> None:
    def unsealed(doc: dict[str, Any], _state: Any) -> Change | None:
        pending = doc.get("pending_records", [])
        if not any(p.get("personal") for p in pending):
            return None
        return Change(set={"pending_records": [{**p, "personal": None} for p in pending]})

    if await stores.requests.get(registration_id) is not None:
        await stores.requests.mutate(registration_id, unsealed)
    await stores.signatures.update_many(
        {"body.registration_id": registration_id}, {"$set": {"personal": None}}
    )
    await report_erased(erasures, registration_id, "consent", now)
