"""Notifications' projection of each cohort: its discreet name, its sessions, who is
enrolled (the roster) and the reminders planned for them.

It is filled from the cohort carried by sign-up events, and follows
``cohort.sessions_changed``: a change's ``sequence`` orders them, so a late or repeated
event never puts back sessions that were changed since.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from notifications.domain import reminders as rem
from notifications.reminders import Reminders, reschedule
from notifications.store import Sealer, Stores
from shared import events as ev
from shared.aggregates import AggregateNotFound, Change


class RecipientUnknown(LookupError):
    """The event came before the registration.submitted it depends on: retried later."""


def _utc_ms(value: datetime | str) -> datetime:
    """As MongoDB keeps it: UTC, milliseconds."""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _sessions(ref: ev.CohortRef | ev.CohortSessionsChanged) -> list[dict[str, Any]]:
    return [
        {"starts_at": _utc_ms(s.starts_at), "ends_at": _utc_ms(s.ends_at), "timezone": s.timezone}
        for s in ref.sessions
    ]


class CohortProjection:
    def __init__(self, stores: Stores, reminders: Reminders, sealer: Sealer) -> None:
        self.stores = stores
        self.reminders = reminders
        self.sealer = sealer

    async def ensure(self, ref: ev.CohortRef) -> None:
        """The cohort as a sign-up event carries it: created once, then kept current."""
        offsets = await self.reminders.offsets_for(ref.program_id)
        sessions = _sessions(ref)
        schedule = rem.schedule(sessions, offsets, [])
        try:
            await self.stores.cohorts.create(
                {
                    "_id": ref.cohort_id,
                    "program_id": ref.program_id,
                    "display_name": ref.display_name,
                    "contact_email": ref.contact_email,
                    "sessions": sessions,
                    "sessions_sequence": ref.sessions_sequence,
                    "roster": [],
                    "reminders": [r.to_doc() for r in schedule],
                    "next_due_at": rem.next_due(schedule),
                }
            )
            return
        except DuplicateKeyError:
            pass

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            named = {"display_name": ref.display_name, "contact_email": ref.contact_email}
            if all(doc.get(k) == v for k, v in named.items()) and doc["sessions"] == sessions:
                return None
            if ref.sessions_sequence < doc.get("sessions_sequence", 0):
                return Change(set=named)  # sent before the sessions changed: keep those
            return reschedule(doc, sessions, offsets, **named)

        await self.stores.cohorts.mutate(ref.cohort_id, decide)

    async def sessions_changed(self, p: ev.CohortSessionsChanged) -> dict[str, Any] | None:
        """The cohort with the new sessions and reminders rescheduled; None when nobody
        has signed up yet (nobody to tell) or a newer change is already known."""
        offsets = await self.reminders.offsets_for(p.program_id)
        sessions = _sessions(p)

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            if doc.get("sessions_sequence", 0) >= p.sequence:
                return None
            # Slot n keeps its calendar UID: the slots past the new sessions are dropped.
            slots = sorted(doc["sessions"], key=lambda s: s["starts_at"])
            retired = [*slots, *doc.get("retired_sessions", [])][len(sessions) :]
            return reschedule(
                doc, sessions, offsets, sessions_sequence=p.sequence, retired_sessions=retired
            )

        try:
            cohort = (await self.stores.cohorts.mutate(p.cohort_id, decide)).doc
        except AggregateNotFound:
            return None
        return cohort if cohort.get("sessions_sequence") == p.sequence else None

    async def joining_changed(self, p: ev.CohortJoiningChanged) -> dict[str, Any] | None:
        """The cohort with how to join it (kept sealed); None when a newer change of its
        calendar is already known (that one's event tells the participants)."""
        await self.ensure(p.cohort)
        details = p.joining.model_dump(exclude_none=True)

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            known = doc.get("sessions_sequence", 0)
            if known > p.sequence or (known == p.sequence and doc.get("joining")):
                return None
            sealed = self.sealer.seal_joining(p.cohort_id, details)
            return Change(set={"joining": sealed, "sessions_sequence": p.sequence})

        cohort = (await self.stores.cohorts.mutate(p.cohort_id, decide)).doc
        return cohort if cohort.get("sessions_sequence") == p.sequence else None

    async def roster(self, cohort_id: str, rid: str, enrolled: bool, event_id: str) -> None:
        """Who is enrolled: reminders and changed sessions go to them."""

        def decide(doc: dict[str, Any], _state: Any) -> Change | None:
            roster = list(doc.get("roster", []))
            if enrolled and rid not in roster:
                return Change(set={"roster": [*roster, rid]})
            if not enrolled and rid in roster:
                return Change(set={"roster": [r for r in roster if r != rid]})
            return None

        try:
            await self.stores.cohorts.mutate(cohort_id, decide, event_id=event_id)
        except AggregateNotFound:
            if enrolled:
                raise RecipientUnknown("cohort not known yet") from None
