"""Safety answers given after sign-up (progress's questionnaires) routed as intake's are:
the registration is flagged for a coordinator, the applicant gets the crisis lines at
once and the coordinators are alerted (registration.flagged_for_safety). Never a change
of status: the system routes, it never decides anything about the person."""

from __future__ import annotations

from typing import Any

from registration.domain.events import program_spec, safety_flag
from registration.store import RegistrationStores
from shared import events as ev
from shared.aggregates import Change
from shared.logs import get_logger

log = get_logger(__name__)


async def flag_later_answer(
    stores: RegistrationStores, event: ev.ProgressSafetyAnswered, event_id: str
) -> None:
    rid = event.registration_id
    doc = await stores.registrations.find_one({"_id": rid}, {"cohort_id": 1, "program_id": 1})
    if doc is None:
        log.warning("a safety answer for an unknown (or erased) registration")
        return
    await stores.registrations.update_one(
        {"_id": rid}, {"$set": {"flagged": True, "flagged_later_at": event.answered_at}}
    )
    program = program_spec(await stores.program(doc["program_id"]))
    flag = safety_flag(rid, doc["cohort_id"], doc["program_id"], program)

    def raise_flag(_cohort: dict[str, Any], _ledger: Any) -> Change:
        return Change(emit=[flag])

    # The event's id makes a redelivery a no-op: one flag, one alert, one message.
    await stores.cohorts.mutate(doc["cohort_id"], raise_flag, event_id=event_id)
    log.info("safety answer routed to a coordinator", registration_id=rid)
