"""Pending outbox events and relay claims, read from each service's own database.

An aggregate with unpublished events has ``has_outbox: true`` and its events in
``outbox`` (shared/aggregates.py); a relay claims an aggregate's outbox by setting
its ``relay_claim`` ``{by, until}`` (shared/outbox.py) and frees it when done. A claim
past its ``until`` whose aggregate still has events is a stuck claim: the relay that
held it is gone and none has taken over since. Only ids, types and times are read
out of an outbox entry, never its data.

Every collection of a service's database is looked at, since a service may keep
aggregates in several; the embedded server scans each (it has no secondary
indexes), which is fine for an operator's occasional look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

PENDING_OR_CLAIMED = {
    "$or": [
        {"has_outbox": True},
        {"relay_claim": {"$ne": None}},
        {"outbox_parked": {"$exists": True, "$ne": []}},
    ]
}


@dataclass
class PendingEvent:
    collection: str
    aggregate_id: str
    id: str
    type: str
    time: datetime
    correlationid: str | None
    error: str | None = None  # why the relay set it aside (parked events only)

    def to_json(self, now: datetime) -> dict[str, Any]:
        out = {
            "collection": self.collection,
            "aggregate_id": self.aggregate_id,
            "id": self.id,
            "type": self.type,
            "time": self.time.isoformat(),
            "age_s": round((now - self.time).total_seconds(), 1),
            "correlationid": self.correlationid,
        }
        return {**out, "error": self.error} if self.error else out


@dataclass
class Claim:
    key: str
    owner: str | None
    expires_at: datetime
    expired: bool
    stuck: bool  # expired and its aggregate still has events to publish

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "owner": self.owner,
            "expires_at": self.expires_at.isoformat(),
            "expired": self.expired,
            "stuck": self.stuck,
        }


@dataclass
class OutboxReport:
    service: str
    database: str
    exists: bool
    checked_at: datetime
    collections: list[str] = field(default_factory=list)  # those holding pending events
    events: list[PendingEvent] = field(default_factory=list)  # oldest first
    claims: list[Claim] = field(default_factory=list)
    # Set aside by the relay: they cannot be opened or parsed, and will never go out.
    parked: list[PendingEvent] = field(default_factory=list)
    error: str | None = None

    @property
    def pending(self) -> int:
        return len(self.events)

    @property
    def oldest(self) -> PendingEvent | None:
        return self.events[0] if self.events else None

    @property
    def oldest_age_s(self) -> float | None:
        oldest = self.oldest
        return None if oldest is None else (self.checked_at - oldest.time).total_seconds()

    @property
    def stuck_claims(self) -> list[Claim]:
        return [c for c in self.claims if c.stuck]

    def to_json(self, show: int = 20) -> dict[str, Any]:
        age = self.oldest_age_s
        return {
            "service": self.service,
            "database": self.database,
            "exists": self.exists,
            "error": self.error,
            "pending": self.pending,
            "oldest_age_s": None if age is None else round(age, 1),
            "oldest": self.oldest.to_json(self.checked_at) if self.oldest else None,
            "collections": self.collections,
            "events": [e.to_json(self.checked_at) for e in self.events[:show]],
            "parked": [e.to_json(self.checked_at) for e in self.parked],
            "claims": {
                "active": sum(1 for c in self.claims if not c.expired),
                "expired": sum(1 for c in self.claims if c.expired),
                "stuck": [c.to_json() for c in self.stuck_claims],
            },
        }


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _event(name: str, aggregate_id: Any, entry: dict[str, Any]) -> PendingEvent:
    return PendingEvent(
        collection=name,
        aggregate_id=str(aggregate_id),
        id=str(entry.get("id")),
        type=str(entry.get("type")),
        time=_time(entry.get("time")),
        correlationid=entry.get("correlationid"),
        error=entry.get("error"),
    )


async def pending_events_and_claims(
    db: AsyncDatabase, collections: list[str], now: datetime
) -> tuple[list[PendingEvent], list[Claim], list[PendingEvent]]:
    """Pending events (oldest first), relay claims, and the events set aside."""
    events: list[PendingEvent] = []
    claims: list[Claim] = []
    parked: list[PendingEvent] = []
    for name in collections:
        projection = {"_id": 1, "outbox": 1, "relay_claim": 1, "outbox_parked": 1}
        async for doc in db[name].find(PENDING_OR_CLAIMED, projection):
            outbox = doc.get("outbox") or []
            events += [_event(name, doc["_id"], entry) for entry in outbox]
            parked += [_event(name, doc["_id"], e) for e in doc.get("outbox_parked") or []]
            claim = doc.get("relay_claim")
            if claim:
                until = _time(claim["until"])
                expired = until <= now
                key = f"{name}:{doc['_id']}"
                claims.append(Claim(key, claim.get("by"), until, expired, expired and bool(outbox)))
    events.sort(key=lambda e: e.time)
    return events, claims, parked


async def inspect_outbox(db: AsyncDatabase, service: str) -> OutboxReport:
    now = datetime.now(UTC)
    report = OutboxReport(service, db.name, exists=False, checked_at=now)
    try:
        collections = sorted(await db.list_collection_names())
        report.exists = bool(collections)
        found = await pending_events_and_claims(db, collections, now)
        report.events, report.claims, report.parked = found
        report.collections = sorted({e.collection for e in report.events})
    except Exception as exc:  # the database unreachable: say so, do not crash the report
        report.error = f"{type(exc).__name__}: {str(exc).split(' (')[0][:120]}"
    return report
