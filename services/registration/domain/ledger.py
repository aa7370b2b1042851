"""The seat ledger of one cohort and the lifecycle of each registration in it.

The cohort document is the consistency boundary: it holds every registration's
status, who holds a seat, the waitlist in order and the expiries, so each change
below is one write of that document together with the events it causes. These
functions are pure: they take a ledger and return a new one plus what happened.

States (DESIGN.md):

    submitted -> pending_review -> approved -> awaiting_consent -> awaiting_payment -> confirmed
              \\-> waitlisted -> offered -(accepted)-> pending_review | approved ...
    pending_review -> rejected          any open state -> withdrawn | expired
    confirmed -> withdrawn (the seat goes to the head of the waitlist)

A seat is held from pending_review (or approved when no review is needed) until
confirmed, withdrawal, rejection or expiry; an offer reserves the seat for the
offeree until it expires.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.errors import Conflict


class Status(StrEnum):
    # Signed up, the email address not yet verified: never on a ledger, holds nothing.
    unverified = "unverified"
    submitted = "submitted"
    pending_review = "pending_review"
    approved = "approved"
    awaiting_consent = "awaiting_consent"
    awaiting_payment = "awaiting_payment"
    confirmed = "confirmed"
    waitlisted = "waitlisted"
    offered = "offered"
    rejected = "rejected"
    withdrawn = "withdrawn"
    expired = "expired"


SEAT_STATUSES = frozenset(
    {
        Status.pending_review,
        Status.approved,
        Status.awaiting_consent,
        Status.awaiting_payment,
        Status.confirmed,
        Status.offered,
    }
)
CLOSED_STATUSES = frozenset({Status.rejected, Status.withdrawn, Status.expired})


class LedgerError(Conflict):
    """A change the current state does not allow."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


@dataclass(frozen=True)
class Step:
    """One line of a registration's history: what moved it, to which status, who, and why."""

    at: datetime
    cause: str  # the step asked ("approve", "consent_signed", ...) or what followed from another's
    status: Status
    by: str | None = None  # a coordinator's account, "applicant", or None for the system
    why: str | None = None  # the coordinator's reason, sealed by the store (free text)

    def to_doc(self) -> dict[str, Any]:
        doc = {"at": self.at, "cause": self.cause, "status": str(self.status), "by": self.by}
        return {**doc, "why": self.why} if self.why else doc

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Step:
        status = Status(d["status"])
        return cls(d["at"], d["cause"], status, by=d.get("by"), why=d.get("why"))


