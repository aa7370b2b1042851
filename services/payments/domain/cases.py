"""The payment case of one registration: its request, scholarship, claims, refund (pure).

One document per registration carries all of it, so every way money can be confirmed
(a provider notification, the generic webhook, a coordinator's manual confirmation
approved by a second coordinator) is one decision on that one document:

    open ------------------------------> (consent signed)
      \\ scholarship requested, undecided: pending_decision --(granted/declined)--> ...
    requested -> confirmed | waived | expired | failed        (never confirmed twice)
    open | pending_decision | requested -> cancelled          (registration withdrawn)

``open`` is a case known before its request: a scholarship asked for at sign-up, or a
withdrawal that arrived before the consent (so a late consent creates nothing).

Every claim that money arrived is checked against the request (reference, amount,
currency, merchant) and recorded by its key (the provider's transaction id, or the
manual confirmation's id): the same claim again is a duplicate and changes nothing;
a claim that does not match is flagged for a coordinator and never confirms.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from payments.domain.claims import (
    CaseError,
    Claim,
    Emitted,
    FlagKind,
    Settled,
    Status,
    flag_id,
)
from payments.domain.manual import ManualConfirmation
from payments.domain.money import compact_reference
from payments.domain.refunds import Refunds

CLOSED = frozenset({Status.confirmed, Status.waived, Status.expired, Status.failed})
ENDED_UNPAID = frozenset({Status.expired, Status.failed, Status.cancelled})
BEFORE_REQUEST = frozenset({Status.open, Status.pending_decision})


@dataclass
class Case(ManualConfirmation, Refunds):
    registration_id: str
    payment_id: str
    status: Status = Status.open
    cohort_id: str | None = None
    program_id: str | None = None  # whose coordinators see it (services/payments/access.py)
    price_minor: int | None = None
    currency: str | None = None
    refundable: bool = False
    amount_due: int | None = None
    reference: str | None = None
    expires_at: datetime | None = None
    requested_at: datetime | None = None
    closed_at: datetime | None = None
    scholarship: dict[str, Any] | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    confirmed: dict[str, Any] | None = None
    manual: list[dict[str, Any]] = field(default_factory=list)
    refund: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    said_paid_at: datetime | None = None  # the applicant says they transferred the money

    # --- reading ---------------------------------------------------------------------

    @property
    def scholarship_status(self) -> str | None:
        return self.scholarship["status"] if self.scholarship else None

    def claim(self, key: str) -> dict[str, Any] | None:
        return next((c for c in self.claims if c["key"] == key), None)

    def manual_confirmation(self, confirmation_id: str) -> dict[str, Any]:
        for m in self.manual:
            if m["confirmation_id"] == confirmation_id:
                return m
        raise CaseError("no such manual confirmation")

    @property
    def pending_manual(self) -> bool:
        return any(m["status"] == "pending" for m in self.manual)

    # --- the request -------------------------------------------------------------------

    def scholarship_requested(
        self,
        *,
        cohort_id: str,
        program_id: str | None = None,
        price_minor: int | None,
        currency: str | None,
        now: datetime,
    ) -> list[Emitted]:
        """Sign-up asked for a scholarship: a coordinator decides before the request is issued."""
        self.cohort_id = self.cohort_id or cohort_id
        self.program_id = self.program_id or program_id
        if self.price_minor is None and price_minor is not None:
            self.price_minor, self.currency = price_minor, currency
        if self.scholarship is None:
            self.scholarship = {"status": "requested", "requested_at": now}
        return []

    def consent_signed(
        self,
        *,
        program_id: str | None = None,
        price_minor: int | None,
        currency: str | None,
        refundable: bool,
        expires_at: datetime,
        reference: str,
        now: datetime,
    ) -> list[Emitted]:
        """The applicant signed: issue the request (or waive it, or wait for a decision)."""
        self.program_id = self.program_id or program_id
        if self.status != Status.open:
            return []  # already issued, or the registration ended first
        if price_minor is not None:
            self.price_minor, self.currency = price_minor, currency
        self.refundable = refundable
        self.reference = reference
        self.expires_at = expires_at
        if not self.price_minor:
            return self._waive(now)
        if self.scholarship_status == "requested":
            self.status = Status.pending_decision
            return []
        return self._issue(now)

    def applicant_says_paid(self, now: datetime) -> bool:
        """Recorded once, while the request is open: coordinators look for the transfer.
        Nothing counts until two of them confirm it (mark_manual, decide_manual)."""
        if self.status != Status.requested:
            raise CaseError(f"no payment is requested now ({self.status})")
        if self.said_paid_at is None:
            self.said_paid_at = now
            return True
        return False

    def _due(self) -> int:
        assert self.price_minor is not None
        if self.scholarship_status == "granted":
            return int(self.scholarship["amount_due_minor"])
        return self.price_minor

    def _issue(self, now: datetime) -> list[Emitted]:
        due = self._due()
        if due == 0:
            return self._waive(now)
        self.amount_due = due
        self.status = Status.requested
        self.requested_at = now
        return [Emitted("requested")]

    def _waive(self, now: datetime) -> list[Emitted]:
        self.amount_due = 0
        self.status = Status.waived
        self.closed_at = now
        return [Emitted("waived")]

    # --- scholarships ------------------------------------------------------------------

    def check_grantable(self, amount_due_minor: int) -> int:
        """The reduction a grant of ``amount_due_minor`` means; raises if it cannot be granted."""
        if self.scholarship_status != "requested":
            raise CaseError("no scholarship request is waiting for a decision")
        if self.status not in (*BEFORE_REQUEST, Status.requested):
            raise CaseError(f"the payment is already {self.status}")
        if self.price_minor is None or self.currency is None:
            raise CaseError("the price of this registration is not known")
        if not 0 <= amount_due_minor < self.price_minor:
            raise CaseError("the amount due must be at least 0 and below the price")
        return self.price_minor - amount_due_minor

    def grant(
        self, *, amount_due_minor: int, by: str, now: datetime, why: str | None = None
    ) -> list[Emitted]:
        """``why``: the coordinator's reason, sealed by the service."""
        self.check_grantable(amount_due_minor)
        due = {"amount_due_minor": amount_due_minor, "budget": self.cohort_id}
        return self._decided("granted", by, now, why, **due)

    @property
    def grant_budget(self) -> str | None:
        """The cohort whose scholarship budget carries this case's grant (None: no grant)."""
        if self.scholarship_status != "granted":
            return None
        return self.scholarship.get("budget") or self.cohort_id  # grants from before moves

    def moved(self, cohort_id: str) -> list[Emitted]:
        """A coordinator moved the registration to another cohort of its program: the
        case follows; a grant stays on the budget that carries it until it is carried over."""
        if self.scholarship_status == "granted":
            self.scholarship = {**self.scholarship, "budget": self.grant_budget}
        self.cohort_id = cohort_id
        return []

    def grant_carried_by(self, cohort_id: str) -> list[Emitted]:
        if self.scholarship_status == "granted":
            self.scholarship = {**self.scholarship, "budget": cohort_id}
        return []

    def decline(self, *, by: str, now: datetime, why: str | None = None) -> list[Emitted]:
        if self.scholarship_status != "requested":
            raise CaseError("no scholarship request is waiting for a decision")
        return self._decided("declined", by, now, why)

    def _decided(
        self, status: str, by: str, now: datetime, why: str | None, **more: Any
    ) -> list[Emitted]:
        decision = {"status": status, **more, "decided_by": by, "decided_at": now, "why": why}
        self.scholarship = {**(self.scholarship or {}), **decision}
        return self._after_decision(now)

    def _after_decision(self, now: datetime) -> list[Emitted]:
        if self.status == Status.pending_decision:
            return self._issue(now)
        if self.status == Status.requested and self._due() != self.amount_due:
            # Decided after the request went out: a new request with the new amount due
            # (same reference, same payment id) replaces it.
            return self._issue(now)
        return []

    # --- money arriving ---------------------------------------------------------------

    def settle(self, claim: Claim, now: datetime) -> Settled:
        """Check a claim against the request; confirm, or record a duplicate or a flag."""
        seen = self.claim(claim.key)
        if seen is not None:
            kind = FlagKind(seen["flag"]) if seen.get("flag") else None
            return Settled("duplicate", kind, seen.get("flag_id"))
        kind = self._mismatch(claim, now)
        entry = {
            "key": claim.key,
            "method": claim.method,
            "amount_minor": claim.amount_minor,
            "currency": claim.currency,
            "at": now,
            "flag": str(kind) if kind else None,
            "flag_id": flag_id(claim.key, kind) if kind else None,
        }
        self.claims.append(entry)
        if kind is not None:
            return Settled("flagged", kind, entry["flag_id"])
        self.status = Status.confirmed
        self.closed_at = now
        self.confirmed = {
            "method": claim.method,
            "claim_key": claim.key,
            "amount_minor": claim.amount_minor,
            "currency": claim.currency,
            "at": now,
        }
        return Settled("confirmed")

    def _mismatch(self, claim: Claim, now: datetime) -> FlagKind | None:
        if self.status == Status.confirmed:
            return FlagKind.already_paid
        if self.status in (*ENDED_UNPAID, Status.waived):
            return FlagKind.request_closed
        if self.status == Status.requested and self.expires_at and self.expires_at <= now:
            # Past its expiry, whether or not the expiry has run yet: the seat may be
            # gone, so the money is to be returned, never taken as payment.
            return FlagKind.request_closed
        if self.status != Status.requested:
            return FlagKind.not_requested
        if not claim.merchant_ok:
            return FlagKind.merchant_mismatch
        if self.reference is None or compact_reference(claim.reference) != compact_reference(
            self.reference
        ):
            return FlagKind.unknown_reference
        if claim.currency.upper() != (self.currency or "").upper():
            return FlagKind.currency_mismatch
        if claim.amount_minor != self.amount_due:
            return FlagKind.amount_mismatch
        return None

    # --- manual confirmation (maker-checker) -------------------------------------------

    # --- endings -----------------------------------------------------------------------

    def registration_expired(self, now: datetime) -> list[Emitted]:
        if self.status in BEFORE_REQUEST:
            self.status = Status.cancelled
            self.closed_at = now
            return []
        if self.status == Status.requested:
            return self._expire(now)
        return []

    def expire_due(self, now: datetime) -> list[Emitted]:
        if (
            self.status == Status.requested
            and self.expires_at is not None
            and self.expires_at <= now
        ):
            return self._expire(now)
        return []

    def _expire(self, now: datetime) -> list[Emitted]:
        self.status = Status.expired
        self.closed_at = now
        return [Emitted("expired")]

    def fail(self, *, reason_code: str, by: str, now: datetime) -> list[Emitted]:
        if self.status != Status.requested:
            raise CaseError(f"only a requested payment can be failed (it is {self.status})")
        self.status = Status.failed
        self.closed_at = now
        self.failure = {"reason_code": reason_code, "by": by, "at": now}
        return [Emitted("failed", reason_code=reason_code)]

    # --- persistence shape -------------------------------------------------------------

    FIELDS = (
        "status",
        "cohort_id",
        "program_id",
        "price_minor",
        "currency",
        "refundable",
        "amount_due",
        "reference",
        "expires_at",
        "requested_at",
        "closed_at",
        "scholarship",
        "claims",
        "confirmed",
        "manual",
        "refund",
        "failure",
        "said_paid_at",
    )

    def to_doc(self) -> dict[str, Any]:
        # Copies, so a document taken before a change is not changed with the case.
        doc = {name: copy.deepcopy(getattr(self, name)) for name in self.FIELDS}
        doc["status"] = str(self.status)
        # Top-level copies that coordinators' lists filter on (plain equality queries).
        doc["pending_manual"] = self.pending_manual
        doc["scholarship_status"] = self.scholarship_status
        doc["refund_status"] = self.refund["status"] if self.refund else None
        doc["registration_id"] = self.registration_id
        doc["payment_id"] = self.payment_id
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Case:
        values = {name: doc.get(name) for name in cls.FIELDS}
        values["status"] = Status(doc["status"])
        values["claims"] = list(doc.get("claims") or [])
        values["manual"] = list(doc.get("manual") or [])
        values["refundable"] = bool(doc.get("refundable"))
        return cls(registration_id=doc["registration_id"], payment_id=doc["payment_id"], **values)

    def copy(self) -> Case:
        return replace(self, claims=list(self.claims), manual=list(self.manual))


def default_expiry(now: datetime, hold_expires_at: datetime | None, ttl_s: int) -> datetime:
    """The request is payable as long as the seat is held (or a default time without a hold)."""
    return hold_expires_at if hold_expires_at is not None else now + timedelta(seconds=ttl_s)


class CaseCodec:
    """A case document parsed for a decision and written back (shared/aggregates.py):
    the store writes only the fields a decision changed."""

    def load(self, doc: dict[str, Any]) -> Case:
        return Case.from_doc(doc)

    def copy(self, case: Case) -> Case:
        # Deep: a decision may change a map of the case in place, and the document it
        # was parsed from must stay as read, for the store to see what changed.
        return copy.deepcopy(case)

    def dump(self, case: Case) -> dict[str, Any]:
        return case.to_doc()
