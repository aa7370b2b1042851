"""Session reminders of a cohort: the schedule, and which are due, late or done (pure).

A cohort's reminders are one list on the cohort's document: one entry per session
and offset ("24 hours before", "1 hour before"), each ``pending`` until it is
``fired`` (a message for every enrolled member) or ``dropped`` (its time passed by
more than the window while nothing ran: a reminder is not sent late).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEFAULT_OFFSETS_S = (24 * 3600, 3600)


@dataclass(frozen=True)
class Reminder:
    id: str
    starts_at: datetime
    offset_s: int
    due_at: datetime
    state: str = "pending"

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "starts_at": self.starts_at,
            "offset_s": self.offset_s,
            "due_at": self.due_at,
            "state": self.state,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Reminder:
        return cls(doc["id"], doc["starts_at"], doc["offset_s"], doc["due_at"], doc["state"])


def parse_offsets(text: str) -> tuple[int, ...]:
    """``"86400,3600"`` -> (86400, 3600); positive, distinct, largest first."""
    values = {int(part) for part in text.split(",") if part.strip()}
    if any(v <= 0 for v in values):
        raise ValueError("reminder offsets must be positive seconds")
    return tuple(sorted(values, reverse=True))


def schedule(
    sessions: list[dict[str, Any]], offsets_s: tuple[int, ...] | list[int], previous: list[dict]
) -> list[Reminder]:
    """Every (session, offset) reminder; those already fired or dropped keep their state."""
    known = {r["id"]: r["state"] for r in previous}
    out = []
    for session in sorted(sessions, key=lambda s: s["starts_at"]):
        starts = session["starts_at"]
        for offset in sorted(set(offsets_s), reverse=True):
            rid = f"{starts.isoformat()}|{offset}"
            due = starts - timedelta(seconds=offset)
            out.append(Reminder(rid, starts, offset, due, known.get(rid, "pending")))
    return out


def too_late(reminder: Reminder, now: datetime, window_s: float) -> bool:
    return now > reminder.due_at + timedelta(seconds=window_s) or now >= reminder.starts_at


def expires_at(reminder: Reminder, window_s: float) -> datetime:
    """After this the reminder's message is dropped rather than sent."""
    return min(reminder.due_at + timedelta(seconds=window_s), reminder.starts_at)


def split_due(
    reminders: list[Reminder], now: datetime, window_s: float
) -> tuple[list[Reminder], list[Reminder]]:
    """(to fire now, to drop): pending reminders whose time came, on time or too late."""
    fire, drop = [], []
    for r in reminders:
        if r.state != "pending" or r.due_at > now:
            continue
        (drop if too_late(r, now, window_s) else fire).append(r)
    return fire, drop


def next_due(reminders: list[Reminder]) -> datetime | None:
    pending = [r.due_at for r in reminders if r.state == "pending"]
    return min(pending) if pending else None


def mark(reminders: list[Reminder], states: dict[str, str]) -> list[Reminder]:
    return [
        Reminder(r.id, r.starts_at, r.offset_s, r.due_at, states.get(r.id, r.state))
        for r in reminders
    ]
