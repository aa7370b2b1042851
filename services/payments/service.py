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

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from payments.domain.cases import (
    ENDED_UNPAID,
    Case,
    CaseError,
    Claim,
    Emitted,
    FlagKind,
    Settled,
    default_expiry,
    flag_id,
)
from payments.domain.money import (
    compact_reference,
    instructions,
    payment_id_for,
    reference_code,
)
from payments.settings import PaymentsSettings
from payments.store import PaymentStores, Sealer
from payments.views import budget_out, case_out, flag_out
from shared import events as ev
from shared import metrics
from shared.aggregates import AggregateNotFound, Change
from shared.errors import Conflict, NotFound
from shared.logs import get_logger

log = get_logger(__name__)
SOURCE = "holdspace/payments"
# Fields of a case document the API never shows.


@dataclass(frozen=True)
class SettleResult:
    outcome: str  # confirmed | duplicate | flagged
    flag: str | None = None
    flag_id: str | None = None
    payment_id: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    # --- events ---------------------------------------------------------------------

    def _envelopes(
        self, case: Case, emitted: list[Emitted], now: datetime, causation_id: str | None
    ) -> list[ev.Envelope]:
        ids = {"registration_id": case.registration_id, "payment_id": case.payment_id}
        out: list[ev.Envelope] = []
        for e in emitted:
            data: ev.EventData
            match e.kind:
                case "requested":
                    assert case.amount_due and case.currency and case.reference
                    assert case.expires_at is not None
                    data = ev.PaymentRequested(
                        **ids,
                        amount=ev.Money(amount_minor=case.amount_due, currency=case.currency),
                        reference=case.reference,
                        expires_at=case.expires_at,
                        instructions=instructions(
                            amount_minor=case.amount_due,
                            currency=case.currency,
                            reference=case.reference,
                            expires_at=case.expires_at,
                            timezone=self.settings.payment_timezone,
                        ),
                    )
                case "confirmed":
                    assert case.confirmed is not None and case.reference and e.method
                    data = ev.PaymentConfirmed(
                        **ids,
                        amount=ev.Money(
                            amount_minor=case.confirmed["amount_minor"],
                            currency=case.confirmed["currency"],
                        ),
                        reference=case.reference,
                        method=e.method,
                        confirmed_at=case.confirmed["at"],
                    )
                case "waived":
                    data = ev.PaymentWaived(**ids)
                case "expired":
                    data = ev.PaymentExpired(**ids)
                case "failed":
                    data = ev.PaymentFailed(**ids, reason_code=e.reason_code or "failed")
                case "confirmation_pending":
                    assert e.confirmation_id and e.amount_minor is not None and e.currency
                    data = ev.PaymentConfirmationPending(
                        **ids,
                        confirmation_id=e.confirmation_id,
                        amount=ev.Money(amount_minor=e.amount_minor, currency=e.currency),
                    )
            out.append(
                ev.about_registration(data, case.registration_id, causation_id, source=SOURCE)
            )
        return out

    # --- the one way a case changes -------------------------------------------------------

    async def decide(
        self,
        registration_id: str,
        step: Callable[[Case, datetime], tuple[list[Emitted], Any]],
        *,
        event_id: str | None = None,
        causation_id: str | None = None,
    ) -> tuple[Any, bool]:
        """Apply ``step`` to the case in one write; returns (its result, duplicate event)."""

        def decision(doc: dict[str, Any], _state: Any) -> Change:
            now = utcnow()
            case = Case.from_doc(doc)
            before = case.to_doc()
            emitted, result = step(case, now)
            after = case.to_doc()
            if after == before and not emitted:
                return Change(result=result)  # nothing to write (an event id is still recorded)
            changed = {k: v for k, v in after.items() if before.get(k) != v}
            return Change(
                set=changed,
                events=self._envelopes(case, emitted, now, causation_id),
                result=result,
            )

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
                    price_minor=price.amount_minor if price else None,
                    currency=price.currency if price else None,
                    now=now,
                ),
                None,
            )

        await self.decide(data.registration_id, step, event_id=event_id, causation_id=event_id)

    async def consent_signed(self, data: ev.ConsentSigned, event_id: str) -> None:
        rid = data.registration_id
        await self.ensure_case(rid)
        reference = await self._reserve_reference(rid)
        price = data.price
        expires_at = default_expiry(utcnow(), data.hold_expires_at, self.settings.payment_ttl_s)

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return (
                case.consent_signed(
                    price_minor=price.amount_minor if price else None,
                    currency=price.currency if price else None,
                    refundable=data.refundable,
                    expires_at=expires_at,
                    reference=reference,
                    now=now,
                ),
                None,
            )

        await self.decide(rid, step, event_id=event_id, causation_id=event_id)

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

        await self.decide(rid, step, event_id=event_id, causation_id=event_id)
        await self._release_if_unpaid(rid)

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
            await self._flag(fid, FlagKind.unknown_reference, claim, None)
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
                await self._flag(settled.flag_id, settled.flag, claim, rid)
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

    async def _flag(
        self, fid: str, kind: FlagKind | str, claim: Claim, registration_id: str | None
    ) -> None:
        """Record a flag for coordinators once (the id is derived from the claim)."""
        payment_id = payment_id_for(registration_id) if registration_id else None
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
                },
                events=[flagged],  # coordinators hear of it (notifications)
            )
        except DuplicateKeyError:
            return
        metrics.PAYMENT_MISMATCHES.labels(self.settings.service_name, str(kind)).inc()
        log.warning("payment flagged for a coordinator", kind=str(kind), method=claim.method)

    async def mark_manual(
        self,
        *,
        reference: str,
        amount_minor: int,
        currency: str,
        evidence: str | None,
        by: str,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        if idempotency_key:
            digest = hashlib.sha256(f"{by}\n{idempotency_key}".encode()).hexdigest()
            confirmation_id = str(uuid.UUID(digest[:32]))
        else:
            confirmation_id = str(uuid.uuid4())
        claim = Claim("manual", f"manual:{confirmation_id}", reference, amount_minor, currency)
        rid = await self.stores.resolve(f"ref:{compact_reference(reference)}")
        if rid is None:
            fid = flag_id(claim.key, FlagKind.unknown_reference)
            await self._flag(fid, FlagKind.unknown_reference, claim, None)
            raise NotFound(
                "reference", "no payment request has this reference; flagged", flag_id=fid
            )
        holder = await self.stores.link(f"mc:{confirmation_id}", rid)
        if holder != rid:
            raise Conflict("Idempotency-Key", "this Idempotency-Key was used for another payment")
        sealed = self.sealer.seal(evidence, "evidence", confirmation_id) if evidence else None
        before_marks = False

        def step(case: Case, now: datetime) -> tuple[list[Emitted], tuple[Any, str]]:
            nonlocal before_marks
            before_marks = any(m["confirmation_id"] == confirmation_id for m in case.manual)
            flagged = case.mark_manual(
                confirmation_id=confirmation_id,
                by=by,
                reference=reference,
                amount_minor=amount_minor,
                currency=currency,
                evidence=sealed,
                now=now,
            )
            pending = Emitted(
                "confirmation_pending",
                confirmation_id=confirmation_id,
                amount_minor=amount_minor,
                currency=currency,
            )
            newly = flagged is None and not before_marks
            return ([pending] if newly else []), (flagged, case.payment_id)

        flagged, payment_id = (await self.decide(rid, step))[0]
        if flagged is not None:
            await self._flag(flagged.flag_id, flagged.flag, claim, rid)
            raise Conflict(
                {"amount_mismatch": "amount_minor", "currency_mismatch": "currency"}.get(
                    str(flagged.flag), "reference"
                ),
                f"the transfer does not match the request ({flagged.flag}); flagged",
                flag=str(flagged.flag),
                flag_id=flagged.flag_id,
            )
        case = Case.from_doc(await self.stores.case(rid))
        mark = case.manual_confirmation(confirmation_id)
        return {
            "confirmation_id": confirmation_id,
            "payment_id": payment_id,
            "status": mark["status"],
        }

    async def decide_manual(
        self, confirmation_id: str, *, approve: bool, by: str
    ) -> dict[str, Any]:
        rid = await self.stores.resolve(f"mc:{confirmation_id}")
        if rid is None:
            raise NotFound("confirmation_id", "no such manual confirmation")

        def step(case: Case, now: datetime) -> tuple[list[Emitted], Settled | None]:
            if not approve:
                case.reject_manual(confirmation_id=confirmation_id, by=by, now=now)
                return [], None
            settled = case.approve_manual(confirmation_id=confirmation_id, by=by, now=now)
            emitted = [Emitted("confirmed", method="manual")]
            return (emitted if settled.outcome == "confirmed" else []), settled

        settled, _ = await self.decide(rid, step)
        doc = await self.stores.case(rid)
        if settled is not None and settled.flag is not None:
            mark = Case.from_doc(doc).manual_confirmation(confirmation_id)
            claim = Claim(
                "manual",
                f"manual:{confirmation_id}",
                mark["reference"],
                mark["amount_minor"],
                mark["currency"],
            )
            await self._flag(settled.flag_id, settled.flag, claim, rid)
        mark = Case.from_doc(doc).manual_confirmation(confirmation_id)
        return {
            "confirmation_id": confirmation_id,
            "payment_id": doc["payment_id"],
            "status": mark["status"],
            "payment_status": doc["status"],
            "flag": str(settled.flag) if settled and settled.flag else None,
        }

    # --- scholarships -----------------------------------------------------------------------

    async def set_budget(self, cohort_id: str, amount_minor: int, currency: str) -> dict:
        doc = {"_id": cohort_id, "amount_minor": amount_minor, "currency": currency, "grants": {}}
        try:
            await self.stores.budgets.create(doc)
        except DuplicateKeyError:

            def decide(budget: dict[str, Any], _state: Any) -> Change:
                granted = sum(budget.get("grants", {}).values())
                if budget["grants"] and currency != budget["currency"]:
                    raise Conflict("currency", "grants were made in another currency")
                if amount_minor < granted:
                    raise Conflict("amount_minor", f"{granted} is already granted from it")
                return Change(set={"amount_minor": amount_minor, "currency": currency})

            await self.stores.budgets.mutate(cohort_id, decide)
        return budget_out(await self.stores.budget(cohort_id))

    async def grant(self, registration_id: str, amount_due_minor: int, by: str) -> dict[str, Any]:
        case = Case.from_doc(await self.stores.case(registration_id))
        try:
            reduction = case.check_grantable(amount_due_minor)
        except CaseError as exc:
            raise Conflict("amount_due_minor", str(exc)) from exc
        if case.cohort_id is None:
            raise Conflict(None, "the cohort of this registration is not known")
        currency = case.currency

        def reserve(budget: dict[str, Any], _state: Any) -> Change:
            grants = dict(budget.get("grants", {}))
            if budget["currency"] != currency:
                raise Conflict("currency", "the budget is in another currency")
            grants[registration_id] = reduction
            if sum(grants.values()) > budget["amount_minor"]:
                raise Conflict("amount_due_minor", "the cohort's scholarship budget is exhausted")
            return Change(set={"grants": grants})

        try:
            await self.stores.budgets.mutate(case.cohort_id, reserve)
        except AggregateNotFound:
            raise Conflict("cohort_id", "set a scholarship budget for this cohort first") from None

        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.grant(amount_due_minor=amount_due_minor, by=by, now=now), None

        try:
            await self.decide(registration_id, step)
        except Conflict:
            await self._release(case.cohort_id, registration_id)
            raise
        return case_out(await self.stores.case(registration_id), self.sealer)

    async def decline(self, registration_id: str, by: str) -> dict[str, Any]:
        def step(case: Case, now: datetime) -> tuple[list[Emitted], None]:
            return case.decline(by=by, now=now), None

        await self.decide(registration_id, step)
        return case_out(await self.stores.case(registration_id), self.sealer)

    async def _release(self, cohort_id: str, registration_id: str) -> None:
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
        if case.status in ENDED_UNPAID and case.scholarship_status == "granted" and case.cohort_id:
            await self._release(case.cohort_id, registration_id)

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
