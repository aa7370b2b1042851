"""A coordinator's changes to a whole cohort (pure): cancel it, change its capacity,
close or reopen registration, change its sessions.

Each returns what the cohort document gets and the events it causes, written together
in one conditional write of the cohort (the ledger's consistency boundary). What a
change means for each registration is that registration's own event: a seat offered
down the waitlist, a withdrawal with the program's refund for a cancelled cohort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registration.domain.ledger import (
    CLOSED_STATUSES,
    Entry,
    Happened,
    Ledger,
    LedgerError,
    Status,
    Step,
)
from shared import events as ev


@dataclass
class CohortChange:
    """The cohort's new fields, the ledger's happenings (each becomes its registration's
    events, domain/events.py), and the events about the cohort itself."""

    stored: dict[str, Any] = field(default_factory=dict)
    happened: list[Happened] = field(default_factory=list)
    cohort_events: list[ev.EventData] = field(default_factory=list)


def _facts(cohort: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"cohort_id": cohort["_id"], "program_id": cohort["program_id"], "occurred_at": now}


def still_running(cohort: dict[str, Any]) -> None:
    """Refuse any change to a cancelled cohort."""
    if cohort.get("cancelled"):
        raise LedgerError("this cohort was cancelled")


def cancel(cohort: dict[str, Any], ledger: Ledger, now: datetime, by: str) -> CohortChange | None:
    """Every registration still open ends as withdrawn, the waitlist first, so no seat
    freed on the way is offered down a waitlist being emptied. None when already done."""
    if cohort.get("cancelled"):
        return None
    happened: list[Happened] = []
    for rid in list(ledger.waitlist):
        happened += ledger.close_entry(rid, Status.withdrawn, now, "cancelled")
    still_open = [
        rid for rid, entry in ledger.entries.items() if entry.status not in CLOSED_STATUSES
    ]
    for rid in sorted(still_open, key=lambda r: ledger.entries[r].since):
        happened += ledger.close_entry(rid, Status.withdrawn, now, "cancelled")
    return CohortChange(
        stored={"cancelled": {"at": now, "by": by}, "registration_closed": True},
        happened=happened,
        cohort_events=[ev.CohortCancelled(**_facts(cohort, now))],
    )


def admit_to_cancelled(
    ledger: Ledger,
    rid: str,
    now: datetime,
    needs_review: bool,
    *,
    price_minor: int,
    currency: str,
) -> list[Happened]:
    """A sign-up verified after its cohort was cancelled: on the ledger, ended as the
    others were (so nothing takes it for a sign-up left half-way), and told so."""
    step = Step(now, "cohort_cancelled", Status.withdrawn)
    ledger.entries[rid] = Entry(
        Status.withdrawn, now, needs_review, price_minor, currency, history=(step,)
    )
    return [Happened("cancelled", rid, previous=Status.submitted)]


def resize(
    cohort: dict[str, Any], ledger: Ledger, capacity: int, now: datetime
) -> CohortChange | None:
    """A new capacity: never below the seats already held; new seats are offered down
    the waitlist in order. None when the capacity is already that."""
    still_running(cohort)
    if capacity == ledger.capacity:
        return None
    if capacity < ledger.seats_taken:
        raise LedgerError(
            f"{ledger.seats_taken} seats are held or offered; the capacity cannot go below that"
        )
    ledger.capacity = capacity
    happened: list[Happened] = []
    while offered := ledger.offer_freed_seat(now):
        happened += offered
    return CohortChange(
        stored={"capacity": capacity},
        happened=happened,
        cohort_events=[ev.CohortCapacityChanged(**_facts(cohort, now), capacity=capacity)],
    )


def set_registration_open(
    cohort: dict[str, Any], is_open: bool, now: datetime
) -> CohortChange | None:
    """Close registration before its window ends, or reopen it (within the window, it
    takes sign-ups again). None when it already is so."""
    still_running(cohort)
    if bool(cohort.get("registration_closed")) != is_open:
        return None
    event = ev.CohortRegistrationReopened if is_open else ev.CohortRegistrationClosed
    return CohortChange(
        stored={"registration_closed": not is_open}, cohort_events=[event(**_facts(cohort, now))]
    )


def change_sessions(
    cohort: dict[str, Any], sessions: list[dict[str, Any]], now: datetime
) -> CohortChange | None:
    """New sessions for the cohort: the calendar sequence goes up, so every confirmed
    participant's calendar entry is replaced. None when they are the same."""
    still_running(cohort)
    if _comparable(sessions) == _comparable(cohort["sessions"]):
        return None
    sequence = cohort.get("sessions_sequence", 0) + 1
    ordered = sorted(sessions, key=lambda s: s["starts_at"])
    event = ev.CohortSessionsChanged(
        **_facts(cohort, now),
        sessions=[ev.Session(**s) for s in ordered],
        sequence=sequence,
    )
    return CohortChange(
        stored={"sessions": ordered, "sessions_sequence": sequence}, cohort_events=[event]
    )


def _comparable(sessions: list[dict[str, Any]]) -> list[tuple]:
    # As stored, times lose their sub-millisecond part and come back in UTC.
    return sorted(
        (
            int(s["starts_at"].timestamp() * 1000),
            int(s["ends_at"].timestamp() * 1000),
            s["timezone"],
        )
        for s in sessions
    )
