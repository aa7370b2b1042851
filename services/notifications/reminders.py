"""Reminders before each session: scheduled per cohort from its program's offsets,
fired to everyone enrolled when due (within a window), dropped when too late.

A cohort's schedule lives on its projection document (``reminders``, ``next_due_at``);
the due runner claims the cohort, and firing records one delivery per (reminder,
participant) and marks the reminders fired in one write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from notifications.domain import reminders as rem
from notifications.domain.plan import Audience
from notifications.domain.quiet import send_at
from notifications.settings import NotificationsSettings
from notifications.store import Sealer, Stores
from shared.aggregates import Change
from shared.events import utcnow
from shared.logs import get_logger

log = get_logger(__name__)

RecordDelivery = Callable[..., Awaitable[str]]
SendNow = Callable[[list[str]], Awaitable[None]]


def reschedule(
    doc: dict[str, Any], sessions: list[dict], offsets: tuple[int, ...], **extra: Any
) -> Change:
    """The cohort's reminders for these sessions and offsets, keeping what already fired."""
    schedule = rem.schedule(sessions, offsets, doc.get("reminders", []))
    return Change(
        set={
            **extra,
            "sessions": sessions,
            "reminders": [r.to_doc() for r in schedule],
            "next_due_at": rem.next_due(schedule),
        }
    )


def when_and_how(
    cohort: dict[str, Any],
    reminder: rem.Reminder,
    ends: dict,
    joining: dict | None,
    homework: set[int] | frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """A reminder's session, how to join it (its recipients are confirmed), and whether
    the session before it set homework (``homework``: those sessions' numbers)."""
    starts = sorted(ends)
    number = starts.index(reminder.starts_at) + 1 if reminder.starts_at in ends else 0
    return {
        "display_name": cohort["display_name"],
        "starts_at": reminder.starts_at.isoformat(),
        "ends_at": ends.get(reminder.starts_at, reminder.starts_at).isoformat(),
        "joining": joining,
        "homework_waiting": number > 1 and number - 1 in homework,
    }


class Reminders:
    def __init__(
        self,
        settings: NotificationsSettings,
        stores: Stores,
        sealer: Sealer,
        *,
        record: RecordDelivery,
        send_now: SendNow,
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.sealer = sealer
        self.quiet = settings.quiet_hours
        self.record = record
        self.send_now = send_now

    async def cohorts_due(self, now: datetime) -> list[str]:
        cursor = self.stores.cohorts.collection.find({"next_due_at": {"$lte": now}}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    async def fire_reminders(self, cohort_id: str) -> None:
        """Send the cohort's due reminders to everyone enrolled; drop the ones too late."""
        now = utcnow()
        cohort = await self.stores.cohorts.get(cohort_id)
        if cohort is None:
            return
        window = self.settings.reminder_window_s
        schedule = [rem.Reminder.from_doc(r) for r in cohort["reminders"]]
        fire, drop = rem.split_due(schedule, now, window)
        ends = {s["starts_at"]: s["ends_at"] for s in cohort["sessions"]}
        joining = self.sealer.open_joining(cohort)  # each recipient below is confirmed
        homework = await self.homework_sessions(cohort.get("program_id"))
        created: list[str] = []
        for reminder in fire:
            for rid in cohort.get("roster", []):
                recipient = await self.stores.recipients.get(rid)
                if recipient is None or recipient.get("standing") != "confirmed":
                    continue
                contact = self.sealer.open_contact(recipient)
                expires = rem.expires_at(reminder, window)
                created.append(
                    await self.record(
                        event_id=f"reminder:{cohort_id}:{reminder.id}",
                        correlation_id=rid,
                        template="reminder",
                        audience=Audience.applicant,
                        channel="email",
                        recipient_ref=rid,
                        registration_id=rid,
                        cohort_id=cohort_id,
                        urgent=False,
                        calendar=False,
                        to=contact["email"],
                        language=recipient["language"],
                        context={
                            "name": contact.get("name", ""),
                            "tz": recipient["timezone"],
                            **when_and_how(cohort, reminder, ends, joining, homework),
                        },
                        due_at=send_at(
                            now, recipient["timezone"], self.quiet, urgent=False, deadline=expires
                        ),
                        expires_at=expires,
                    )
                )
        states = {r.id: "fired" for r in fire} | {r.id: "dropped" for r in drop}

        def decide(doc: dict[str, Any], _state: Any) -> Change:
            marked = rem.mark([rem.Reminder.from_doc(r) for r in doc["reminders"]], states)
            return Change(
                set={"reminders": [r.to_doc() for r in marked], "next_due_at": rem.next_due(marked)}
            )

        await self.stores.cohorts.mutate(cohort_id, decide)
        if drop:
            log.warning("reminders dropped: their time passed while nothing ran", count=len(drop))
        if fire:
            log.info("reminders fired", count=len(fire), deliveries=len(created))
        await self.send_now(created)

    async def offsets_for(self, program_id: str) -> tuple[int, ...]:
        doc = await self.stores.programs.find_one({"_id": program_id})
        if doc is None or "offsets_s" not in doc:
            return self.settings.default_reminder_offsets
        return tuple(doc["offsets_s"])

    async def homework_sessions(self, program_id: str | None) -> set[int]:
        doc = await self.stores.programs.find_one({"_id": program_id}, {"homework_sessions": 1})
        return set((doc or {}).get("homework_sessions", []))

    async def set_homework(self, program_id: str, sessions: list[int], set_at: datetime) -> None:
        """After which sessions the program sets homework (progress.plan_set); an older
        plan arriving late changes nothing."""
        try:
            await self.stores.programs.update_one(
                {
                    "_id": program_id,
                    "$or": [{"plan_set_at": None}, {"plan_set_at": {"$lte": set_at}}],
                },
                {"$set": {"homework_sessions": sorted(sessions), "plan_set_at": set_at}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a later plan is stored already: it wins

    async def set_offsets(self, program_id: str, offsets: tuple[int, ...]) -> int:
        """Store a program's reminder offsets and reschedule its cohorts; returns how many."""
        changed_at = utcnow()
        try:
            await self.stores.programs.update_one(
                {
                    "_id": program_id,
                    "$or": [{"updated_at": None}, {"updated_at": {"$lte": changed_at}}],
                },
                {"$set": {"offsets_s": list(offsets), "updated_at": changed_at}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a later change is stored already: it wins
        cohorts = [
            d["_id"]
            async for d in self.stores.cohorts.collection.find(
                {"program_id": program_id}, {"_id": 1}
            )
        ]

        def decide(doc: dict[str, Any], _s: Any) -> Change | None:
            # Two coordinators saving at once: the later change wins everywhere.
            if doc.get("offsets_changed_at") and doc["offsets_changed_at"] > changed_at:
                return None
            change = reschedule(doc, doc["sessions"], offsets)
            change.set["offsets_changed_at"] = changed_at
            return change

        for cohort_id in cohorts:
            await self.stores.cohorts.mutate(cohort_id, decide)
        return len(cohorts)
