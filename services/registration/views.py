"""What registration's pages and coordinators read: open cohorts, an applicant's own
registration, programs, a cohort's registrations, roster and waitlist.

Reads only: nothing here writes, and the routes read through this module, never
through a collection. Statuses come from the cohort's seat ledger, personal fields are
opened for coordinators only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registration.domain.composition import STILL_IN, notice_for
from registration.domain.events import program_spec
from registration.domain.ledger import SEAT_STATUSES, Ledger, Status
from registration.domain.programs import registration_open
from registration.erasure import erasure_state
from registration.store import LEDGER_FIELDS, RegistrationStores, Sealer, is_unverified
from shared.errors import Forbidden, NotFound
from shared.events import utcnow
from shared.export import staff_unnamed
from shared.security import access_token_matches

_INTERNAL = (
    "outbox",
    "inbox",
    "has_outbox",
    "entries",
    "waitlist",
    "joining",
    "payment_instructions",
    "payment_qr",
)


class RegistrationViews:
    def __init__(self, stores: RegistrationStores, sealer: Sealer) -> None:
        self.stores = stores
        self.sealer = sealer

    # --- applicants ------------------------------------------------------------------

    async def open_cohorts(self, now: datetime) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Cohorts taking sign-ups now, each with its program, soonest window first."""
        cursor = self.stores.cohorts.collection.find(
            {"registration_closes_at": {"$gt": now}}, LEDGER_FIELDS
        ).sort("registration_opens_at", 1)
        found = []
        async for cohort in cursor:
            program = await self.stores.programs.get(cohort["program_id"])
            if program is not None and registration_open(cohort, now):
                found.append((cohort, program))
        return found

    async def own_registration(self, registration_id: str, token: str) -> dict[str, Any]:
        doc = await self.stores.registrations.find_one({"_id": registration_id})
        if doc is None or not access_token_matches(token, doc["access_token_hash"]):
            # The same answer for both, so ids cannot be probed.
            raise NotFound("registration_id", "no such registration for this token")
        return doc

    async def export(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Everything registration holds about the applicant's registration, opened: what
        a data export gives them (PIPL art. 45, GDPR art. 15 and 20)."""
        ledger = Ledger.from_doc(await self.stores.cohort(doc["cohort_id"]))
        history = staff_unnamed(self._history(doc, ledger))
        return {
            "registration_id": doc["_id"],
            "cohort_id": doc["cohort_id"],
            "program_id": doc["program_id"],
            "signed_up_at": doc["created_at"],
            "email_verified_at": doc.get("verified_at"),
            "status": _status(doc, ledger),
            "history": history,
            "language": doc.get("language"),
            "timezone": doc.get("timezone"),
            "age_attested": doc.get("age_attested"),
            "single_gender_preference": doc.get("single_gender_preference"),
            "scholarship_requested": doc.get("scholarship_requested"),
            **self.sealer.personal(doc),
            "erasure": erasure_state(doc["_id"], doc["erasure"]) if doc.get("erasure") else None,
        }

    async def standing(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The registration's status, waitlist position and deadline, from its ledger."""
        if is_unverified(doc):
            return {"status": Status.unverified, "position": None, "expires_at": doc["verify_by"]}
        cohort = await self.stores.cohorts.collection.find_one(
            {"_id": doc["cohort_id"]},
            {
                f"entries.{doc['_id']}": 1,
                "waitlist": 1,
                "capacity": 1,
                "hold_seconds": 1,
                "offer_seconds": 1,
                "composition": 1,
                "cancelled": 1,
            },
        )
        if cohort is None:
            raise NotFound("cohort_id", "no such cohort")
        ledger = Ledger.from_doc(cohort)
        if doc["_id"] not in ledger.entries:
            return {"status": Status.submitted, "position": None, "expires_at": None}
        entry = ledger.get(doc["_id"])
        return {
            "status": entry.status,
            "position": ledger.position(doc["_id"]),
            "expires_at": entry.expires_at,
            "composition_notice": await self._composition_notice(cohort, doc, entry.status),
            "cohort_cancelled": bool(cohort.get("cancelled")),
        }

    async def _composition_notice(
        self, cohort: dict[str, Any], doc: dict[str, Any], status: Status
    ) -> dict[str, Any] | None:
        """The open window of an applicant whose wish for a single-gender group the
        cohort's make-up does not meet (domain/composition.py)."""
        notice = notice_for(cohort, doc["_id"], utcnow()) if status in STILL_IN else None
        if notice is None:
            return None
        program = program_spec(await self.stores.program(doc["program_id"]))
        return {**notice, "refundable": program.composition_refundable}

    async def own_joining(self, doc: dict[str, Any]) -> dict[str, Any]:
        """How to join, for a participant whose place is confirmed; nobody else."""
        if (await self.standing(doc))["status"] != Status.confirmed:
            raise Forbidden("status", "how to join is shown once the place is confirmed")
        return await self.joining(doc["cohort_id"])

    async def how_to_pay(self, program_id: str) -> dict[str, Any]:
        """The organisation's own words on paying, per language, and whether a QR code is set."""
        program = await self.stores.program(program_id)
        return {
            **(program.get("payment_instructions") or {}),
            "qr": bool(program.get("payment_qr")),
        }

    async def payment_qr(self, program_id: str) -> tuple[bytes, str]:
        qr = (await self.stores.program(program_id)).get("payment_qr")
        if not qr:
            raise NotFound("qr", "no payment QR code for this program")
        return bytes(qr["data"]), qr["type"]

    # --- coordinators ----------------------------------------------------------------

    async def joining(self, cohort_id: str) -> dict[str, Any]:
        found = self.sealer.open_joining(await self.stores.cohort(cohort_id))
        if found is None:
            raise NotFound("joining", "no joining details for this cohort yet")
        return found

    async def programs(self) -> list[dict[str, Any]]:
        cursor = self.stores.programs.collection.find({}, {"outbox": 0, "inbox": 0})
        return [program_out(p) async for p in cursor]

    async def program(self, program_id: str) -> dict[str, Any]:
        return program_out(await self.stores.program(program_id))

    async def registrations(
        self, cohort_id: str, statuses: list[Status] | None, flagged: bool | None
    ) -> list[dict[str, Any]]:
        """A cohort's registrations in the order they came, filtered by status and flag."""
        ledger = Ledger.from_doc(await self.stores.cohort(cohort_id))
        query: dict[str, Any] = {"cohort_id": cohort_id}
        if flagged is not None:
            query["flagged"] = flagged
        out = []
        async for doc in self.stores.registrations.find(query).sort("created_at", 1):
            if doc.get("already_registered") and not doc["flagged"]:
                continue  # a second sign-up of a registered address: its owner was told
            if not statuses or _status(doc, ledger) in statuses:
                out.append(self._for_coordinator(doc, ledger))
        return out

    async def registration_doc(self, registration_id: str) -> dict[str, Any]:
        doc = await self.stores.registrations.find_one({"_id": registration_id})
        if doc is None:
            raise NotFound("registration_id", "no such registration")
        return doc

    async def record(self, registration_id: str) -> dict[str, Any]:
        """One registration as coordinators see it, with its history."""
        doc = await self.stores.registrations.find_one({"_id": registration_id})
        if doc is None:
            raise NotFound("registration_id", "no such registration")
        ledger = Ledger.from_doc(await self.stores.cohort(doc["cohort_id"]))
        return self._for_coordinator(doc, ledger)

    async def roster(self, cohort_id: str) -> dict[str, Any]:
        ledger = Ledger.from_doc(await self.stores.cohort(cohort_id))
        holders = [rid for rid, e in ledger.entries.items() if e.status in SEAT_STATUSES]
        return {
            "cohort_id": cohort_id,
            "capacity": ledger.capacity,
            "seats_taken": ledger.seats_taken,
            "seats": await self._in_order(holders, ledger),
        }

    async def waitlist(self, cohort_id: str) -> dict[str, Any]:
        ledger = Ledger.from_doc(await self.stores.cohort(cohort_id))
        return {"cohort_id": cohort_id, "waitlist": await self._in_order(ledger.waitlist, ledger)}

    async def _in_order(self, ids: list[str], ledger: Ledger) -> list[dict[str, Any]]:
        cursor = self.stores.registrations.find({"_id": {"$in": list(ids)}})
        docs = {d["_id"]: d async for d in cursor}
        return [self._for_coordinator(docs[r], ledger) for r in ids if r in docs]

    def _history(self, doc: dict[str, Any], ledger: Ledger) -> list[dict[str, Any]]:
        """The registration's steps: when, what, to which status, who, and why (opened)."""
        entry = ledger.entries.get(doc["_id"])
        steps = []
        for step in entry.history if entry else ():
            out = step.to_doc()
            if step.why:
                out["why"] = self.sealer.open(step.why, "reason", doc)
            steps.append(out)
        return steps

    def _for_coordinator(self, doc: dict[str, Any], ledger: Ledger) -> dict[str, Any]:
        entry = ledger.entries.get(doc["_id"])
        return {
            "registration_id": doc["_id"],
            "cohort_id": doc["cohort_id"],
            "status": _status(doc, ledger),
            "waitlist_position": ledger.position(doc["_id"]),
            "expires_at": entry.expires_at if entry else None,
            "flagged_for_safety": doc["flagged"],
            "submitted_at": doc["created_at"],
            "scholarship_requested": doc["scholarship_requested"],
            "age_attested": doc["age_attested"],
            "single_gender_preference": doc["single_gender_preference"],
            "language": doc["language"],
            "history": self._history(doc, ledger),
            "erasure": erasure_state(doc["_id"], doc["erasure"]) if doc.get("erasure") else None,
            **self.sealer.personal(doc),
        }


def _status(doc: dict[str, Any], ledger: Ledger) -> Status:
    entry = ledger.entries.get(doc["_id"])
    if entry is not None:
        return entry.status
    return Status.unverified if is_unverified(doc) else Status.submitted


def program_out(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in _INTERNAL and k != "_id"}
    return {"program_id": doc["_id"], **out}


def cohort_out(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in _INTERNAL and k != "_id"}
    if out.get("composition"):  # how many were told, never who
        out["composition"] = composition_out(out["composition"])
    return {"cohort_id": doc["_id"], **out}


def composition_out(stored: dict[str, Any]) -> dict[str, Any]:
    """A cohort's make-up as the API shows it: how many were told, never who."""
    return {
        "composition": stored["kind"],
        "set_at": stored["set_at"],
        "told": len(stored.get("unmet", ())) + len(stored.get("late") or {}),
    }