@dataclass(frozen=True)
class Entry:
    status: Status
    since: datetime
    needs_review: bool
    price_minor: int
    currency: str
    expires_at: datetime | None = None
    reason: str | None = None  # sealed by the store when a coordinator gives one
    history: tuple[Step, ...] = ()

    @property
    def holds_seat(self) -> bool:
        return self.status in SEAT_STATUSES

    def to_doc(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "since": self.since,
            "needs_review": self.needs_review,
            "price_minor": self.price_minor,
            "currency": self.currency,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "history": [step.to_doc() for step in self.history],
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Entry:
        return cls(
            status=Status(d["status"]),
            since=d["since"],
            needs_review=d["needs_review"],
            price_minor=d["price_minor"],
            currency=d["currency"],
            expires_at=d.get("expires_at"),
            reason=d.get("reason"),
            history=tuple(Step.from_doc(h) for h in d.get("history", ())),
        )


@dataclass(frozen=True)
class Happened:
    """One consequence of a change, turned into events by the service."""

    kind: str  # the event's short name: "waitlisted", "seat_offered", "expired", ...
    registration_id: str
    previous: Status | None = None
    position: int | None = None
    expires_at: datetime | None = None


@dataclass
class Ledger:
    capacity: int
    hold: timedelta
    offer: timedelta
    entries: dict[str, Entry] = field(default_factory=dict)
    waitlist: list[str] = field(default_factory=list)

    # --- reading ---------------------------------------------------------------

    @property
    def seats_taken(self) -> int:
        return sum(1 for e in self.entries.values() if e.holds_seat)

    @property
    def seats_left(self) -> int:
        return max(0, self.capacity - self.seats_taken)

    def position(self, registration_id: str) -> int | None:
        try:
            return self.waitlist.index(registration_id) + 1
        except ValueError:
            return None

    def next_due(self) -> datetime | None:
        due = [e.expires_at for e in self.entries.values() if e.expires_at and e.holds_seat]
        return min(due) if due else None

    def get(self, registration_id: str) -> Entry:
        try:
            return self.entries[registration_id]
        except KeyError:
            raise LedgerError("this registration is not in the cohort") from None

    # --- changes ---------------------------------------------------------------

    def admit(
        self,
        registration_id: str,
        *,
        now: datetime,
        needs_review: bool,
        price_minor: int,
        currency: str,
    ) -> list[Happened]:
        """Take a seat for a new registration, or put it on the waitlist. Idempotent."""
        if registration_id in self.entries:
            return []
        if self.seats_left > 0:
            status = Status.pending_review if needs_review else Status.awaiting_consent
            self.entries[registration_id] = Entry(
                status, now, needs_review, price_minor, currency, expires_at=now + self.hold
            )
            kind = "pending_review" if needs_review else "approved"
            return [Happened(kind, registration_id, expires_at=now + self.hold)]
        self.entries[registration_id] = Entry(
            Status.waitlisted, now, needs_review, price_minor, currency
        )
        self.waitlist.append(registration_id)
        return [Happened("waitlisted", registration_id, position=len(self.waitlist))]

    def approve(self, registration_id: str, *, now: datetime) -> list[Happened]:
        entry = self.get(registration_id)
        if entry.status != Status.pending_review:
            raise LedgerError(
                f"only a registration in review can be approved (it is {entry.status})"
            )
        self.entries[registration_id] = replace(entry, status=Status.awaiting_consent)
        return [Happened("approved", registration_id, expires_at=entry.expires_at)]

    def reject(self, registration_id: str, *, now: datetime, reason: str | None) -> list[Happened]:
        entry = self.get(registration_id)
        if entry.status not in (Status.pending_review, Status.waitlisted):
            raise LedgerError(
                "only a registration in review or on the waitlist can be rejected"
                f" (it is {entry.status})"
            )
        return self.close_entry(registration_id, Status.rejected, now, "rejected", reason=reason)

    def withdraw(self, registration_id: str, *, now: datetime) -> list[Happened]:
        entry = self.get(registration_id)
        if entry.status in CLOSED_STATUSES:
            raise LedgerError(f"this registration is already {entry.status}")
        return self.close_entry(registration_id, Status.withdrawn, now, "withdrawn")

    def accept_offer(self, registration_id: str, *, now: datetime) -> list[Happened]:
        entry = self.get(registration_id)
        if entry.status != Status.offered:
            raise LedgerError(
                f"there is no open offer for this registration (it is {entry.status})"
            )
        if entry.expires_at is not None and entry.expires_at <= now:
            raise LedgerError("the offer has expired")
        status = Status.pending_review if entry.needs_review else Status.awaiting_consent
        self.entries[registration_id] = replace(
            entry, status=status, since=now, expires_at=now + self.hold
        )
        kind = "pending_review" if entry.needs_review else "approved"
        return [Happened(kind, registration_id, expires_at=now + self.hold)]

    def consent_signed(self, registration_id: str, *, now: datetime) -> list[Happened]:
        entry = self.get(registration_id)
        if entry.status != Status.awaiting_consent:
            return []  # late or repeated: the registration has moved on
        if entry.price_minor == 0:
            return self._confirm(registration_id, now)
        self.entries[registration_id] = replace(entry, status=Status.awaiting_payment)
        return [Happened("awaiting_payment", registration_id)]

    def payment_settled(
        self, registration_id: str, *, now: datetime, paid: bool = False
    ) -> list[Happened]:
        """Confirmed (``paid``: money came in) or waived; money after the end is owed back."""
        entry = self.get(registration_id)
        if paid and entry.status in CLOSED_STATUSES:
            return [Happened("paid_after_close", registration_id, previous=entry.status)]
        if entry.status not in (Status.awaiting_payment, Status.awaiting_consent):
            return []
        return self._confirm(registration_id, now)

    def lapse(self, registration_id: str, *, now: datetime, withdrawn: bool) -> list[Happened]:
        """Consent declined/expired/withdrawn or payment expired: the seat goes back."""
        entry = self.get(registration_id)
        if entry.status in CLOSED_STATUSES:
            return []
        if entry.status == Status.confirmed and not withdrawn:
            return []  # an expiry notice arriving after confirmation changes nothing
        status = Status.withdrawn if withdrawn else Status.expired
        return self.close_entry(registration_id, status, now, str(status))

    def expire_due(self, *, now: datetime) -> list[Happened]:
        """Holds and offers past their expiry end; freed seats go down the waitlist."""
        happened: list[Happened] = []
        for rid, entry in sorted(self.entries.items(), key=lambda kv: kv[1].since):
            if (
                entry.holds_seat
                and entry.status != Status.confirmed
                and entry.expires_at is not None
                and entry.expires_at <= now
            ):
                happened += self.close_entry(rid, Status.expired, now, "expired")
        return happened

    def record(
        self,
        happened: list[Happened],
        *,
        now: datetime,
        cause: str,
        subject: str | None = None,
        by: str | None = None,
        why: str | None = None,
    ) -> list[Happened]:
        """Add each happening to its registration's history. ``subject`` is the
        registration the step was asked for, ``by`` who asked and ``why`` their reason;
        what followed for others (a freed seat offered down the waitlist) is the system's."""
        for h in happened:
            entry = self.entries[h.registration_id]
            mine = h.registration_id == subject
            step = (
                Step(now, cause, entry.status, by, why) if mine else Step(now, h.kind, entry.status)
            )
            self.entries[h.registration_id] = replace(entry, history=(*entry.history, step))
        return happened

    # --- confirming, closing and offering (domain/controls.py closes and offers too) ---

    def _confirm(self, registration_id: str, now: datetime) -> list[Happened]:
        entry = self.entries[registration_id]
        self.entries[registration_id] = replace(entry, status=Status.confirmed, expires_at=None)
        return [Happened("confirmed", registration_id, previous=entry.status)]

    def close_entry(
        self,
        registration_id: str,
        status: Status,
        now: datetime,
        kind: str,
        reason: str | None = None,
    ) -> list[Happened]:
        entry = self.entries[registration_id]
        had_seat = entry.holds_seat
        self.entries[registration_id] = replace(
            entry, status=status, expires_at=None, reason=reason, since=now
        )
        if registration_id in self.waitlist:
            self.waitlist.remove(registration_id)
        happened = [Happened(kind, registration_id, previous=entry.status)]
        if had_seat:
            happened += self.offer_freed_seat(now)
        return happened

    def offer_freed_seat(self, now: datetime) -> list[Happened]:
        if self.seats_left <= 0 or not self.waitlist:
            return []
        head = self.waitlist.pop(0)
        entry = self.entries[head]
        self.entries[head] = replace(
            entry, status=Status.offered, since=now, expires_at=now + self.offer
        )
        return [Happened("seat_offered", head, previous=entry.status, expires_at=now + self.offer)]

    def copy(self) -> Ledger:
        """A ledger to change without touching this one (entries are immutable)."""
        return Ledger(self.capacity, self.hold, self.offer, dict(self.entries), list(self.waitlist))

    # --- persistence shape ---------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        return {
            "entries": {rid: e.to_doc() for rid, e in self.entries.items()},
            "waitlist": list(self.waitlist),
            "seats_taken": self.seats_taken,
            "next_due_at": self.next_due(),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any], *, entries: dict[str, Entry] | None = None) -> Ledger:
        if entries is None:
            entries = {rid: Entry.from_doc(e) for rid, e in doc.get("entries", {}).items()}
        return cls(
            capacity=doc["capacity"],
            hold=timedelta(seconds=doc["hold_seconds"]),
            offer=timedelta(seconds=doc["offer_seconds"]),
            entries=entries,
            waitlist=list(doc.get("waitlist", [])),
        )


