"""Money confirmed by hand, maker-checker: one coordinator marks a transfer as
received, a second approves it, and only then does it count.

The mark is idempotent per (coordinator, Idempotency-Key); a reference nobody issued,
or an amount or currency that does not match, is flagged for coordinators and
refused. The evidence note is sealed at rest.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from payments.domain.cases import Case
from payments.domain.claims import Claim, Emitted, FlagKind, Settled, flag_id
from payments.domain.money import compact_reference
from payments.service import PaymentService
from shared.errors import Conflict, NotFound


class ManualConfirmations:
    def __init__(self, cases: PaymentService) -> None:
        self.cases = cases  # the one way a case changes (decide), and flags
        self.stores = cases.stores
        self.sealer = cases.sealer

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
        confirmation_id = _confirmation_id(by, idempotency_key)
        claim = Claim("manual", f"manual:{confirmation_id}", reference, amount_minor, currency)
        rid = await self._registration_of(claim)
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

        flagged, payment_id = (await self.cases.decide(rid, step))[0]
        if flagged is not None:
            await self.cases.flag(flagged.flag_id, flagged.flag, claim, rid)
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

    async def _registration_of(self, claim: Claim) -> str:
        """Whose payment request the reference is; an unknown one is flagged and refused."""
        rid = await self.stores.resolve(f"ref:{compact_reference(claim.reference)}")
        if rid is None:
            fid = flag_id(claim.key, FlagKind.unknown_reference)
            await self.cases.flag(fid, FlagKind.unknown_reference, claim, None)
            raise NotFound(
                "reference", "no payment request has this reference; flagged", flag_id=fid
            )
        return rid

    async def decide_manual(
        self, confirmation_id: str, *, approve: bool, by: str, reason: str | None = None
    ) -> dict[str, Any]:
        rid = await self.stores.resolve(f"mc:{confirmation_id}")
        if rid is None:
            raise NotFound("confirmation_id", "no such manual confirmation")
        why = self.sealer.seal(reason, "why", confirmation_id) if reason else None
        mark = {"confirmation_id": confirmation_id, "by": by, "why": why}

        def step(case: Case, now: datetime) -> tuple[list[Emitted], Settled | None]:
            if not approve:
                case.reject_manual(**mark, now=now)
                return [], None
            settled = case.approve_manual(**mark, now=now)
            emitted = [Emitted("confirmed", method="manual")]
            return (emitted if settled.outcome == "confirmed" else []), settled

        settled, _ = await self.cases.decide(rid, step)
        doc = await self.stores.case(rid)
        if settled is not None and settled.flag is not None:
            claim = Case.from_doc(doc).manual_claim(confirmation_id)
            await self.cases.flag(settled.flag_id, settled.flag, claim, rid)
        mark = Case.from_doc(doc).manual_confirmation(confirmation_id)
        return {
            "confirmation_id": confirmation_id,
            "payment_id": doc["payment_id"],
            "status": mark["status"],
            "payment_status": doc["status"],
            "flag": str(settled.flag) if settled and settled.flag else None,
        }


def _confirmation_id(by: str, idempotency_key: str | None) -> str:
    """Stable per (coordinator, Idempotency-Key), so a retried mark is the same mark."""
    if not idempotency_key:
        return str(uuid.uuid4())
    digest = hashlib.sha256(f"{by}\n{idempotency_key}".encode()).hexdigest()
    return str(uuid.UUID(digest[:32]))
