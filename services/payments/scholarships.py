"""Scholarships: a cohort's budget, and coordinators granting or declining requests.

A grant reserves its reduction on the cohort's budget document first (refused when it
would overdraw), then changes the case, then confirms the reservation; when the case
refuses, the reservation is released, so a retry finishes the steps in order.

A process that dies between the steps leaves the reservation marked in ``reserving``
with its time, and the budget due for a check (``check_at``). The due work then
settles it against the case: kept when the case was granted, released otherwise, so
a crash never leaks budget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from payments.domain.cases import Case
from payments.domain.claims import CaseError, Emitted
from payments.service import PaymentService
from payments.views import budget_out, case_out
from shared import events as ev
from shared.aggregates import AggregateNotFound, Change
from shared.errors import Conflict
from shared.logs import get_logger

log = get_logger(__name__)

# How long a reservation may wait for its case before the due work settles it: far
# longer than a grant takes between its writes.
RESERVATION_GRACE = timedelta(seconds=60)


def _pending(reserving: dict[str, datetime]) -> dict[str, Any]:
    """The reservations still open, and when the budget is next due for a check."""
    check_at = min(reserving.values()) + RESERVATION_GRACE if reserving else None
    return {"reserving": reserving, "check_at": check_at}


def _granted(budget: dict[str, Any], rid: str, reduction: int, currency: str) -> dict[str, int]:
    """The budget's grants with ``rid``'s reduction in them; refused when it would overdraw."""
    if budget["currency"] != currency:
        raise Conflict("currency", "the budget is in another currency")
    grants = {**budget.get("grants", {}), rid: reduction}
    if sum(grants.values()) > budget["amount_minor"]:
        raise Conflict("amount_due_minor", "the cohort's scholarship budget is exhausted")
    return grants


class Scholarships:
    def __init__(self, cases: PaymentService) -> None:
        self.cases = cases  # the one way a case changes (decide), and flags
        self.stores = cases.stores
        self.sealer = cases.sealer

    async def set_budget(
        self, cohort_id: str, amount_minor: int, currency: str, program_id: str | None = None
    ) -> dict:
        doc = {
            "_id": cohort_id,
            "amount_minor": amount_minor,
            "currency": currency,
            "grants": {},
            "program_id": program_id,
        }
        try:
            await self.stores.budgets.create(doc)
        except DuplicateKeyError:

            def decide(budget: dict[str, Any], _state: Any) -> Change:
                granted = sum(budget.get("grants", {}).values())
                if budget["grants"] and currency != budget["currency"]:
                    raise Conflict("currency", "grants were made in another currency")
                if amount_minor < granted:
                    raise Conflict("amount_minor", f"{granted} is already granted from it")
                known = {"program_id": program_id} if program_id else {}
                return Change(set={"amount_minor": amount_minor, "currency": currency, **known})

            await self.stores.budgets.mutate(cohort_id, decide)
        return budget_out(await self.stores.budget(cohort_id))

    async def grant(
        self, registration_id: str, amount_due_minor: int, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        case = Case.from_doc(await self.stores.case(registration_id))
        try:
            reduction = case.check_grantable(amount_due_minor)
        except CaseError as exc:
            raise Conflict("amount_due_minor", str(exc)) from exc
        if case.cohort_id is None:
            raise Conflict(None, "the cohort of this registration is not known")
        currency = case.currency

        reserved_at = datetime.now(UTC)

        def reserve(budget: dict[str, Any], _state: Any) -> Change:
            grants = _granted(budget, registration_id, reduction, currency)
            reserving = {**budget.get("reserving", {}), registration_id: reserved_at}
            return Change(set={"grants": grants, **_pending(reserving)})

        try:
            await self.stores.budgets.mutate(case.cohort_id, reserve)
        except AggregateNotFound:
            raise Conflict("cohort_id", "set a scholarship budget for this cohort first") from None

        why = self.sealer.seal(reason, "why", registration_id) if reason else None

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.grant(amount_due_minor=amount_due_minor, by=by, now=now, why=why), None

        try:
            await self.cases.decide(registration_id, step)
        except Conflict:
            await self.cases.release(case.cohort_id, registration_id)
            raise
        await self._settle(case.cohort_id, registration_id, keep=True)
        return case_out(await self.stores.case(registration_id), self.sealer)

    # --- reservations a crash left half-done (due work) -----------------------------------

    async def reservations_due(self, now: datetime) -> list[str]:
        cursor = self.stores.budgets.collection.find({"check_at": {"$lte": now}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def check_reservations(self, cohort_id: str) -> None:
        """Settle each reservation older than the grace against its case."""
        budget = await self.stores.budgets.get(cohort_id)
        cutoff = datetime.now(UTC) - RESERVATION_GRACE
        for rid, at in (budget or {}).get("reserving", {}).items():
            if at > cutoff:
                continue  # a grant may still be on its way to the case
            doc = await self.stores.cases.get(rid)
            granted = doc is not None and Case.from_doc(doc).scholarship_status == "granted"
            await self._settle(cohort_id, rid, keep=granted, reserved_at=at)

    async def _settle(
        self, cohort_id: str, rid: str, *, keep: bool, reserved_at: datetime | None = None
    ) -> None:
        """The reservation is done: kept as a grant, or released (in one write)."""

        def settle(budget: dict[str, Any], _state: Any) -> Change | None:
            reserving = dict(budget.get("reserving", {}))
            at = reserving.pop(rid, None)
            if at is None or (reserved_at is not None and at != reserved_at):
                return None  # settled already, or reserved again since
            grants = dict(budget.get("grants", {}))
            if not keep:
                grants.pop(rid, None)
            return Change(set={"grants": grants, **_pending(reserving)})

        await self.stores.budgets.mutate(cohort_id, settle)

    async def decline(
        self, registration_id: str, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        why = self.sealer.seal(reason, "why", registration_id) if reason else None

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.decline(by=by, now=now, why=why), None

        await self.cases.decide(registration_id, step)
        return case_out(await self.stores.case(registration_id), self.sealer)

    # --- a registration moved to another cohort -------------------------------------------

    async def registration_moved(self, p: ev.RegistrationMoved, event_id: str) -> None:
        """The case follows the registration to its new cohort, and a grant moves to the
        new cohort's budget when that has room. When it has not (or has no budget), the
        grant stays counted on the former cohort's budget: it was promised to the person.

        Each step is idempotent and a redelivery runs them all again, so a crash between
        them is finished: taken on the new budget, given back on the old, then the case
        names the new one."""
        if await self.stores.cases.get(p.registration_id) is None:
            return  # nothing asked of payments yet; later events name the new cohort

        def follow(case: Case, _now: datetime) -> tuple[list[Emitted], None]:
            return case.moved(p.cohort_id), None

        await self.cases.decide(p.registration_id, follow, event_id=event_id)
        await self._carry_grant(p.registration_id)

    async def _carry_grant(self, rid: str) -> None:
        case = Case.from_doc(await self.stores.case(rid))
        held_by, cohort_id = case.grant_budget, case.cohort_id
        if held_by is None or cohort_id is None or held_by == cohort_id:
            return
        reduction = int(case.price_minor or 0) - int(case.scholarship["amount_due_minor"])

        def take(budget: dict[str, Any], _state: Any) -> Change | None:
            if rid in budget.get("grants", {}):
                return None  # taken before a crash
            return Change(set={"grants": _granted(budget, rid, reduction, case.currency)})

        try:
            await self.stores.budgets.mutate(cohort_id, take)
        except (AggregateNotFound, Conflict):
            log.warning("scholarship grant stays on the former cohort's budget", cohort_id=held_by)
            return
        await self.cases.release(held_by, rid)

        def carried(case: Case, _now: datetime) -> tuple[list[Emitted], None]:
            return case.grant_carried_by(cohort_id), None

        await self.cases.decide(rid, carried)
