"""Maker-checker on a payment case: a coordinator marks a transfer as seen, a second
one approves it (only then does it settle the request) or rejects it. Pure; mixed
into ``Case`` (domain/cases.py), whose fields and ``settle`` it uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from payments.domain.claims import CaseError, Claim, FlagKind, SelfApproval, Settled, flag_id

if TYPE_CHECKING:
    from payments.domain.cases import Case


class ManualConfirmation:
    """The manual confirmations of one case (``Case.manual``), oldest first."""

    def mark_manual(
        self: Case,
        *,
        confirmation_id: str,
        by: str,
        reference: str,
        amount_minor: int,
        currency: str,
        evidence: str | None,
        now: datetime,
    ) -> Settled | None:
        """A coordinator saw a transfer. It counts only once another coordinator approves.

        Returns the flag when the transfer does not match the request (nothing pending
        is created then), None when it waits for approval.
        """
        if any(m["confirmation_id"] == confirmation_id for m in self.manual):
            return None  # the same mark again
        seen = self.claim(f"manual:{confirmation_id}")
        if seen is not None and seen.get("flag"):
            return Settled("flagged", FlagKind(seen["flag"]), seen["flag_id"])  # flagged before
        if self.pending_manual:
            raise CaseError("a manual confirmation is already waiting for approval")
        claim = Claim("manual", f"manual:{confirmation_id}", reference, amount_minor, currency)
        kind = self._mismatch(claim, now)
        if kind is not None:
            self.claims.append(
                {
                    "key": claim.key,
                    "method": "manual",
                    "amount_minor": amount_minor,
                    "currency": currency,
                    "at": now,
                    "flag": str(kind),
                    "flag_id": flag_id(claim.key, kind),
                }
            )
            return Settled("flagged", kind, flag_id(claim.key, kind))
        self.manual.append(
            {
                "confirmation_id": confirmation_id,
                "status": "pending",
                "reference": reference,
                "amount_minor": amount_minor,
                "currency": currency,
                "evidence": evidence,  # sealed by the service
                "marked_by": by,
                "marked_at": now,
            }
        )
        return None

    def approve_manual(
        self: Case, *, confirmation_id: str, by: str, now: datetime, why: str | None = None
    ) -> Settled:
        mark = self.manual_confirmation(confirmation_id)
        if mark["status"] == "approved":
            return Settled("duplicate")
        if mark["status"] != "pending":
            raise CaseError(f"this manual confirmation was {mark['status']}")
        if mark["marked_by"] == by:
            raise SelfApproval("a second coordinator must approve a manual confirmation")
        settled = self.settle(self.manual_claim(confirmation_id), now)
        self._replace_manual(
            confirmation_id,
            status="approved" if settled.outcome == "confirmed" else "flagged",
            decided_by=by,
            decided_at=now,
            why=why,
        )
        return settled

    def manual_claim(self: Case, confirmation_id: str) -> Claim:
        """The claim a manual confirmation makes: that its transfer arrived."""
        mark = self.manual_confirmation(confirmation_id)
        key = f"manual:{confirmation_id}"
        return Claim("manual", key, mark["reference"], mark["amount_minor"], mark["currency"])

    def reject_manual(
        self: Case, *, confirmation_id: str, by: str, now: datetime, why: str | None = None
    ) -> None:
        mark = self.manual_confirmation(confirmation_id)
        if mark["status"] != "pending":
            raise CaseError(f"this manual confirmation was {mark['status']}")
        self._replace_manual(
            confirmation_id, status="rejected", decided_by=by, decided_at=now, why=why
        )

    def _replace_manual(self: Case, confirmation_id: str, **changes: Any) -> None:
        self.manual = [
            {**m, **changes} if m["confirmation_id"] == confirmation_id else m for m in self.manual
        ]
