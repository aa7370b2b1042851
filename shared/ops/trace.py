"""``ops registration show ID``: one registration followed across the services.

The registration id is the correlation id of every event about it, and the ``_id``
(or a ``registration_id`` field) of each service's per-registration documents
(coordinated with each service's store module):

- registration: ``registrations`` (the application: only ids and times are shown) and
  its entry on the cohort's seat ledger ``cohorts.entries.<id>`` (status, since,
  expiry, waitlist position);
- consent: ``requests`` (``_id`` = registration id);
- payments: ``cases`` (``_id`` = registration id);
- notifications: ``recipients`` (``_id``), ``deliveries`` and ``delivery_log``
  (``registration_id``);
- progress: ``spaces`` (``_id``) and ``feedback`` (``registration_id``).

Besides, every service's outboxes are searched for events still unpublished with this
correlation id, and every dead-letter queue for dead letters about it. Documents are
shown through an allow-list (shared/ops/redact.py: states, ids, times, counts,
codes): never a sealed field, an address or free text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient

from shared.ops.deadletters import open_dlq
from shared.ops.outbox import pending_events_and_claims
from shared.ops.redact import safe_fields
from shared.ops.settings import OpsSettings
from shared.topology import SERVICES

# service -> [(collection, field holding the registration id)]
PER_REGISTRATION: dict[str, list[tuple[str, str]]] = {
    "registration": [],  # read specially: the application and the cohort's ledger
    "consent": [("requests", "_id")],
    "payments": [("cases", "_id")],
    "notifications": [
        ("recipients", "_id"),
        ("deliveries", "registration_id"),
        ("delivery_log", "registration_id"),
    ],
    "progress": [("spaces", "_id"), ("feedback", "registration_id")],
}
LEDGER_ENTRY_FIELDS = ("status", "since", "expires_at", "price_minor", "currency")


@dataclass
class ServiceTrace:
    service: str
    database: str
    documents: list[dict[str, Any]] = field(default_factory=list)  # {"collection", "fields"}
    pending_events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "database": self.database,
            "documents": self.documents,
            "pending_events": self.pending_events,
            "error": self.error,
        }


@dataclass
class RegistrationTrace:
    registration_id: str
    checked_at: datetime
    found: bool
    status: str | None
    services: list[ServiceTrace]
    dead_letters: list[dict[str, Any]]
    dead_letters_note: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "registration_id": self.registration_id,
            "checked_at": self.checked_at.isoformat(),
            "found": self.found,
            "status": self.status,
            "services": [s.to_json() for s in self.services],
            "dead_letters": self.dead_letters,
            "dead_letters_note": self.dead_letters_note,
        }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def _registration_documents(db, registration_id: str) -> tuple[list[dict], str | None]:
    docs: list[dict[str, Any]] = []
    application = await db["registrations"].find_one(
        {"_id": registration_id}, {"_id": 1, "cohort_id": 1, "program_id": 1, "created_at": 1}
    )
    if application is None:
        return docs, None
    docs.append({"collection": "registrations", "fields": safe_fields(application)})
    cohort_id = application["cohort_id"]
    cohort = await db["cohorts"].find_one(
        {"_id": cohort_id}, {f"entries.{registration_id}": 1, "waitlist": 1}
    )
    entry = ((cohort or {}).get("entries") or {}).get(registration_id)
    if entry is None:
        docs.append(
            {
                "collection": "cohorts",
                "fields": {"_id": cohort_id, "ledger": "not on the cohort's ledger (yet)"},
            }
        )
        return docs, "submitted"
    ledger = {k: _iso(entry.get(k)) for k in LEDGER_ENTRY_FIELDS}
    waitlist = (cohort or {}).get("waitlist") or []
    if registration_id in waitlist:
        ledger["waitlist_position"] = waitlist.index(registration_id) + 1
    docs.append({"collection": "cohorts", "fields": {"_id": cohort_id, "ledger_entry": ledger}})
    return docs, entry.get("status")


async def trace_service(
    client: AsyncMongoClient, settings: OpsSettings, service: str, registration_id: str
) -> tuple[ServiceTrace, str | None]:
    db = client[settings.database_name(service)]
    trace = ServiceTrace(service, db.name)
    status = None
    try:
        collections = set(await db.list_collection_names())
        if service == "registration" and "registrations" in collections:
            trace.documents, status = await _registration_documents(db, registration_id)
        for collection, key in PER_REGISTRATION.get(service, []):
            if collection not in collections:
                continue
            async for doc in db[collection].find({key: registration_id}).limit(50):
                trace.documents.append({"collection": collection, "fields": safe_fields(doc)})
        now = datetime.now(UTC)
        events, _claims, _parked = await pending_events_and_claims(db, sorted(collections), now)
        trace.pending_events = [
            e.to_json(now) for e in events if e.correlationid == registration_id
        ]
    except Exception as exc:
        trace.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return trace, status


async def dead_letters_about(
    settings: OpsSettings, registration_id: str, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    found: list[dict[str, Any]] = []
    missing = []
    for service in SERVICES:
        t = settings.topology(service)
        try:
            async with open_dlq(settings.rabbitmq_url, t.dlq, t.queue, settings.ops_timeout_s) as q:
                for _, letter in await q.fetch(limit):
                    if letter.correlation_id == registration_id:
                        found.append({"queue": t.dlq, **letter.to_json()})
        except aio_pika.exceptions.ChannelClosed:
            missing.append(t.dlq)
        except Exception as exc:
            return found, f"broker not reachable ({type(exc).__name__}): dead letters not searched"
    note = f"queues not declared: {', '.join(missing)}" if missing else None
    return found, note


async def trace_registration(
    client: AsyncMongoClient,
    settings: OpsSettings,
    registration_id: str,
    *,
    search_dlq: bool = True,
    dlq_limit: int = 1000,
) -> RegistrationTrace:
    services = []
    status = None
    for service in SERVICES:
        trace, found_status = await trace_service(client, settings, service, registration_id)
        services.append(trace)
        status = status or found_status
    if search_dlq:
        letters, note = await dead_letters_about(settings, registration_id, dlq_limit)
    else:
        letters, note = [], "not searched (--no-dlq)"
    found = any(s.documents or s.pending_events for s in services) or bool(letters)
    return RegistrationTrace(
        registration_id, datetime.now(UTC), found, status, services, letters, note
    )
