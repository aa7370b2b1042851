"""Notifications' MongoDB collections and how personal data is sealed in them.

- ``recipients``: the contact projection, one document per registration (``_id`` =
  registration id), built from ``registration.submitted``: name, email and chat
  handle sealed with AES-GCM bound to the document; language, time zone, cohort and
  the applicant's standing ("open", "confirmed", "closed") in clear.
- ``cohorts``: what messages say about a cohort (its discreet display name, its
  sessions), who is enrolled (the roster) and the reminder schedule with
  ``next_due_at`` for the reminder runner.
- ``programs``: reminder offsets a coordinator set for a program.
- ``deliveries``: the working set: every delivery not yet finished, and finished
  ones for ``ARCHIVE_AFTER_S`` (an aggregate with an outbox: its notification.sent
  and notification.failed events). ``_id`` is derived from (event id, template,
  recipient), so inserting it is the once-only check. Failed ones stay here for
  operators. Kept small, because its polls (what is due) read the whole collection
  on the embedded server, which has no secondary indexes (tests/compat).
- ``delivery_log``: finished deliveries moved out of the working set, without the
  sealed address and content: what was sent to whom (by reference), when, how often.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from shared.aggregates import AggregateStore
from shared.errors import NotFound
from shared.reseal import SealedIn
from shared.security import FieldCipher

INDEXES = {
    "deliveries": [
        IndexModel([("due_at", ASCENDING)], name="by_due"),
        IndexModel([("status", ASCENDING)], name="by_status"),
        IndexModel([("finished_at", ASCENDING)], name="by_finished"),
    ],
    "delivery_log": [IndexModel([("registration_id", ASCENDING)], name="by_registration")],
    "recipients": [],
    "cohorts": [IndexModel([("next_due_at", ASCENDING)], name="by_next_due")],
    "programs": [],
    "alerts": [IndexModel([("next_at", ASCENDING)], name="by_next")],
}

CONTACT_FIELDS = ("name", "email", "chat_handle", "access_token")


class Sealer:
    """Seals personal fields; the context binds each value to its document and field."""

    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    def seal_contact(self, registration_id: str, contact: dict[str, Any]) -> dict[str, str]:
        return {
            f: self.cipher.encrypt(str(contact[f]), context=f"recipient:{registration_id}:{f}")
            for f in CONTACT_FIELDS
            if contact.get(f)
        }

    def open_contact(self, doc: dict[str, Any]) -> dict[str, str]:
        rid = doc["_id"]
        return {
            f: self.cipher.decrypt(v, context=f"recipient:{rid}:{f}")
            for f, v in (doc.get("sealed") or {}).items()  # None once erased
        }

    def seal_joining(self, cohort_id: str, joining: dict[str, Any]) -> str:
        return self.cipher.encrypt_json(joining, context=f"cohort:{cohort_id}:joining")

    def open_joining(self, cohort: dict[str, Any] | None) -> dict[str, Any] | None:
        """How the cohort's participants join (None: not set yet)."""
        if not cohort or not cohort.get("joining"):
            return None
        return self.cipher.decrypt_json(
            cohort["joining"], context=f"cohort:{cohort['_id']}:joining"
        )

    def seal_delivery(self, delivery_id: str, to: str, context: dict[str, Any]) -> dict[str, str]:
        return {
            "to": self.cipher.encrypt(to, context=f"delivery:{delivery_id}:to"),
            "context": self.cipher.encrypt_json(context, context=f"delivery:{delivery_id}:context"),
        }

    def open_delivery(self, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        did = doc["_id"]
        sealed = doc["sealed"]
        to = self.cipher.decrypt(sealed["to"], context=f"delivery:{did}:to")
        context = self.cipher.decrypt_json(sealed["context"], context=f"delivery:{did}:context")
        return to, context


# Where this service's sealed values are, for ``python -m notifications reseal``
# (shared/reseal.py; the deliveries' sealed outbox entries are found there).
SEALED: dict[str, SealedIn] = {
    "recipients": lambda doc: [
        (f"sealed.{f}", f"recipient:{doc['_id']}:{f}") for f in doc.get("sealed") or {}
    ],
    "deliveries": lambda doc: [
        (f"sealed.{f}", f"delivery:{doc['_id']}:{f}") for f in ("to", "context")
    ],
    "cohorts": lambda doc: [("joining", f"cohort:{doc['_id']}:joining")],
}

SOURCE = "holdspace/notifications"


@dataclass
class Stores:
    deliveries: AggregateStore
    recipients: AggregateStore
    cohorts: AggregateStore
    alerts: AggregateStore
    programs: AsyncCollection
    delivery_log: AsyncCollection
    erasures: AggregateStore | None = None  # what was erased here (shared/erasure.py)

    async def erased(self, registration_id: str) -> bool:
        """Whether the registration was erased here (notifications/erasure.py)."""
        doc = await self.recipients.collection.find_one({"_id": registration_id}, {"erased_at": 1})
        return bool(doc and doc.get("erased_at"))

    async def delivery(self, did: str) -> dict[str, Any]:
        """A delivery as it is, or as it was archived; never its sealed address or text."""
        doc = await self.deliveries.collection.find_one({"_id": did}, {"sealed": 0})
        doc = doc or await self.delivery_log.find_one({"_id": did})
        if doc is None:
            raise NotFound("delivery_id", "no such delivery")
        return doc
