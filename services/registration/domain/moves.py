"""Moving a registration to another cohort of its program (pure).

Two cohort documents change, and no write spans both: the entry is first copied onto
the target's ledger (``move_in``), then taken off the source's (``move_out``), only if it
is still as it was copied; otherwise the copy is taken back (``take_back``) and the move
is refused. The registration document records the move under way, so one interrupted
between the two writes is finished (registration/moves.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from registration.domain.ledger import (
    SEAT_STATUSES,
    Entry,
    Happened,
    Ledger,
    LedgerError,
    Status,
    Step,
)

# An offer is answered first: it is a seat reserved in this cohort for a while.
MOVABLE = (SEAT_STATUSES - {Status.offered}) | {Status.waitlisted}


def move_in(ledger: Ledger, rid: str, entry: Entry, now: datetime, by: str) -> list[Happened]:
    """The entry on the target's ledger as it is: a place held takes a free seat (none
    free: refused, add places first); a place on the waitlist goes to its end."""
    if rid in ledger.entries:
        return []  # copied before: a retry of an interrupted move
    if entry.status not in MOVABLE:
        raise LedgerError(f"a registration that is {entry.status} cannot be moved")
    if entry.holds_seat and ledger.seats_left <= 0:
        raise LedgerError("the other cohort has no free place: add places to it first")
    step = Step(now, "moved_in", entry.status, by)
    ledger.entries[rid] = replace(entry, history=(*entry.history, step))
    if entry.status == Status.waitlisted:
        ledger.waitlist.append(rid)
    return [Happened("moved_in", rid, previous=entry.status, position=ledger.position(rid))]


def move_out(ledger: Ledger, rid: str, copied: Entry, now: datetime) -> list[Happened]:
    """The entry off the source's ledger, if it is still as copied; a freed seat goes to
    the head of the source's waitlist."""
    entry = ledger.entries.get(rid)
    if entry is None:
        return []  # taken off before
    if entry.status != copied.status:
        raise LedgerError("the registration changed while it was being moved: try again")
    return _remove(ledger, rid, "moved_out", now)


def take_back(ledger: Ledger, rid: str, copied: Entry, now: datetime) -> list[Happened]:
    """Undo ``move_in`` after the source refused ``move_out``."""
    entry = ledger.entries.get(rid)
    n = len(copied.history)
    made_by_move_in = (
        entry is not None
        and entry.history[:n] == copied.history
        and len(entry.history) > n
        and entry.history[n].cause == "moved_in"
    )
    return _remove(ledger, rid, "taken_back", now) if made_by_move_in else []


def _remove(ledger: Ledger, rid: str, kind: str, now: datetime) -> list[Happened]:
    entry = ledger.entries.pop(rid)
    if rid in ledger.waitlist:
        ledger.waitlist.remove(rid)
    happened = [Happened(kind, rid, previous=entry.status)]
    if entry.holds_seat:
        happened += ledger.offer_freed_seat(now)
    return happened
