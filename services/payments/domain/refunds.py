"""Money owed back on a payment case: the refund policy after a withdrawal, and money
confirmed for a registration that had already ended. Pure; mixed into ``Case``
(domain/cases.py), whose fields it uses.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from payments.domain.claims import CaseError, Emitted, Status

if TYPE_CHECKING:
    from payments.domain.cases import Case


class Refunds:
    """``Case.refund``: what is owed back, and whether it was made."""

    def withdrawn(self: Case, *, refundable: bool, now: datetime) -> list[Emitted]:
        """The registration was withdrawn: an open request is cancelled; a paid one follows the
        program's refund policy (recorded for the coordinator, who makes any refund)."""
        if self.status in (Status.open, Status.pending_decision, Status.requested):
            self.status = Status.cancelled
            self.closed_at = now
            return []
        if self.status == Status.confirmed and self.refund is None:
            refundable = refundable or self.refundable
            return self._owe("refundable" if refundable else "no_refund", refundable, now)
        return []

    def paid_after_close(self: Case, now: datetime) -> list[Emitted]:
        """Registration says the money confirmed here came for a registration that had
        already ended: it is owed back in full, whatever the refund policy."""
        if self.status != Status.confirmed:
            return []
        if self.refund is not None and self.refund["status"] != "none":
            return []  # already owed or made
        return self._owe("registration_closed", True, now)

    def _owe(self: Case, policy: str, refundable: bool, now: datetime) -> list[Emitted]:
        assert self.confirmed is not None
        self.refund = {
            "policy": policy,
            "status": "to_be_made" if refundable else "none",
            "amount_minor": self.confirmed["amount_minor"] if refundable else 0,
            "currency": self.confirmed["currency"],
            "recorded_at": now,
        }
        if not refundable:
            return []
        reason = "registration_closed" if policy == "registration_closed" else "withdrawn"
        return [Emitted("refund_due", reason_code=reason)]

    def refund_made(self: Case, *, by: str, now: datetime) -> None:
        if self.refund is None or self.refund["status"] != "to_be_made":
            raise CaseError("no refund is waiting to be made")
        self.refund = {**self.refund, "status": "made", "made_by": by, "made_at": now}
