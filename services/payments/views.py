"""What coordinators read of payments: payments, refunds due, flags, manual
confirmations waiting for a second coordinator, scholarship requests and budgets.

Reads only: nothing here writes, and the routes read through this module, never
through a collection. Sealed notes (transfer evidence, flag notes) are opened here.
"""

from __future__ import annotations

from typing import Any

from payments.store import PaymentStores, Sealer
from shared.errors import NotFound
from shared.export import staff_unnamed

# The aggregate's bookkeeping: never shown.
INTERNAL = ("outbox", "inbox", "has_outbox", "version")
Scope = dict[str, Any]  # a listing's filter for a coordinator's programs (access.py)


class PaymentViews:
    def __init__(self, stores: PaymentStores, sealer: Sealer) -> None:
        self.stores = stores
        self.sealer = sealer

    async def payments(
        self, status: str | None, limit: int, scope: Scope | None = None
    ) -> list[dict[str, Any]]:
        return await self._cases({**({"status": status} if status else {}), **(scope or {})}, limit)

    async def payment(self, payment_id: str) -> dict[str, Any]:
        return case_out(await self.stores.case_by_payment(payment_id), self.sealer)

    async def case(self, registration_id: str) -> dict[str, Any]:
        return case_out(await self.stores.case(registration_id), self.sealer)

    async def for_applicant(self, registration_id: str) -> dict[str, Any]:
        """What the applicant's payment page shows: what to pay, the reference, by when;
        never how the amount was arrived at (a scholarship's reason, evidence notes)."""
        doc = await self.stores.case(registration_id)
        return {
            "registration_id": registration_id,
            "payment_id": doc["payment_id"],
            "status": doc["status"],
            "amount_due_minor": doc.get("amount_due"),
            "currency": doc.get("currency"),
            "reference": doc.get("reference"),
            "expires_at": doc.get("expires_at"),
            "said_paid_at": doc.get("said_paid_at"),
            "scholarship_status": doc.get("scholarship_status"),
            "refund_status": doc.get("refund_status"),
        }

    async def export(self, registration_id: str) -> dict[str, Any]:
        """Everything payments holds about the applicant's registration, for their data
        export: the case with its notes opened, and flags about their payments; who
        among the staff acted shows as "coordinator", never an account."""
        try:
            case = case_out(await self.stores.case(registration_id), self.sealer)
        except NotFound:
            case = None
        cursor = self.stores.flags.collection.find({"registration_id": registration_id})
        flags = [flag_out(d, self.sealer) async for d in cursor]
        return {"payment": staff_unnamed(case), "flags": staff_unnamed(flags)}

    async def refunds(self, status: str, scope: Scope | None = None) -> list[dict[str, Any]]:
        """Cases by what the refund policy decided: to be made, made, or none."""
        return await self._cases({"refund_status": status, **(scope or {})})

    async def awaiting_approval(self, scope: Scope | None = None) -> list[dict[str, Any]]:
        """Cases with a manual confirmation a second coordinator has to approve."""
        return await self._cases({"pending_manual": True, **(scope or {})})

    async def scholarships(self, status: str, scope: Scope | None = None) -> list[dict[str, Any]]:
        return await self._cases({"scholarship_status": status, **(scope or {})})

    async def budget(self, cohort_id: str) -> dict[str, Any]:
        return budget_out(await self.stores.budget(cohort_id))

    async def flags(self, status: str | None, scope: Scope | None = None) -> list[dict[str, Any]]:
        query = {**({"status": status} if status else {}), **(scope or {})}
        cursor = self.stores.flags.collection.find(query).sort("created_at", 1)
        return [flag_out(d, self.sealer) async for d in cursor]

    async def _cases(self, query: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        cursor = self.stores.cases.collection.find(query)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [case_out(d, self.sealer) async for d in cursor]


def case_out(doc: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """What a coordinator sees of a case (evidence notes opened)."""
    out = {k: v for k, v in doc.items() if k not in INTERNAL and k != "_id"}
    manual = []
    for m in doc.get("manual") or []:
        m = dict(m)
        if m.get("evidence"):
            m["evidence"] = sealer.open(m["evidence"], "evidence", m["confirmation_id"])
        if m.get("why"):
            m["why"] = sealer.open(m["why"], "why", m["confirmation_id"])
        manual.append(m)
    out["manual"] = manual
    scholarship = doc.get("scholarship")
    if scholarship and scholarship.get("why"):
        why = sealer.open(scholarship["why"], "why", doc["registration_id"])
        out["scholarship"] = {**scholarship, "why": why}
    return out


def flag_out(doc: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in INTERNAL and k != "_id"}
    out["flag_id"] = doc["_id"]
    if doc.get("note"):
        out["note"] = sealer.open(doc["note"], "flag_note", doc["_id"])
    return out


def budget_out(doc: dict[str, Any]) -> dict[str, Any]:
    granted = sum(doc.get("grants", {}).values())
    return {
        "cohort_id": doc["_id"],
        "amount_minor": doc["amount_minor"],
        "currency": doc["currency"],
        "granted_minor": granted,
        "remaining_minor": doc["amount_minor"] - granted,
        "grants": len(doc.get("grants", {})),
        "program_id": doc.get("program_id"),
    }
