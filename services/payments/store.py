"""Payments' MongoDB collections.

- ``cases``: one aggregate per registration (``_id`` = registration id): its payment
  request, scholarship, claims, manual confirmations and refund, with the embedded
  outbox of every payment event and the inbox of applied events (domain/cases.py).
- ``budgets``: one aggregate per cohort: the scholarship budget and what is granted from it.
- ``flags``: one aggregate per flagged notification (deterministic ``_id``), for coordinators.
- ``lookups``: insert-only keys to a registration id: ``ref:<compact reference>``,
  ``pay:<payment id>``, ``mc:<manual confirmation id>`` (unique ``_id`` inserts are atomic).
- ``notifications``: insert-only log of verified provider notifications (ids, amounts,
  outcome; never payer identities or bodies).

Personal data: only a coordinator's free-text evidence note and flag resolution note,
sealed with AES-GCM bound to their field. Nothing else here names a person.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from payments.domain.cases import CaseCodec
from shared import events as ev
from shared.aggregates import AggregateStore, StoreFactory
from shared.erasure import erasures_store
from shared.errors import NotFound
from shared.reseal import SealedIn
from shared.security import FieldCipher

INDEXES = {
    "cases": [
        IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)], name="by_status_expiry")
    ],
    # A grant a crash left half-done is due for a check (scholarships.py).
    "budgets": [IndexModel([("check_at", ASCENDING)], name="by_check_time")],
    "flags": [IndexModel([("status", ASCENDING)], name="by_status")],
    "lookups": [],
    "notifications": [IndexModel([("received_at", ASCENDING)], name="by_age")],
}


class Sealer:
    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    def seal(self, value: str, field: str, owner: str) -> str:
        return self.cipher.encrypt(value, context=f"payments:{field}:{owner}")

    def open(self, token: str, field: str, owner: str) -> str:
        return self.cipher.decrypt(token, context=f"payments:{field}:{owner}")


# Where this service's sealed values are, for ``python -m payments reseal``
# (shared/reseal.py): evidence notes of manual confirmations, flags' resolution notes.
SEALED: dict[str, SealedIn] = {
    "cases": lambda doc: [
        *(
            (f"manual.{i}.{field}", f"payments:{field}:{m['confirmation_id']}")
            for i, m in enumerate(doc.get("manual") or [])
            for field in ("evidence", "why")
        ),
        ("scholarship.why", f"payments:why:{doc['_id']}"),
    ],
    "flags": lambda doc: [("note", f"payments:flag_note:{doc['_id']}")],
}

SOURCE = "holdspace/payments"


class PaymentStores:
    @classmethod
    def open(cls, store: StoreFactory, db: Any) -> PaymentStores:
        """The stores as every process of the service opens them (``store``: the app's
        Runtime.store, or tests' in-memory one)."""
        # Cases and flags carry events; budgets never have an outbox to relay.
        cases = store("cases", codec=CaseCodec(), enveloper=ev.registration_enveloper(SOURCE))
        budgets = store("budgets", relayed=False)
        return cls(cases, budgets, store("flags"), db, erasures_store(store, SOURCE))

    def __init__(
        self,
        cases: AggregateStore,
        budgets: AggregateStore,
        flags: AggregateStore,
        db: Any,
        erasures: AggregateStore | None = None,
    ) -> None:
        self.erasures = erasures
        self.cases = cases
        self.budgets = budgets
        self.flags = flags
        self.lookups = db["lookups"]
        self.notifications = db["notifications"]

    async def link(self, key: str, registration_id: str) -> str:
        """Claim ``key`` for a registration; returns whichever registration holds it."""
        try:
            await self.lookups.insert_one({"_id": key, "registration_id": registration_id})
            return registration_id
        except DuplicateKeyError:
            found = await self.lookups.find_one({"_id": key})
            return found["registration_id"] if found else registration_id

    async def resolve(self, key: str) -> str | None:
        found = await self.lookups.find_one({"_id": key})
        return found["registration_id"] if found else None

    async def case(self, registration_id: str) -> dict[str, Any]:
        return await self.cases.require(
            registration_id, "registration_id", "no payment for this registration"
        )

    async def case_by_payment(self, payment_id: str) -> dict[str, Any]:
        registration_id = await self.resolve(f"pay:{payment_id}")
        if registration_id is None:
            raise NotFound("payment_id", "no such payment")
        return await self.case(registration_id)

    async def budget(self, cohort_id: str) -> dict[str, Any]:
        return await self.budgets.require(
            cohort_id, "cohort_id", "no scholarship budget is set for this cohort"
        )

    async def log_notification(self, doc: dict[str, Any]) -> bool:
        """Record a verified notification once; False when it was already recorded."""
        try:
            await self.notifications.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False
