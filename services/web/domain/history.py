"""A registration's history as a coordinator reads it: one list, oldest first.

Pure: it merges what two services recorded, each with its own time and actor.
Registration keeps each step of the seat ledger (``record["history"]``); payments
keeps its case, whose fields say when a request went out, who marked a transfer as
received and who approved it, who decided a scholarship, when a refund was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# What the ledger records as a step's cause: the step asked for, or, for a registration
# a step moved along (a seat freed and offered down the waitlist), what happened to it.
STEPS = frozenset(
    {
        "signed_up",
        "approve",
        "reject",
        "withdraw",
        "accept_offer",
        "consent_signed",
        "payment_settled",
        "paid",
        "lapse_withdrawn",
        "lapse_expired",
        "expired",
        "seat_offered",
        "cohort_cancelled",
        "moved_in",
    }
)
PAYMENT = frozenset(
    {
        "scholarship_requested",
        "scholarship_granted",
        "scholarship_declined",
        "requested",
        "said_paid",
        "marked_received",
        "manual_approved",
        "manual_rejected",
        "manual_flagged",
        "confirmed",
        "failed",
        "refund_due",
        "refund_late",
        "refund_made",
    }
)
WORDS = frozenset({f"step.{s}" for s in STEPS} | {f"payment.{p}" for p in PAYMENT} | {"step.other"})


@dataclass(frozen=True)
class Line:
    at: datetime
    what: str  # a key under "history." in the locale files
    by: str | None = None  # a coordinator's account, "applicant", or None for the system
    status: str | None = None  # the registration's status after a ledger step
    why: str | None = None  # the coordinator's reason, when they gave one


def _when(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _step(cause: str) -> str:
    return f"step.{cause}" if cause in STEPS else "step.other"


def registration_lines(record: dict[str, Any]) -> list[Line]:
    return [
        Line(_when(s["at"]), _step(s["cause"]), s.get("by"), s["status"], s.get("why"))
        for s in record.get("history", [])
    ]


def payment_lines(case: dict[str, Any] | None) -> list[Line]:
    if not case:
        return []
    lines: list[Line] = []

    def add(at: Any, what: str, by: str | None = None, why: str | None = None) -> None:
        if at:
            lines.append(Line(_when(at), what, by, why=why))

    scholarship = case.get("scholarship") or {}
    add(scholarship.get("requested_at"), "payment.scholarship_requested", "applicant")
    if scholarship.get("decided_at"):
        add(
            scholarship["decided_at"],
            f"payment.scholarship_{scholarship['status']}",
            scholarship.get("decided_by"),
            scholarship.get("why"),
        )
    add(case.get("requested_at"), "payment.requested")
    add(case.get("said_paid_at"), "payment.said_paid", "applicant")
    for mark in case.get("manual") or []:
        add(mark.get("marked_at"), "payment.marked_received", mark.get("marked_by"))
        if mark.get("decided_at"):
            decided = f"payment.manual_{mark['status']}"
            add(mark["decided_at"], decided, mark.get("decided_by"), mark.get("why"))
    confirmed = case.get("confirmed") or {}
    if confirmed.get("method") != "manual":  # a manual one is the approval above
        add(confirmed.get("at"), "payment.confirmed")
    failure = case.get("failure") or {}
    add(failure.get("at"), "payment.failed", failure.get("by"))
    refund = case.get("refund") or {}
    if refund.get("status") != "none":
        late = refund.get("policy") == "registration_closed"
        add(refund.get("recorded_at"), "payment.refund_late" if late else "payment.refund_due")
    add(refund.get("made_at"), "payment.refund_made", refund.get("made_by"))
    return lines


def timeline(record: dict[str, Any], case: dict[str, Any] | None) -> list[Line]:
    """Both services' lines, oldest first (a stable sort keeps each one's own order)."""
    return sorted(registration_lines(record) + payment_lines(case), key=lambda line: line.at)
