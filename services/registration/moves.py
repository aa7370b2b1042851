"""A coordinator moves a registration to another cohort of its program (the rules:
domain/moves.py).

The move is recorded on the registration first (``moving``), then the entry is copied
onto the target's ledger, taken off the source's (with the events: the registration
moved, a freed seat offered, the public enrollment ended in one cohort and begun in the
other) and the registration pointed at the target. A crash anywhere leaves ``moving``
set, and the reconciler finishes the move; asking again does too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registration.domain.events import event_payloads, moved, program_spec
from registration.domain.ledger import Entry, Ledger, LedgerError
from registration.domain.moves import move_in, move_out, take_back
from registration.service import RegistrationService
from registration.store import is_unverified
from shared import events as ev
from shared.aggregates import Change
from shared.errors import Conflict, NotFound
from shared.logs import get_logger

log = get_logger(__name__)


class Moves:
    def __init__(self, service: RegistrationService) -> None:
        self.service = service
        self.stores = service.stores

    async def move(self, rid: str, target_id: str, now: datetime, by: str) -> dict[str, Any]:
        doc = await self.stores.registrations.find_one({"_id": rid})
        if doc is None:
            raise NotFound("registration_id", "no such registration")
        if is_unverified(doc):
            raise Conflict("registration_id", "the address is not verified yet: nothing to move")
        target = await self.stores.cohorts.get(target_id)
        if target is None or target["program_id"] != doc["program_id"]:
            # The same answer for both: another program's cohorts cannot be probed.
            raise NotFound("cohort_id", "no such cohort in this registration's program")
        under_way = (doc.get("moving") or {}).get("to")
        if under_way not in (None, target_id):
            raise Conflict("cohort_id", "a move to another cohort is under way")
        if doc["cohort_id"] != target_id and under_way is None:
            await self.stores.registrations.update_one(
                {"_id": rid, "moving": None},
                {"$set": {"moving": {"to": target_id, "by": by}, "moving_since": now}},
            )
        await self.finish(rid, now)
        return await self._where(rid)

    async def finish(self, rid: str, now: datetime | None = None) -> None:
        """Carry the recorded move to its end; a refusal clears it and is raised."""
        now = now or ev.utcnow()
        doc = await self.stores.registrations.find_one({"_id": rid})
        moving = (doc or {}).get("moving")
        if doc is None or not moving:
            return
        source_id, target_id, by = doc["cohort_id"], moving["to"], moving["by"]
        raw = (await self.stores.cohort(source_id)).get("entries", {}).get(rid)
        if raw is not None:  # not yet off the source: copy it over, then take it off
            entry = Entry.from_doc(raw)
            try:
                await self._copy(rid, entry, target_id, now, by)
                await self._take_off(rid, entry, source_id, target_id, now)
            except LedgerError:
                await self.stores.registrations.update_one(
                    {"_id": rid}, {"$unset": {"moving": "", "moving_since": ""}}
                )
                raise
        await self.stores.registrations.update_one(
            {"_id": rid},
            {"$set": {"cohort_id": target_id}, "$unset": {"moving": "", "moving_since": ""}},
        )
        self.service.placed(rid, target_id, doc["program_id"])
        log.info("registration moved", registration_id=rid, to=target_id, by=by)

    async def unfinished(self, older_than: datetime) -> list[str]:
        cursor = self.stores.registrations.find({"moving_since": {"$lt": older_than}}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    async def _copy(self, rid: str, entry: Entry, target_id: str, now: datetime, by: str) -> None:
        def decide(doc: dict[str, Any], ledger: Ledger) -> Change | None:
            if doc.get("cancelled"):
                raise LedgerError("the other cohort was cancelled")
            return Change() if move_in(ledger, rid, entry, now, by) else None

        await self.stores.cohorts.mutate(target_id, decide)

    async def _take_off(
        self, rid: str, entry: Entry, source_id: str, target_id: str, now: datetime
    ) -> None:
        target = await self.stores.cohort(target_id)
        program_doc = await self.stores.program(target["program_id"])
        program = program_spec(program_doc)

        def decide(doc: dict[str, Any], ledger: Ledger) -> Change | None:
            happened = move_out(ledger, rid, entry, now)
            if not happened:
                return None
            ledger.record(happened[1:], now=now, cause="moved_out")
            emit = moved(rid, entry.status, doc, target, program_doc["_id"], program, now)
            emit += event_payloads(happened[1:], doc, program_doc["_id"], program, ledger, now)
            return Change(emit=emit)

        try:
            await self.stores.cohorts.mutate(source_id, decide)
        except LedgerError:
            await self._take_back(rid, entry, target_id, program_doc, now)
            raise

    async def _take_back(
        self, rid: str, entry: Entry, target_id: str, program_doc: dict, now: datetime
    ) -> None:
        program = program_spec(program_doc)

        def decide(doc: dict[str, Any], ledger: Ledger) -> Change | None:
            happened = take_back(ledger, rid, entry, now)
            if not happened:
                return None
            offered = ledger.record(happened[1:], now=now, cause="taken_back")
            return Change(
                emit=event_payloads(offered, doc, program_doc["_id"], program, ledger, now)
            )

        await self.stores.cohorts.mutate(target_id, decide)

    async def _where(self, rid: str) -> dict[str, Any]:
        doc = await self.stores.registrations.find_one({"_id": rid}, {"cohort_id": 1})
        cohort = await self.stores.cohort(doc["cohort_id"])
        ledger = Ledger.from_doc(cohort)
        entry = ledger.get(rid)
        return {
            "registration_id": rid,
            "cohort_id": doc["cohort_id"],
            "status": entry.status,
            "waitlist_position": ledger.position(rid),
        }
