"""Coordinators setting up programs and cohorts: create and edit.

A new cohort starts with an empty seat ledger sized by its capacity (or the program's);
editing a cohort never touches the ledger, only its window, durations and sessions.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from registration.domain.composition import Composition, set_composition
from registration.domain.events import cohort_ref, program_spec
from registration.domain.ledger import Ledger
from registration.domain.programs import (
    IntakeProblem,
    Joining,
    PaymentInstructions,
    ProgramSpec,
    qr_image_type,
)
from registration.domain.schedule import CohortSpec, SessionSpec
from registration.store import RegistrationStores, Sealer
from registration.views import composition_out
from shared import events as ev
from shared.aggregates import Change

log = structlog.get_logger()


class ProgramAdmin:
    def __init__(self, stores: RegistrationStores, sealer: Sealer) -> None:
        self.stores = stores
        self.sealer = sealer

    async def create_program(self, spec: ProgramSpec) -> dict[str, Any]:
        program_id = str(uuid.uuid4())
        await self.stores.programs.create({"_id": program_id, **spec.model_dump(mode="python")})
        return await self.stores.program(program_id)

    async def edit_program(self, program_id: str, spec: ProgramSpec) -> dict[str, Any]:
        await self.stores.program(program_id)
        outcome = await self.stores.programs.mutate(
            program_id, lambda _doc, _state: Change(set=spec.model_dump(mode="python"))
        )
        return outcome.doc

    async def create_cohort(self, program_id: str, spec: CohortSpec) -> list[dict[str, Any]]:
        """The cohort, or, for a program signed up for per session, one cohort per
        session (each labelled with its day)."""
        program = program_spec(await self.stores.program(program_id))
        specs = [spec]
        if program.sign_up_for == "session" and len(spec.sessions) > 1:
            specs = [
                spec.model_copy(
                    update={"sessions": [s], "recurrence": None, "label": _day_label(spec, s)}
                )
                for s in spec.sessions
            ]
        return [await self._create_one(program_id, program, one) for one in specs]

    async def _create_one(
        self, program_id: str, program: ProgramSpec, spec: CohortSpec
    ) -> dict[str, Any]:
        cohort_id = str(uuid.uuid4())
        data = spec.model_dump(mode="python")
        data["capacity"] = spec.capacity or program.capacity
        ledger = Ledger(
            capacity=data["capacity"],
            hold=timedelta(seconds=spec.hold_seconds),
            offer=timedelta(seconds=spec.offer_seconds),
        )
        await self.stores.cohorts.create(
            {"_id": cohort_id, "program_id": program_id, **data, **ledger.to_doc()}
        )
        return await self.stores.cohort(cohort_id)

    async def edit_cohort(self, cohort_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        await self.stores.cohort(cohort_id)

        def decide(doc: dict[str, Any], _ledger: Any) -> Change:
            merged = {**doc, **changes}
            if merged["registration_closes_at"] <= merged["registration_opens_at"]:
                raise IntakeProblem("registration_closes_at", "must be after registration_opens_at")
            return Change(set=changes)

        return (await self.stores.cohorts.mutate(cohort_id, decide)).doc

    async def set_joining(self, cohort_id: str, joining: Joining, now: datetime) -> dict[str, Any]:
        """How the cohort's participants join: replaced whole, sealed to the cohort, and
        sent (sealed on the wire) to notifications, which tells the confirmed."""
        cohort = await self.stores.cohort(cohort_id)
        program = program_spec(await self.stores.program(cohort["program_id"]))
        details = joining.model_dump(mode="json", exclude_none=True)
        sealed = self.sealer.seal_joining(cohort_id, details)

        def decide(doc: dict[str, Any], _ledger: Any) -> Change | None:
            if self.sealer.open_joining(doc) == details:
                return None  # saved again unchanged: nobody is told twice
            sequence = doc.get("sessions_sequence", 0) + 1
            told = ev.CohortJoiningChanged(
                cohort_id=cohort_id,
                program_id=doc["program_id"],
                occurred_at=now,
                joining=ev.JoiningDetails(**details),
                cohort=cohort_ref({**doc, "sessions_sequence": sequence}, program),
                sequence=sequence,
            )
            return Change(set={"joining": sealed, "sessions_sequence": sequence}, emit=[told])

        await self.stores.cohorts.mutate(cohort_id, decide)
        return details

    async def set_composition(
        self, cohort_id: str, composition: Composition, now: datetime, by: str
    ) -> dict[str, Any]:
        """The cohort's gender make-up, once known: everyone still in it whose wish for a
        single-gender group it does not meet is told, and may withdraw with the program's
        refund for that case until the window ends (domain/composition.py)."""
        cohort = await self.stores.cohort(cohort_id)
        program = program_spec(await self.stores.program(cohort["program_id"]))
        wishes = await self._single_gender_wishes(cohort_id)

        def decide(doc: dict[str, Any], ledger: Ledger) -> Change | None:
            decided = set_composition(doc, ledger, composition, wishes, program, now)
            if decided is None:
                return None
            return Change(set={"composition": {**decided.stored, "by": by}}, emit=decided.notices)

        outcome = await self.stores.cohorts.mutate(cohort_id, decide)
        shown = composition_out(outcome.doc["composition"])
        if outcome.changed:
            log.info("cohort composition set", cohort_id=cohort_id, by=by, told=shown["told"])
        return shown

    async def _single_gender_wishes(self, cohort_id: str) -> dict[str, str | None]:
        """Each registration of the cohort that asked for a single-gender group, with the
        applicant's gender (opened here, kept nowhere)."""
        found = self.stores.registrations.find(
            {"cohort_id": cohort_id, "single_gender_preference": True},
            {"sealed.gender": 1, "sealed_v": 1},
        )
        wishes: dict[str, str | None] = {}
        async for doc in found:
            wishes[doc["_id"]] = self.sealer.open_gender(doc)
        return wishes

    async def set_payment_instructions(
        self, program_id: str, instructions: PaymentInstructions
    ) -> dict[str, Any]:
        await self.stores.program(program_id)
        given = instructions.model_dump(exclude_none=True)
        change = Change(set={"payment_instructions": given})
        await self.stores.programs.mutate(program_id, lambda _doc, _state: change)
        return given

    async def set_payment_qr(self, program_id: str, image: bytes | None) -> None:
        """The organisation's payment QR code (a PNG or JPEG), or None to take it away."""
        await self.stores.program(program_id)
        qr = None if image is None else {"type": qr_image_type(image), "data": image}
        change = Change(set={"payment_qr": qr})
        await self.stores.programs.mutate(program_id, lambda _doc, _state: change)


def _day_label(spec: CohortSpec, session: SessionSpec) -> str:
    day = session.starts_at.astimezone(ZoneInfo(session.timezone)).date().isoformat()
    return f"{spec.label} · {day}" if spec.label else day
