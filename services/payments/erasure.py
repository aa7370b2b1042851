"""What payments erases for ``registration.erasure_requested``: coordinators' free-text
notes about the registration's payment (evidence of a transfer, why a decision was
taken, how a flag was resolved), the only personal data payments holds. The amounts, references and
statuses stay: they are the organisation's accounts, and name nobody."""

from __future__ import annotations

from datetime import datetime

from payments.domain.cases import Case
from payments.service import PaymentService
from shared.aggregates import AggregateStore
from shared.erasure import report_erased
from shared.errors import NotFound


async def erase(
    service: PaymentService, erasures: AggregateStore, registration_id: str, now: datetime
) -> None:
    def without_notes(case: Case, _now: datetime) -> tuple[list, None]:
        for mark in case.manual:
            mark["evidence"] = None
            mark["why"] = None
        if case.scholarship:
            case.scholarship = {**case.scholarship, "why": None}
        return [], None

    try:
        await service.decide(registration_id, without_notes)
    except NotFound:
        pass  # payments never heard of it: nothing to erase here
    await service.stores.flags.collection.update_many(
        {"registration_id": registration_id}, {"$set": {"note": None}}
    )
    await report_erased(erasures, registration_id, "payments", now)
