"""Erasure of a person's data across the services (DESIGN.md; PIPL art. 47, GDPR art. 17).

Registration decides it and publishes ``registration.erasure_requested``; every other
service erases or anonymises what it holds about the registration, then reports with
an event of its own family (consent.erased, payment.erased, notification.erased,
progress.erased). The
report is written as a small record of its own (the registration id and a time,
nothing personal) in the service's ``erasures`` collection, with the event in its
outbox: a redelivered request erases again (each step is idempotent) and reports once.
"""

from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from shared import events as ev
from shared.aggregates import AggregateStore, StoreFactory
from shared.logs import get_logger

log = get_logger(__name__)

COLLECTION = "erasures"
# The services that hold data about a registration besides registration itself.
ERASING_SERVICES = ("consent", "payments", "notifications", "progress")
REPORTS: dict[str, type[ev.ErasureCompleted]] = {
    "consent": ev.ConsentErased,
    "payments": ev.PaymentErased,
    "notifications": ev.NotificationErased,
    "progress": ev.ProgressErased,
}


def erasures_store(store: StoreFactory, source: str) -> AggregateStore:
    return store(COLLECTION, enveloper=ev.registration_enveloper(source))


async def report_erased(
    erasures: AggregateStore, registration_id: str, service: str, now: datetime
) -> bool:
    """Record that ``service`` erased the registration and tell registration; False
    when that was reported before."""
    done = REPORTS[service](registration_id=registration_id, completed_at=now)
    try:
        await erasures.create({"_id": registration_id, "erased_at": now}, emit=[done])
    except DuplicateKeyError:
        return False
    log.info("erased a registration's data", registration_id=registration_id)
    return True
