"""A coordinator's changes to a running cohort: cancel it, change its capacity, close or
reopen registration, change its sessions (the rules: domain/controls.py).

Each is one conditional write of the cohort document with the events it causes: the
cohort's own, and each registration's (a seat offered, a withdrawal with the program's
refund for cancellation), which reach the people they concern through notifications
and payments. Repeating a change does nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from registration.domain.controls import (
    CohortChange,
    cancel,
    change_sessions,
    resize,
    set_registration_open,
)
from registration.domain.events import event_payloads, program_spec
from registration.domain.ledger import Ledger
from registration.store import RegistrationStores
from shared.aggregates import Change

log = structlog.get_logger()

Decision = Callable[[dict[str, Any], Ledger], CohortChange | None]


class CohortControls:
    def __init__(self, stores: RegistrationStores) -> None:
        self.stores = stores

    async def cancel(self, cohort_id: str, now: datetime, by: str) -> dict[str, Any]:
        """Everyone still in the cohort is withdrawn and told; money paid goes back as the
        program sets for cancellation (ProgramSpec.cancellation_refund)."""
        doc, changed = await self._apply(
            cohort_id, "cancelled", now, by, lambda c, ledger: cancel(c, ledger, now, by)
        )
        ended = sum(1 for h in changed.happened if h.kind == "cancelled") if changed else 0
        return {"cohort_id": cohort_id, "cancelled_at": doc["cancelled"]["at"], "ended": ended}

    async def set_capacity(
        self, cohort_id: str, capacity: int, now: datetime, by: str
    ) -> dict[str, Any]:
        """New seats go down the waitlist in order, each offered as a freed seat is."""
        doc, changed = await self._apply(
            cohort_id, "capacity", now, by, lambda c, ledger: resize(c, ledger, capacity, now)
        )
        offered = len(changed.happened) if changed else 0
        return {
            "capacity": doc["capacity"],
            "seats_taken": doc["seats_taken"],
            "offered": offered,
        }

    async def set_registration_open(
        self, cohort_id: str, is_open: bool, now: datetime, by: str
    ) -> dict[str, Any]:
        doc, _ = await self._apply(
            cohort_id,
            "registration",
            now,
            by,
            lambda c, _ledger: set_registration_open(c, is_open, now),
        )
        return {"registration_closed": bool(doc.get("registration_closed"))}

    async def set_sessions(
        self, cohort_id: str, sessions: list[dict[str, Any]], now: datetime, by: str
    ) -> dict[str, Any]:
        """Every confirmed participant gets the new sessions with a calendar entry that
        replaces the old one (notifications, from cohort.sessions_changed)."""
        doc, _ = await self._apply(
            cohort_id, "sessions", now, by, lambda c, _ledger: change_sessions(c, sessions, now)
        )
        return {"sessions": doc["sessions"], "sessions_sequence": doc.get("sessions_sequence", 0)}

    async def _apply(
        self, cohort_id: str, what: str, now: datetime, by: str, rule: Decision
    ) -> tuple[dict[str, Any], CohortChange | None]:
        cohort = await self.stores.cohort(cohort_id)
        program_doc = await self.stores.program(cohort["program_id"])
        program = program_spec(program_doc)
        decided: list[CohortChange] = []

        def decide(doc: dict[str, Any], ledger: Ledger) -> Change | None:
            change = rule(doc, ledger)
            decided[:] = [change] if change else []
            if change is None:
                return None
            for h in change.happened:  # a cancellation is the coordinator's step
                mine = h.registration_id if h.kind == "cancelled" else None
                ledger.record([h], now=now, cause=f"cohort_{what}", subject=mine, by=by)
            emit = event_payloads(change.happened, doc, program_doc["_id"], program, ledger, now)
            return Change(set=change.stored, emit=[*change.cohort_events, *emit])

        outcome = await self.stores.cohorts.mutate(cohort_id, decide)
        if outcome.changed:
            log.info("cohort changed", cohort_id=cohort_id, change=what, by=by)
        return outcome.doc, decided[0] if outcome.changed and decided else None
