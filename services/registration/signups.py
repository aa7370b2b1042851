"""Sign-ups: an application stored unverified, its email address verified by a link
only that mailbox receives, and what is never verified forgotten.

Nothing is held before verification, and the answer to a sign-up is the same whether
the address is new or already in the cohort: a stranger cannot learn from it who is in
a group. Each step is idempotent: a retry with the same Idempotency-Key resumes the
sign-up, a second click on the link changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.errors import DuplicateKeyError

from registration.domain.events import (
    contact_of,
    program_spec,
    stored_contact,
    verification_requested,
)
from registration.domain.ledger import Ledger, Status
from registration.domain.programs import Application, check_application, registration_open
from registration.service import RegistrationService
from registration.store import BOUND, cohort_key, is_unverified
from shared.aggregates import Change
from shared.errors import Conflict
from shared.logs import get_logger
from shared.security import hash_access_token, new_access_token

log = get_logger(__name__)

# A flagged sign-up never verified is kept this much longer, for the coordinator who
# answers its safety alert.
FLAGGED_KEPT = timedelta(days=7)


@dataclass
class SignUpResult:
    """What a sign-up answers: the same for a new address and for one already in the
    cohort, so the answer tells nobody who is in a group. The rest comes by email."""

    registration_id: str  # for the logs and tests; not in the answer
    verify_by: datetime
    crisis_resources: list[dict[str, Any]]
    replayed: bool = False


@dataclass
class Verified:
    registration_id: str
    status: Status
    position: int | None
    expires_at: datetime | None


def request_fingerprint(application: Application) -> str:
    canonical = json.dumps(application.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored_precision(at: datetime) -> datetime:
    """To the millisecond, as the database keeps it: a retry answers the same time."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class SignUps:
    def __init__(
        self,
        service: RegistrationService,
        *,
        verify_within_s: float = 24 * 3600,
        keys_kept_s: float = 24 * 3600,
    ) -> None:
        self.service = service
        self.stores = service.stores
        self.sealer = service.sealer
        self.verify_within_s = verify_within_s
        self.keys_kept_s = keys_kept_s

    async def sign_up(
        self, cohort_id: str, application: Application, idempotency_key: str, now: datetime
    ) -> SignUpResult:
        """Store the sign-up, unverified, and ask for its email address to be verified.

        A known address goes the same way (the same writes, the same answer); its owner
        is told by email instead of sent a link. Nothing is held until verification.
        """
        cohort = await self.service.cohort_settings(cohort_id)
        if not registration_open(cohort, now):
            raise Conflict("cohort_id", "registration for this cohort is not open")
        program_doc = await self.service.program_cached(cohort["program_id"])
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
        doc = await self._stored(
            registration_id, token, cohort_id, program_doc["_id"], application, flagged, now
        )
        contact = contact_of(application, None if doc["already_registered"] else token)

        def decide(cohort: dict[str, Any], _ledger: Ledger) -> Change:
            return Change(
                emit=verification_requested(
                    registration_id,
                    cohort,
                    program,
                    contact,
                    verify_by=doc["verify_by"],
                    already_registered=doc["already_registered"],
                    flagged=doc["flagged"],
                )
            )

        # Applied once per registration: a retry does not send a second email.
        await self.stores.cohorts.mutate(cohort_id, decide, event_id=f"verify:{registration_id}")
        return SignUpResult(
            registration_id=registration_id,
            verify_by=doc["verify_by"],
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

    async def _stored(
        self,
        registration_id: str,
        token: str,
        cohort_id: str,
        program_id: str,
        application: Application,
        flagged: bool,
        now: datetime,
    ) -> dict[str, Any]:
        """The unverified registration, stored once (a retry finds the first)."""
        email_index = self.sealer.indexer.email(str(application.email))
        known = await self.stores.registrations.find_one(
            {"dedupe_key": cohort_key(cohort_id, email_index)}, {"_id": 1}
        )
        doc = self.sealer.registration_doc(
            registration_id=registration_id,
            cohort_id=cohort_id,
            program_id=program_id,
            application=application,
            flagged=flagged,
            access_token_hash=hash_access_token(token),
            now=now,
            verify_by=_stored_precision(now + timedelta(seconds=self.verify_within_s)),
            already_registered=known is not None,
        )
        try:
            await self.stores.registrations.insert_one(doc)
        except DuplicateKeyError:  # a retry of the same request: carry on with the first
            doc = await self.stores.registrations.find_one({"_id": registration_id}) or doc
        return doc

    async def verify_email(self, doc: dict[str, Any], token: str, now: datetime) -> Verified:
        """The applicant followed the link only their mailbox received: the address is
        theirs. The sign-up now claims the address's one place in the cohort and goes
        on the ledger (a seat, the waitlist or review). Idempotent."""
        rid = doc["_id"]
        if is_unverified(doc):
            if doc["already_registered"]:
                raise Conflict("email", "this address already has a registration for this group")
            if now > doc["verify_by"]:
                raise Conflict("verify_by", "this link has expired; please sign up again")
            try:
                await self.stores.registrations.update_one(
                    {"_id": rid, "verified_at": None},
                    {
                        "$set": {
                            "verified_at": now,
                            "dedupe_key": cohort_key(doc["cohort_id"], doc["email_index"]),
                        }
                    },
                )
            except DuplicateKeyError as exc:  # told only to the mailbox's owner
                raise Conflict(
                    "email", "this address already has a registration for this group"
                ) from exc
        personal = self.sealer.personal(doc)
        status, position, expires_at, _ = await self.service.admit(
            doc, stored_contact(doc, personal, token), now
        )
        return Verified(rid, status, position, expires_at)

    # --- forgetting ------------------------------------------------------------------

    async def never_verified(self, now: datetime) -> list[str]:
        """Unverified sign-ups past their link's time (flagged ones a week later)."""
        found = []
        for flagged, cutoff in ((False, now), (True, now - FLAGGED_KEPT)):
            query = {"verified_at": None, "flagged": flagged, "verify_by": {"$lte": cutoff}}
            cursor = self.stores.registrations.find(query, {"_id": 1}).limit(200)
            found += [d["_id"] async for d in cursor]
        return found

    async def forget(self, registration_id: str) -> None:
        deleted = await self.stores.registrations.delete_one(
            {"_id": registration_id, "verified_at": None}
        )
        if deleted.deleted_count:
            log.info("forgot a sign-up never verified", registration_id=registration_id)

    async def stale_keys(self, now: datetime) -> list[str]:
        """Idempotency-Keys older than a retry could be."""
        cutoff = now - timedelta(seconds=self.keys_kept_s)
        cursor = self.stores.idempotency.find({"created_at": {"$lte": cutoff}}, {"_id": 1})
        return [d["_id"] async for d in cursor.limit(500)]

    async def forget_key(self, key_id: str) -> None:
        await self.stores.idempotency.delete_one({"_id": key_id})
