"""Registration's use cases: what the API, the handlers and the due work call.

Every status change is one decision on the cohort's ledger (domain/ledger.py),
written with the events it causes in one write of the cohort document. A sign-up
spans two documents (the registration, then its place on the ledger): each step is
idempotent, a retry with the same Idempotency-Key resumes it, and the reconciler
finishes any a crash left half-way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.errors import DuplicateKeyError

from registration.domain.events import contact_of, event_payloads, program_spec, signed_up
from registration.domain.ledger import Ledger, LedgerError, Status
from registration.domain.programs import (
    Application,
    check_application,
    registration_open,
)
from registration.store import BOUND, LEDGER_FIELDS, RegistrationStores, Sealer
from shared import events as ev
from shared.aggregates import Change
from shared.errors import Conflict, NotFound
from shared.logs import get_logger
from shared.security import hash_access_token, new_access_token

log = get_logger(__name__)


@dataclass
class SignUpResult:
    registration_id: str
    status: Status
    access_token: str
    position: int | None
    hold_expires_at: datetime | None
    crisis_resources: list[dict[str, Any]]
    replayed: bool = False


def request_fingerprint(application: Application) -> str:
    canonical = json.dumps(application.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


ADMISSION_MARK = "admission"
PLACEMENTS_REMEMBERED = 10_000

# Cohort fields a sign-up reads; the ledger and outbox can be large and are left out.


class RegistrationService:
    def __init__(self, stores: RegistrationStores, sealer: Sealer, *, cache_s: float = 2.0) -> None:
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

    async def sign_up(
        self, cohort_id: str, application: Application, idempotency_key: str, now: datetime
    ) -> SignUpResult:
        cohort = await self.cohort_settings(cohort_id)
        if not registration_open(
            cohort["registration_opens_at"], cohort["registration_closes_at"], now
        ):
            raise Conflict("cohort_id", "registration for this cohort is not open")
        program_doc = await self.program_cached(cohort["program_id"])
        program = program_spec(program_doc)
        first = min(cohort["sessions"], key=lambda s: s["starts_at"])
        first_session = first["starts_at"].astimezone(ZoneInfo(first["timezone"]))
        flagged = check_application(
            application, program, first_session=first_session, today=now.date()
        )
        key_id = hashlib.sha256(f"{cohort_id}\n{idempotency_key}".encode()).hexdigest()
        registration_id, token, existing = await self._take_key(
            key_id, request_fingerprint(application), now
        )

        doc = self.sealer.registration_doc(
            registration_id=registration_id,
            cohort_id=cohort_id,
            program_id=program_doc["_id"],
            application=application,
            flagged=flagged,
            access_token_hash=hash_access_token(token),
            now=now,
        )
        try:
            await self.stores.registrations.insert_one(doc)
        except DuplicateKeyError as exc:
            stored = await self.stores.registrations.find_one({"_id": registration_id})
            if stored is None:  # the same email, another registration of this cohort
                if existing is None:
                    await self.stores.idempotency.delete_one({"_id": key_id})
                raise Conflict("email", "this email is already registered for this cohort") from exc
            doc = stored

        outcome = await self.admit(doc, contact_of(application, token), now)
        entry_status, position, hold_expires_at, _ = outcome
        return SignUpResult(
            registration_id=registration_id,
            status=entry_status,
            access_token=token,
            position=position,
            hold_expires_at=hold_expires_at,
            crisis_resources=[r.model_dump() for r in program.crisis_resources] if flagged else [],
            replayed=existing is not None,
        )

    async def _take_key(
        self, key_id: str, fingerprint: str, now: datetime
    ) -> tuple[str, str, dict[str, Any] | None]:
        """The registration id and access token for an Idempotency-Key: new ones when the
        key is new, the first request's when it is a retry of the same request."""
        # Insert first: a new key (the common case) costs one write and no read.
        registration_id = str(uuid.uuid4())
        token = new_access_token()
        try:
            await self.stores.idempotency.insert_one(
                {
                    "_id": key_id,
                    "fingerprint": fingerprint,
                    "registration_id": registration_id,
                    "sealed_v": BOUND,
                    "token": self.sealer.seal(token, "access_token", key_id),
                    "created_at": now,
                }
            )
            return registration_id, token, None
        except DuplicateKeyError:
            existing = await self.stores.idempotency.find_one({"_id": key_id})
        if existing is None:  # its sign-up failed and released the key meanwhile
            raise Conflict("Idempotency-Key", "this key is in use; retry")
        if existing["fingerprint"] != fingerprint:
            raise Conflict(
                "Idempotency-Key", "this Idempotency-Key was used with a different request"
            )
        token = self.sealer.open(existing["token"], "access_token", existing)
        return existing["registration_id"], token, existing

    async def admit(
        self, doc: dict[str, Any], contact: ev.Contact, now: datetime
    ) -> tuple[Status, int | None, datetime | None, bool]:
        """Put a stored registration on its cohort's ledger (idempotent)."""
        rid = doc["_id"]
        program_doc = await self.program_cached(doc["program_id"])
        program = program_spec(program_doc)
        needs_review = program.approval_required or doc["flagged"]

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change | None:
            happened = ledger.admit(
                rid,
                now=now,
                needs_review=needs_review,
                price_minor=program.price.amount_minor,
                currency=program.price.currency,
            )
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
                flagged=doc["flagged"],
                now=now,
            )
            emit += event_payloads(happened, cohort, program_doc["_id"], program, ledger, now)
            return Change(emit=emit)

        self._placed(rid, doc["cohort_id"], doc["program_id"])
        outcome = await self.stores.cohorts.mutate(doc["cohort_id"], decide)
        ledger = outcome.state
        entry = ledger.get(rid)
        return entry.status, ledger.position(rid), entry.expires_at, outcome.changed

    async def placement(self, registration_id: str) -> tuple[str, str]:
        """The registration's cohort and program (a registration never moves: remembered)."""
        known = self._placements.get(registration_id)
        if known is not None:
            return known
        doc = await self.stores.registrations.find_one(
            {"_id": registration_id}, {"cohort_id": 1, "program_id": 1}
        )
        if doc is None:
            raise NotFound("registration_id", "no such registration")
        return self._placed(registration_id, doc["cohort_id"], doc["program_id"])

    def _placed(self, registration_id: str, cohort_id: str, program_id: str) -> tuple[str, str]:
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
        cohort_id, program_id = await self.placement(registration_id)
        program_doc = await self.program_cached(program_id)
        sealed_reason = self.sealer.seal(reason, "reason", registration_id) if reason else None

        def decide(cohort: dict[str, Any], ledger: Ledger) -> Change | None:
            if registration_id not in ledger.entries:
                raise LedgerError("this registration is not on the cohort's ledger yet")
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
                case "lapse_withdrawn":
                    happened = ledger.lapse(registration_id, now=now, withdrawn=True)
                case "lapse_expired":
                    happened = ledger.lapse(registration_id, now=now, withdrawn=False)
                case _:
                    raise ValueError(step)
            if not happened:
                return None
            ledger.record(happened, now=now, cause=step, subject=registration_id, by=by)
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
        """Registrations stored but missing from their cohort's ledger (a crash between
        the two writes of a sign-up, and no retry from the client), of any age.

        The reconciler keeps a mark: every registration created before it is on its
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
                {"created_at": window}, {"_id": 1, "cohort_id": 1, "created_at": 1}
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
            (reg for reg in scanned if reg["_id"] in missing), key=lambda r: r["created_at"]
        )
        checked_until = orphans[0]["created_at"] if orphans else older_than
        if checked_until > since:
            # $max: replicas looking at once only ever move the mark forward.
            await self.stores.reconciler.update_one(
                {"_id": ADMISSION_MARK}, {"$max": {"checked_until": checked_until}}, upsert=True
            )
        return [reg["_id"] for reg in orphans[:limit]]

    async def finish_admission(self, registration_id: str) -> None:
        doc = await self.stores.registrations.find_one({"_id": registration_id})
        if doc is None:
            return
        personal = self.sealer.personal(doc)
        contact = ev.Contact(
            name=personal["name"],
            email=personal["email"],
            chat_handle=personal.get("chat_handle"),
            language=doc["language"],
            timezone=doc["timezone"],
        )
        *_, admitted_now = await self.admit(doc, contact, datetime.now(UTC))
        if admitted_now:
            log.info("finished an interrupted sign-up", registration_id=registration_id)
