"""Payments' use cases: what the API, the webhooks, the handlers and the due work call.

Every change of a payment is one decision on its case (domain/cases.py), written with
the events it causes in one write of the case document (shared/aggregates.py), so the
three ways money is confirmed cannot confirm twice: 20 copies of one notification at
once are 20 decisions queued on one document, the first confirms, the rest are
duplicates. Steps that span two documents are idempotent and ordered so a retry
finishes them: a reference or id is linked (a unique insert) before the case names it;
a scholarship's budget is reserved before the grant and released if the grant fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from payments.domain.cases import ENDED_UNPAID, Case, default_expiry
from payments.domain.claims import Claim, Emitted, FlagKind, Settled, flag_id
from payments.domain.events import event_payloads
from payments.domain.money import (
    compact_reference,
    payment_id_for,
    reference_code,
)
from payments.settings import PaymentsSettings
from payments.store import SOURCE, PaymentStores, Sealer
from payments.views import case_out, flag_out
from shared import events as ev
from shared import metrics
from shared.aggregates import AggregateNotFound, Change
from shared.errors import NotFound
from shared.events import utcnow
from shared.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class SettleResult:
    outcome: str  # confirmed | duplicate | flagged
    flag: str | None = None
    flag_id: str | None = None
    payment_id: str | None = None


class PaymentService:
    def __init__(
        self,
        stores: PaymentStores,
        sealer: Sealer,
        settings: PaymentsSettings,
        *,
        reference_key: bytes,
    ) -> None:
        self.stores = stores
        self.sealer = sealer
        self.settings = settings
        self.reference_key = reference_key

    # --- the one way a case changes -------------------------------------------------------

    async def decide(
        self,
        registration_id: str,
        step: Callable[[Case, datetime], tuple[list[Emitted], Any]],
        *,
        event_id: str | None = None,
    ) -> tuple[Any, bool]:
        """Apply ``step`` to the case in one write; returns (its result, duplicate event).

        The store parses the case and writes back what ``step`` changed in it (CaseCodec).
        """

        def decision(_doc: dict[str, Any], case: Case) -> Change:
            emitted, result = step(case, utcnow())
            timezone = self.settings.payment_timezone
            return Change(emit=event_payloads(case, emitted, timezone=timezone), result=result)

        try:
            outcome = await self.stores.cases.mutate(registration_id, decision, event_id=event_id)
        except AggregateNotFound:
            raise NotFound("registration_id", "no payment for this registration") from None
        return outcome.result, outcome.duplicate

    async def ensure_case(self, registration_id: str) -> None:
        """Create the case of a registration if it does not exist yet (idempotent)."""
        if await self.stores.cases.get(registration_id) is not None:
            return
        payment_id = payment_id_for(registration_id)
        await self.stores.link(f"pay:{payment_id}", registration_id)
        case = Case(registration_id=registration_id, payment_id=payment_id)
        try:
            await self.stores.cases.create({"_id": registration_id, **case.to_doc()})
        except DuplicateKeyError:
            pass  # created by a concurrent event

    # --- what other services tell us ------------------------------------------------------

    async def scholarship_requested(self, data: ev.RegistrationSubmitted, event_id: str) -> None:
        if not data.scholarship_requested:
            return  # nothing for payments until consent is signed
        await self.ensure_case(data.registration_id)
        price = data.price

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return (
                case.scholarship_requested(
                    cohort_id=data.cohort_id,
                    program_id=data.program_id,
                    price_minor=price.amount_minor if price else None,
                    currency=price.currency if price else None,
                    now=now,
                ),
                None,
            )

        await self.decide(data.registration_id, step, event_id=event_id)

    async def consent_signed(self, data: ev.ConsentSigned, event_id: str) -> None:
        rid = data.registration_id
        await self.ensure_case(rid)
        reference = await self._reserve_reference(rid)
        price = data.price
        expires_at = default_expiry(utcnow(), data.hold_expires_at, self.settings.payment_ttl_s)

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return (
                case.consent_signed(
                    program_id=data.program_id,
                    price_minor=price.amount_minor if price else None,
                    currency=price.currency if price else None,
                    refundable=data.refundable,
                    expires_at=expires_at,
                    reference=reference,
                    now=now,
                ),
                None,
            )

        await self.decide(rid, step, event_id=event_id)

    async def applicant_says_paid(self, registration_id: str) -> bool:
        """The applicant says they transferred the money: shown to coordinators, who
        confirm it two by two. True the first time it is said."""

        def step(case: Case, now: datetime) -> tuple[list[Emitted], bool]:
            return [], case.applicant_says_paid(now)

        first, _ = await self.decide(registration_id, step)
        return first

    async def registration_ended(
        self, data: ev.RegistrationWithdrawn | ev.RegistrationExpired, event_id: str
    ) -> None:
        rid = data.registration_id
        # A case is kept even when nothing was asked yet, so a consent.signed that
        # arrives after the withdrawal finds it closed and asks for nothing.
        await self.ensure_case(rid)
        withdrawn = isinstance(data, ev.RegistrationWithdrawn)
        refundable = data.refundable if isinstance(data, ev.RegistrationWithdrawn) else False

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            if withdrawn:
                return case.withdrawn(refundable=refundable, now=now), None
            return case.registration_expired(now), None

        await self.decide(rid, step, event_id=event_id)
        await self._release_if_unpaid(rid)

    async def paid_after_close(self, data: ev.RegistrationPaidAfterClose, event_id: str) -> None:
        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.paid_after_close(now), None

        await self.decide(data.registration_id, step, event_id=event_id)

    async def _reserve_reference(self, registration_id: str) -> str:
        doc = await self.stores.cases.get(registration_id)
        if doc and doc.get("reference"):
            return doc["reference"]
        for attempt in range(8):
            code = reference_code(self.reference_key, registration_id, attempt)
            holder = await self.stores.link(f"ref:{compact_reference(code)}", registration_id)
            if holder == registration_id:
                return code
        raise RuntimeError("no free reference code after 8 attempts")

    # --- money arriving: providers, the generic webhook, manual ---------------------------

    async def note_ignored(self, notification: dict[str, Any]) -> None:
        """A verified notification that moves no money (a closed trade, a refund notice):
        kept once for the audit trail, changes nothing."""
        await self.stores.log_notification({**notification, "outcome": "ignored"})

    async def settle(self, claim: Claim, notification: dict[str, Any]) -> SettleResult:
        """One claim that money arrived, from any provider: confirm, duplicate or flag."""
        rid = await self.stores.resolve(f"ref:{compact_reference(claim.reference)}")
        if rid is None:
            fid = flag_id(claim.key, FlagKind.unknown_reference)
            await self.flag(fid, FlagKind.unknown_reference, claim, None)
            result = SettleResult("flagged", str(FlagKind.unknown_reference), fid)
        else:

            def step(case: Case, now: datetime) -> tuple[list[Emitted], tuple[Settled, str]]:
                settled = case.settle(claim, now)
                emitted = [Emitted("confirmed", method=claim.method)]
                return (emitted if settled.outcome == "confirmed" else []), (
                    settled,
                    case.payment_id,
                )

            (settled, payment_id), _ = await self.decide(rid, step)
            if settled.flag is not None and settled.flag_id is not None:
                await self.flag(settled.flag_id, settled.flag, claim, rid)
            result = SettleResult(
                settled.outcome,
                str(settled.flag) if settled.flag else None,
                settled.flag_id,
                payment_id,
            )
        await self.stores.log_notification(
            {
                **notification,
                "claim_key": claim.key,
                "reference": claim.reference[:64],
                "amount_minor": claim.amount_minor,
                "currency": claim.currency[:8],
                "outcome": result.outcome,
                "flag": result.flag,
                "received_at": utcnow(),
            }
        )
        log.info(
            "payment notification",
            method=claim.method,
            outcome=result.outcome,
            flag=result.flag,
            payment_id=result.payment_id,
        )
        return result

    async def flag(
        self, fid: str, kind: FlagKind | str, claim: Claim, registration_id: str | None
    ) -> None:
        """Record a flag for coordinators once (the id is derived from the claim)."""
        payment_id = payment_id_for(registration_id) if registration_id else None
        case = await self.stores.cases.get(registration_id) if registration_id else None
        flagged = ev.make_envelope(
            ev.PaymentFlagged(
                flag_id=fid,
                reason_code=str(kind),
                method=claim.method,
                registration_id=registration_id,
                payment_id=payment_id,
            ),
            source=SOURCE,
            correlation_id=registration_id or fid,
            subject=registration_id,
        )
        try:
            await self.stores.flags.create(
                {
                    "_id": fid,
                    "kind": str(kind),
                    "status": "open",
                    "method": claim.method,
                    "claim_key": claim.key[:200],
                    "reference": claim.reference[:64],
                    "amount_minor": claim.amount_minor,
                    "currency": claim.currency[:8],
                    "registration_id": registration_id,
                    "payment_id": payment_id,
                    # Its case's coordinators see it; with no case, only leads.
                    "program_id": case.get("program_id") if case else None,
                },
                events=[flagged],  # coordinators hear of it (notifications)
            )
        except DuplicateKeyError:
            return
        metrics.PAYMENT_MISMATCHES.labels(self.settings.service_name, str(kind)).inc()
        log.warning("payment flagged for a coordinator", kind=str(kind), method=claim.method)

    # --- scholarships -----------------------------------------------------------------------

    async def release(self, cohort_id: str, registration_id: str) -> None:
        def release(budget: dict[str, Any], _state: Any) -> Change | None:
            grants = dict(budget.get("grants", {}))
            if grants.pop(registration_id, None) is None:
                return None
            return Change(set={"grants": grants})

        try:
            await self.stores.budgets.mutate(cohort_id, release)
        except AggregateNotFound:
            pass

    async def _release_if_unpaid(self, registration_id: str) -> None:
        """A granted reduction nobody used goes back to the cohort's budget (idempotent)."""
        doc = await self.stores.cases.get(registration_id)
        if doc is None:
            return
        case = Case.from_doc(doc)
        if case.status in ENDED_UNPAID and case.grant_budget:
            # Both, should a move have been cut short while carrying the grant over.
            for cohort_id in {case.grant_budget, case.cohort_id} - {None}:
                await self.release(cohort_id, registration_id)

    # --- coordinators' other decisions ------------------------------------------------------

    async def fail(self, payment_id: str, reason_code: str, by: str) -> dict[str, Any]:
        doc = await self.stores.case_by_payment(payment_id)

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.fail(reason_code=reason_code, by=by, now=now), None

        await self.decide(doc["_id"], step)
        await self._release_if_unpaid(doc["_id"])
        return case_out(await self.stores.case(doc["_id"]), self.sealer)

    async def refund_made(self, payment_id: str, by: str) -> dict[str, Any]:
        doc = await self.stores.case_by_payment(payment_id)

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            case.refund_made(by=by, now=now)
            return [], None

        await self.decide(doc["_id"], step)
        return case_out(await self.stores.case(doc["_id"]), self.sealer)

    async def resolve_flag(self, flag: str, note: str | None, by: str) -> dict[str, Any]:
        sealed = self.sealer.seal(note, "flag_note", flag) if note else None

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc["status"] == "resolved":
                return None
            return Change(
                set={
                    "status": "resolved",
                    "resolved_by": by,
                    "resolved_at": utcnow(),
                    "note": sealed,
                }
            )

        try:
            outcome = await self.stores.flags.mutate(flag, decide)
        except AggregateNotFound:
            raise NotFound("flag_id", "no such flag") from None
        return flag_out(outcome.doc, self.sealer)

    # --- due work -------------------------------------------------------------------------

    async def requests_due(self, now: datetime) -> list[str]:
        cursor = self.stores.cases.collection.find(
            {"status": "requested", "expires_at": {"$lte": now}}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor]

    async def expire_due(self, registration_id: str) -> None:
        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.expire_due(now), None

        await self.decide(registration_id, step)
        await self._release_if_unpaid(registration_id)