class LedgerCodec:
    """A cohort document's ledger, parsed for a decision and written back (shared/aggregates.py).

    A rush of sign-ups changes one entry of a large ledger per write, and the store
    hands the next decision the document it wrote, with every other entry the same
    object as before: those are not parsed again (entries are immutable).
    """

    def __init__(self, cohorts: int = 64) -> None:
        self.cohorts = cohorts
        # cohort id -> {id(entry document): (entry document, parsed entry)}
        self._parsed: OrderedDict[str, dict[int, tuple[dict[str, Any], Entry]]] = OrderedDict()

    def load(self, doc: dict[str, Any]) -> Ledger:
        before = self._parsed.pop(doc["_id"], {})
        parsed: dict[int, tuple[dict[str, Any], Entry]] = {}
        entries: dict[str, Entry] = {}
        for rid, raw in doc.get("entries", {}).items():
            seen = before.get(id(raw))
            entry = seen[1] if seen is not None and seen[0] is raw else Entry.from_doc(raw)
            parsed[id(raw)] = (raw, entry)  # holds raw, so its id is not reused meanwhile
            entries[rid] = entry
        self._parsed[doc["_id"]] = parsed
        while len(self._parsed) > self.cohorts:
            self._parsed.popitem(last=False)
        return Ledger.from_doc(doc, entries=entries)

    def copy(self, state: Ledger) -> Ledger:
        return state.copy()

    def dump(self, state: Ledger) -> dict[str, Any]:
        return state.to_doc()
