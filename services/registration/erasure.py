"""Erasure of an applicant's data, asked by the applicant or by a coordinator for them.

Registration leaves the group for them first (a withdrawal, with what the refund
policy says), then publishes ``registration.erasure_requested`` and erases its own
copy: the sealed personal fields, the answers, the email's blind index, a rejection
reason, the Idempotency-Keys. What stays is what the seat ledger needs (the entry's
status and history of who moved it), the access token's hash (so the applicant can
follow the erasure) and the erasure's own record. The other services report back
with ``<family>.erased`` (shared/erasure.py); the state shows who has finished.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from registration.domain.events import event_payloads, program_spec
from registration.domain.ledger import CLOSED_STATUSES, Ledger
from registration.service import RegistrationService
from shared import events as ev
from shared.aggregates import Change
from shared.erasure import ERASING_SERVICES
from shared.errors import NotFound
from shared.logs import get_logger

log = get_logger(__name__)

PERSONAL = {
    "sealed": {},
    "safety_answers": None,
    "intake_answers": None,
    "email_index": None,
    "flagged": None,
    "scholarship_requested": None,
    "single_gender_preference": None,
    "age_attested": None,
}
UNFINISHED_AFTER = timedelta(seconds=30)


class Erasures:
    def __init__(self, service: RegistrationService) -> None:
        self.service = service
        self.registrations = service.stores.registrations

    async def request(self, doc: dict[str, Any], by: str, now: datetime) -> dict[str, Any]:
        """Start (or carry on with) erasing ``doc``'s registration; idempotent."""
        rid = doc["_id"]
        if doc.get("erasure") is None:
            await self.registrations.update_one(
                {"_id": rid, "erasure": None},
                {
                    "$set": {
                        "erasure": {"requested_at": now, "by": by, "done": {}},
                        "erasure_pending_since": now,
                    }
                },
            )
            log.info("erasure requested", registration_id=rid, by=by)
        await self._carry_out(rid, by, now)
        return await self.state(rid)

    async def _carry_out(self, rid: str, by: str, now: datetime) -> None:
        cohort_id, program_id = await self.service.placement(rid)
        program_doc = await self.service.program_cached(program_id)

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change:
            emit: list[ev.EventData] = []
            entry = ledger.entries.get(rid)
            if entry is not None and entry.status not in CLOSED_STATUSES:
                happened = ledger.withdraw(rid, now=now)
                ledger.record(happened, now=now, cause="withdraw", subject=rid, by=by)
                program = program_spec(program_doc)
                emit += event_payloads(happened, cohort, program_id, program, ledger, now)
            if rid in ledger.entries:  # the coordinators' words about them go too
                kept = ledger.entries[rid]
                history = tuple(replace(step, why=None) for step in kept.history)
                ledger.entries[rid] = replace(kept, reason=None, history=history)
            emit.append(
                ev.RegistrationErasureRequested(
                    registration_id=rid, cohort_id=cohort_id, requested_at=now
                )
            )
            return Change(emit=emit)

        await self.service.stores.cohorts.mutate(cohort_id, decide, event_id=f"erase:{rid}")
        await self.service.stores.idempotency.delete_many({"registration_id": rid})
        await self.registrations.update_one(
            {"_id": rid},
            {
                "$set": {
                    **PERSONAL,
                    "dedupe_key": f"erased:{rid}",
                    "erasure.erased_here_at": now,
                    "erasure_pending_since": None,
                }
            },
        )

    async def completed(self, done: ev.ErasureCompleted) -> None:
        """Another service has erased what it held (a redelivery changes nothing)."""
        await self.registrations.update_one(
            {"_id": done.registration_id},
            {"$set": {f"erasure.done.{done.service}": done.completed_at}},
        )

    async def state(self, registration_id: str) -> dict[str, Any]:
        doc = await self.registrations.find_one({"_id": registration_id}, {"erasure": 1})
        if doc is None or doc.get("erasure") is None:
            raise NotFound("registration_id", "no erasure was asked for this registration")
        return erasure_state(registration_id, doc["erasure"])

    # --- finishing what a crash interrupted ------------------------------------------

    async def unfinished(self, now: datetime) -> list[str]:
        cursor = self.registrations.find(
            {"erasure_pending_since": {"$lte": now - UNFINISHED_AFTER}}, {"_id": 1}
        )
        return [d["_id"] async for d in cursor.limit(100)]

    async def finish(self, registration_id: str) -> None:
        doc = await self.registrations.find_one({"_id": registration_id}, {"erasure": 1})
        if doc is not None and doc.get("erasure"):
            await self._carry_out(
                registration_id, doc["erasure"]["by"], doc["erasure"]["requested_at"]
            )


def erasure_state(registration_id: str, erasure: dict[str, Any]) -> dict[str, Any]:
    done = {"registration": erasure.get("erased_here_at"), **erasure.get("done", {})}
    services = {s: done.get(s) for s in ("registration", *ERASING_SERVICES)}
    return {
        "registration_id": registration_id,
        "requested_at": erasure["requested_at"],
        "services": services,
        "complete": all(services.values()),
    }
