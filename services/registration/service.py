"""Registration's use cases: what the API, the handlers and the due work call.

Every status change is one decision on the cohort's ledger (domain/ledger.py),
written with the events it causes in one write of the cohort document. A sign-up
spans two documents (the registration, then its place on the ledger): each step is
idempotent, a retry with the same Idempotency-Key resumes it, and the reconciler
finishes any a crash left half-way.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from registration.domain.composition import Wish, latecomer
from registration.domain.controls import admit_to_cancelled
from registration.domain.events import (
    event_payloads,
    program_spec,
    signed_up,
    stored_contact,
)
from registration.domain.ledger import Ledger, LedgerError, Status
from registration.store import (
    LEDGER_FIELDS,
    RegistrationStores,
    Sealer,
    is_unverified,
)
from shared import events as ev
from shared.aggregates import Change
from shared.errors import NotFound
from shared.logs import get_logger

log = get_logger(__name__)


ADMISSION_MARK = "admission"
PLACEMENTS_REMEMBERED = 10_000


class OffLedger(LedgerError):
    """Not on the cohort's ledger: not yet admitted, or moved to another cohort."""


class RegistrationService:
    def __init__(
        self,
        stores: RegistrationStores,
        sealer: Sealer,
        *,
        cache_s: float = 2.0,
    ) -> None:
        self.stores = stores
        self.sealer = sealer
        # Programs and cohort settings change rarely (a coordinator's edit); under a
        # sign-up rush each request would otherwise read them again.
        self.cache_s = cache_s
        self._cache: dict[tuple[str, str], tuple[float, asyncio.Future]] = {}
        self._placements: OrderedDict[str, tuple[str, str]] = OrderedDict()

    async def _cached(self, kind: str, key: str, load, fresh: bool = False) -> dict[str, Any]:
        """A short-lived cache with one load in flight per key (no stampede on expiry)."""
        now = time.monotonic()
        hit = self._cache.get((kind, key))
        if hit is not None and not fresh and now - hit[0] < self.cache_s:
            return await hit[1]
        task = asyncio.ensure_future(load())
        self._cache[(kind, key)] = (now, task)
        try:
            return await task
        except BaseException:
            self._cache.pop((kind, key), None)
            raise

    async def cohort_settings(self, cohort_id: str, fresh: bool = False) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            doc = await self.stores.cohorts.collection.find_one({"_id": cohort_id}, LEDGER_FIELDS)
            if doc is None:
                raise NotFound("cohort_id", "no such cohort")
            return doc

        return await self._cached("cohort", cohort_id, load, fresh)

    async def program_cached(self, program_id: str) -> dict[str, Any]:
        return await self._cached("program", program_id, lambda: self.stores.program(program_id))

    # --- sign-up ---------------------------------------------------------------------

    async def admit(
        self, doc: dict[str, Any], contact: ev.Contact, now: datetime
    ) -> tuple[Status, int | None, datetime | None, bool]:
        """Put a stored registration on its cohort's ledger (idempotent)."""
        rid = doc["_id"]
        program_doc = await self.program_cached(doc["program_id"])
        program = program_spec(program_doc)
        needs_review = program.approval_required or doc["flagged"]
        wish = self._single_gender_wish(doc)

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change | None:
            price = {"price_minor": program.price.amount_minor, "currency": program.price.currency}
            if cohort.get("cancelled") and rid not in ledger.entries:
                # Verified after the cohort was cancelled: on its ledger as ended, and
                # told so, as everyone in it was.
                happened = admit_to_cancelled(ledger, rid, now, needs_review, **price)
                emit = event_payloads(happened, cohort, program_doc["_id"], program, ledger, now)
                return Change(emit=emit)
            happened = ledger.admit(rid, now=now, needs_review=needs_review, **price)
            if not happened:
                return None
            ledger.record(happened, now=now, cause="signed_up", subject=rid, by="applicant")
            emit = signed_up(
                rid,
                cohort,
                program_doc["_id"],
                program,
                contact,
                scholarship_requested=doc["scholarship_requested"],
                now=now,
            )
            emit += event_payloads(happened, cohort, program_doc["_id"], program, ledger, now)
            late = latecomer(cohort, rid, wish.gender, program, now) if wish else None
            if late is None:
                return Change(emit=emit)
            return Change(set={"composition": late.stored}, emit=emit + late.notices)

        self.placed(rid, doc["cohort_id"], doc["program_id"])
        outcome = await self.stores.cohorts.mutate(doc["cohort_id"], decide)
        ledger = outcome.state
        entry = ledger.get(rid)
        return entry.status, ledger.position(rid), entry.expires_at, outcome.changed

    def _single_gender_wish(self, doc: dict[str, Any]) -> Wish | None:
        """The applicant's wish for a single-gender group, with their gender (opened
        here, kept nowhere); None when they did not ask for one."""
        if not doc.get("single_gender_preference"):
            return None
        return Wish(self.sealer.open_gender(doc))

    async def placement(self, registration_id: str, fresh: bool = False) -> tuple[str, str]:
        """The registration's cohort and program, remembered: a registration moves only
        when a coordinator moves it (moves.py), and a replica that remembers the cohort
        it left finds it off that ledger and looks again (``change``)."""
        known = None if fresh else self._placements.get(registration_id)
        if known is not None:
            return known
        doc = await self.stores.registrations.find_one(
            {"_id": registration_id}, {"cohort_id": 1, "program_id": 1}
        )
        if doc is None:
            raise NotFound("registration_id", "no such registration")
        return self.placed(registration_id, doc["cohort_id"], doc["program_id"])

    def placed(self, registration_id: str, cohort_id: str, program_id: str) -> tuple[str, str]:
        self._placements[registration_id] = (cohort_id, program_id)
        while len(self._placements) > PLACEMENTS_REMEMBERED:
            self._placements.popitem(last=False)
        return cohort_id, program_id

    # --- changes of status -------------------------------------------------------------

    async def change(
        self,
        registration_id: str,
        step: str,
        now: datetime,
        *,
        reason: str | None = None,
        event_id: str | None = None,
        by: str | None = None,
    ) -> Status | None:
        placed = await self.placement(registration_id)
        kw = {"reason": reason, "event_id": event_id, "by": by}
        try:
            return await self._change_on(placed, registration_id, step, now, **kw)
        except OffLedger:
            moved = await self.placement(registration_id, fresh=True)
            if moved == placed:
                raise
            return await self._change_on(moved, registration_id, step, now, **kw)

    async def _change_on(
        self,
        placed: tuple[str, str],
        registration_id: str,
        step: str,
        now: datetime,
        *,
        reason: str | None,
        event_id: str | None,
        by: str | None,
    ) -> Status | None:
        cohort_id, program_id = placed
        program_doc = await self.program_cached(program_id)
        sealed_reason = self.sealer.seal(reason, "reason", registration_id) if reason else None

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change | None:
            if registration_id not in ledger.entries:
                raise OffLedger("this registration is not on the cohort's ledger yet")
            match step:
                case "approve":
                    happened = ledger.approve(registration_id, now=now)
                case "reject":
                    happened = ledger.reject(registration_id, now=now, reason=sealed_reason)
                case "withdraw":
                    happened = ledger.withdraw(registration_id, now=now)
                case "accept_offer":
                    happened = ledger.accept_offer(registration_id, now=now)
                case "consent_signed":
                    happened = ledger.consent_signed(registration_id, now=now)
                case "payment_settled":
                    happened = ledger.payment_settled(registration_id, now=now)
                case "paid":
                    happened = ledger.payment_settled(registration_id, now=now, paid=True)
                case "lapse_withdrawn":
                    happened = ledger.lapse(registration_id, now=now, withdrawn=True)
                case "lapse_expired":
                    happened = ledger.lapse(registration_id, now=now, withdrawn=False)
                case _:
                    raise ValueError(step)
            if not happened:
                return None
            ledger.record(
                happened, now=now, cause=step, subject=registration_id, by=by, why=sealed_reason
            )
            program = program_spec(program_doc)
            return Change(
                emit=event_payloads(happened, cohort, program_doc["_id"], program, ledger, now),
                result=ledger.get(registration_id).status,
            )

        outcome = await self.stores.cohorts.mutate(cohort_id, decide, event_id=event_id)
        if outcome.result is not None:
            return outcome.result
        return outcome.state.get(registration_id).status

    async def expire_due(self, cohort_id: str) -> None:
        now = datetime.now(UTC)
        program_doc = await self.program_cached(
            (await self.cohort_settings(cohort_id))["program_id"]
        )

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change | None:
            happened = ledger.record(ledger.expire_due(now=now), now=now, cause="expired")
            if not happened and cohort.get("next_due_at") == ledger.next_due():
                return None
            program = program_spec(program_doc)
            return Change(
                emit=event_payloads(happened, cohort, program_doc["_id"], program, ledger, now)
            )

        await self.stores.cohorts.mutate(cohort_id, decide)

    async def cohorts_due(self, now: datetime) -> list[str]:
        cursor = self.stores.cohorts.collection.find({"next_due_at": {"$lte": now}}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    # --- reconciliation ---------------------------------------------------------------

    async def unadmitted(self, older_than: datetime, limit: int = 100) -> list[str]:
        """Verified registrations missing from their cohort's ledger (a crash between
        the two writes of a verification, and no retry from the applicant), of any age.

        The reconciler keeps a mark: every registration verified before it is on its
        ledger. Each look starts at the mark and moves it up to the first registration
        still missing (or to ``older_than`` when none is), so a look costs the
        registrations since the mark, however old the oldest orphan is.
        """
        mark = await self.stores.reconciler.find_one({"_id": ADMISSION_MARK})
        since = mark["checked_until"] if mark else datetime.min.replace(tzinfo=UTC)
        window = {"$gte": since, "$lt": older_than}
        scanned = [
            reg
            async for reg in self.stores.registrations.find(
                {"verified_at": window}, {"_id": 1, "cohort_id": 1, "verified_at": 1}
            )
        ]
        by_cohort: dict[str, list[str]] = {}
        for reg in scanned:
            by_cohort.setdefault(reg["cohort_id"], []).append(reg["_id"])
        missing: set[str] = set()
        for cohort_id, ids in by_cohort.items():
            cohort = await self.stores.cohorts.collection.find_one(
                {"_id": cohort_id}, {f"entries.{rid}.status": 1 for rid in ids}
            )
            on_ledger = set((cohort or {}).get("entries", {}))
            missing |= {rid for rid in ids if rid not in on_ledger}
        orphans = sorted(
            (reg for reg in scanned if reg["_id"] in missing), key=lambda r: r["verified_at"]
        )
        checked_until = orphans[0]["verified_at"] if orphans else older_than
        if checked_until > since:
            # $max: replicas looking at once only ever move the mark forward.
            await self.stores.reconciler.update_one(
                {"_id": ADMISSION_MARK}, {"$max": {"checked_until": checked_until}}, upsert=True
            )
        return [reg["_id"] for reg in orphans[:limit]]

    async def finish_admission(self, registration_id: str) -> None:
        doc = await self.stores.registrations.find_one({"_id": registration_id})
        if doc is None or is_unverified(doc) or doc.get("moving"):
            return  # a move under way is finished by its own reconciler (moves.py)
        contact = stored_contact(doc, self.sealer.personal(doc), None)
        *_, admitted_now = await self.admit(doc, contact, datetime.now(UTC))
        if admitted_now:
            log.info("finished an interrupted sign-up", registration_id=registration_id)
