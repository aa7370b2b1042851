"""Which program a payment belongs to, and whether a coordinator may see it.

A case learns its program from the events that open it (registration.submitted with a
scholarship request, consent.signed); a flag, from the case it is about. A coordinator
scoped to other programs is answered 404, exactly as for a payment that does not
exist, so ids of other programs cannot be probed. A case from before cases knew their
program (None) answers only to leads.
"""

from __future__ import annotations

from typing import Any

from payments.domain.money import compact_reference
from payments.store import PaymentStores
from shared.errors import Invalid
from shared.tokens import Principal

NO_PAYMENT = "no payment for this registration"


class PaymentAccess:
    def __init__(self, stores: PaymentStores) -> None:
        self.stores = stores

    async def registration(
        self, who: Principal, registration_id: str | None, field: str, message: str
    ) -> None:
        if who.programs is None or registration_id is None:
            return  # a lead; or nothing to check: the route answers its own 404
        case = await self.stores.cases.get(registration_id)
        if case is not None:
            who.require(case.get("program_id"), field, message)

    async def payment(self, who: Principal, payment_id: str) -> None:
        rid = await self.stores.resolve(f"pay:{payment_id}")
        await self.registration(who, rid, "payment_id", "no such payment")

    async def confirmation(self, who: Principal, confirmation_id: str) -> None:
        rid = await self.stores.resolve(f"mc:{confirmation_id}")
        await self.registration(who, rid, "confirmation_id", "no such manual confirmation")

    async def reference(self, who: Principal, reference: str) -> None:
        rid = await self.stores.resolve(f"ref:{compact_reference(reference)}")
        await self.registration(who, rid, "reference", "unknown reference")

    async def flag(self, who: Principal, flag_id: str) -> None:
        if who.programs is None:
            return
        flag = await self.stores.flags.get(flag_id)
        if flag is not None:
            who.require(flag.get("program_id"), "flag_id", "no such flag")

    async def budget(
        self, who: Principal, cohort_id: str, program_id: str | None, *, setting: bool
    ) -> None:
        """A budget that names another program is not the coordinator's to read or set;
        a scoped coordinator setting one names its program, one of theirs."""
        if who.programs is None:
            return
        if setting and program_id is None:
            raise Invalid("program_id", "give the cohort's program")
        if program_id is not None:
            who.require(program_id, "program_id", "no such program")
        existing = await self.stores.budgets.get(cohort_id)
        if existing is not None:
            message = "no scholarship budget is set for this cohort"
            who.require(existing.get("program_id"), "cohort_id", message)

    @staticmethod
    def query(who: Principal) -> dict[str, Any]:
        """The filter a listing adds for this coordinator (nothing for a lead)."""
        programs = who.program_ids()
        return {} if programs is None else {"program_id": {"$in": programs}}
