"""Registration's MongoDB collections and how personal data is sealed in them.

- ``programs``: what coordinators set up (an aggregate, no events).
- ``cohorts``: one run of a program *and* its seat ledger (domain/ledger.py) with
  the embedded outbox of every registration event: the consistency boundary.
- ``registrations``: one document per application, written at sign-up; personal
  fields sealed with AES-GCM, the email also as a keyed hash (blind index) for
  duplicate detection. Until its email address is verified it holds nothing and
  its ``dedupe_key`` is its own; verifying claims the cohort's key for the address
  (unique: one registration per address and cohort). Its status then lives on the
  cohort's ledger. Never verified, it is deleted after ``verify_by``.
- ``idempotency``: what a sign-up's ``Idempotency-Key`` already produced.
- ``reconciler``: how far back every registration is known to be on its ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel

from registration.domain.ledger import LedgerCodec
from registration.domain.programs import Application
from shared import events as ev
from shared.aggregates import AggregateStore, StoreFactory
from shared.reseal import Sealed, SealedIn
from shared.security import BlindIndexer, FieldCipher

INDEXES = {
    "registrations": [
        IndexModel([("dedupe_key", ASCENDING)], unique=True, name="one_email_per_cohort"),
        IndexModel([("cohort_id", ASCENDING)], name="by_cohort"),
        IndexModel([("created_at", ASCENDING)], name="by_created_at"),
        IndexModel([("verified_at", ASCENDING)], name="by_verified_at"),
        IndexModel([("verify_by", ASCENDING)], name="by_verify_by"),
    ],
    "cohorts": [IndexModel([("next_due_at", ASCENDING)], name="by_next_due")],
    "idempotency": [IndexModel([("created_at", ASCENDING)], name="by_age")],
    "programs": [],
}

# A cohort without its ledger's bulk and the aggregate's bookkeeping.
LEDGER_FIELDS = {
    "entries": 0,
    "waitlist": 0,
    "outbox": 0,
    "inbox": 0,
    "joining": 0,
    "composition.unmet": 0,
}

SEALED_TEXT = ("name", "email", "chat_handle", "date_of_birth", "gender", "scholarship_reason")


class Sealer:
    """Seals and opens the personal fields of a registration document."""

    def __init__(self, cipher: FieldCipher, indexer: BlindIndexer) -> None:
        self.cipher = cipher
        self.indexer = indexer

    def seal(self, value: str, field: str, doc_id: str) -> str:
        """Sealed to its field and its document: copied into another, it does not open."""
        return self.cipher.encrypt(value, context=f"registration:{field}:{doc_id}")

    def open(self, token: str, field: str, doc: dict[str, Any]) -> str:
        return self.cipher.decrypt(token, context=_context(field, doc))

    def open_gender(self, doc: dict[str, Any]) -> str | None:
        """The applicant's gender, opened for a decision and kept nowhere (None: not given)."""
        sealed = (doc.get("sealed") or {}).get("gender")
        return self.open(sealed, "gender", doc) if sealed else None

    def seal_joining(self, cohort_id: str, joining: dict[str, Any]) -> str:
        """Sealed to its cohort: moved to another cohort's document, it does not open."""
        return self.cipher.encrypt_json(joining, context=f"registration:joining:{cohort_id}")

    def open_joining(self, cohort: dict[str, Any]) -> dict[str, Any] | None:
        sealed = cohort.get("joining")
        if not sealed:
            return None
        return self.cipher.decrypt_json(sealed, context=f"registration:joining:{cohort['_id']}")

    def registration_doc(
        self,
        *,
        registration_id: str,
        cohort_id: str,
        program_id: str,
        application: Application,
        flagged: bool,
        access_token_hash: str,
        now: datetime,
        verify_by: datetime,
        already_registered: bool,
    ) -> dict[str, Any]:
        a = application
        clear = {
            "name": a.name,
            "email": str(a.email),
            "chat_handle": a.chat_handle,
            "date_of_birth": a.date_of_birth.isoformat() if a.date_of_birth else None,
            "gender": str(a.gender) if a.gender else None,
            "scholarship_reason": a.scholarship_reason,
        }
        email_index = self.indexer.email(str(a.email))
        return {
            "_id": registration_id,
            "cohort_id": cohort_id,
            "program_id": program_id,
            "created_at": now,
            "dedupe_key": unverified_key(registration_id),
            "email_index": email_index,
            "verify_by": verify_by,
            "verified_at": None,
            "already_registered": already_registered,
            "sealed_v": BOUND,
            "sealed": {
                k: self.seal(v, k, registration_id) for k, v in clear.items() if v is not None
            },
            "safety_answers": self.cipher.encrypt_json(
                a.safety_answers, context=f"registration:safety_answers:{registration_id}"
            ),
            # Every answer to the program's own questions: free text can identify anyone.
            "intake_answers": self.cipher.encrypt_json(
                {q: v for q, v in a.intake_answers.items() if v},
                context=f"registration:intake_answers:{registration_id}",
            ),
            "age_attested": a.age_attested,
            "single_gender_preference": a.single_gender_preference,
            "scholarship_requested": a.scholarship_requested,
            "flagged": flagged,
            "language": a.language,
            "timezone": a.timezone,
            "access_token_hash": access_token_hash,
        }

    def personal(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The clear personal fields, for the coordinator and for events to notifications."""
        opened = {k: self.open(v, k, doc) for k, v in (doc.get("sealed") or {}).items()}
        for field in ("safety_answers", "intake_answers"):
            sealed = doc.get(field)  # None once erased; no intake answers before they existed
            opened[field] = (
                {}
                if sealed is None
                else self.cipher.decrypt_json(sealed, context=_context(field, doc))
            )
        return opened


def unverified_key(registration_id: str) -> str:
    return f"unverified:{registration_id}"


def cohort_key(cohort_id: str, email_index: str) -> str:
    """The one registration an address may have in a cohort, once verified."""
    return f"{cohort_id}:{email_index}"


def is_unverified(doc: dict[str, Any]) -> bool:
    # Registrations from before verification have no ``verify_by``: admitted at sign-up.
    return doc.get("verify_by") is not None and doc.get("verified_at") is None


# ``sealed_v`` of a document whose sealed values are bound to its ``_id``; documents
# written before have none, and their values open with the field's context alone.
BOUND = 2


def _context(field: str, doc: dict[str, Any]) -> str:
    if doc.get("sealed_v") == BOUND:
        return f"registration:{field}:{doc['_id']}"
    return f"registration:{field}"


def _registration_values(doc: dict[str, Any]) -> Iterator[Sealed]:
    for field in doc.get("sealed") or {}:
        yield f"sealed.{field}", _context(field, doc)
    yield "safety_answers", _context("safety_answers", doc)
    yield "intake_answers", _context("intake_answers", doc)


def _cohort_values(doc: dict[str, Any]) -> Iterator[Sealed]:
    yield "joining", f"registration:joining:{doc['_id']}"
    for registration_id, entry in (doc.get("entries") or {}).items():
        context = f"registration:reason:{registration_id}"
        yield f"entries.{registration_id}.reason", context
        for i, step in enumerate(entry.get("history") or []):
            if step.get("why"):  # a coordinator's reason for one step (ledger.Step)
                yield f"entries.{registration_id}.history.{i}.why", context


# Where this service's sealed values are, for ``python -m registration reseal``
# (shared/reseal.py; the cohorts' sealed outbox is found there).
SEALED: dict[str, SealedIn] = {
    "registrations": _registration_values,
    "cohorts": _cohort_values,
    "idempotency": lambda doc: [("token", _context("access_token", doc))],
}

SOURCE = "holdspace/registration"


class RegistrationStores:
    @classmethod
    def open(cls, store: StoreFactory, db: Any, cipher: FieldCipher) -> RegistrationStores:
        """The stores as every process of the service opens them (``store``: the app's
        Runtime.store, or tests' in-memory one)."""
        # The cohort is the seat ledger and carries every registration event; its
        # outbox is sealed (registration.submitted carries the applicant's contact).
        cohorts = store(
            "cohorts",
            cipher=cipher,
            codec=LedgerCodec(),
            enveloper=ev.registration_enveloper(SOURCE),
        )
        return cls(store("programs"), cohorts, db)

    def __init__(self, programs: AggregateStore, cohorts: AggregateStore, db: Any) -> None:
        self.programs = programs
        self.cohorts = cohorts
        self.registrations = db["registrations"]
        self.idempotency = db["idempotency"]
        self.reconciler = db["reconciler"]

    async def program(self, program_id: str) -> dict[str, Any]:
        return await self.programs.require(program_id, "program_id", "no such program")

    async def cohort(self, cohort_id: str) -> dict[str, Any]:
        return await self.cohorts.require(cohort_id, "cohort_id", "no such cohort")
