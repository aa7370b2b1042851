"""Coordinator accounts: an email, a name, a password hashed with Argon2id (argon2-cffi),
a stable account id and the programs the account may see.

Created by operators (``ops web add-coordinator``), never by a page. Sign-in answers the
same way, and takes as long, whether the email is unknown or the password wrong.

- ``account_id`` (``acct_`` and 16 hex digits) is what the services record as who
  decided and what the payments maker-checker compares: never the email or the name,
  which are free text an operator may change. Accounts made before it existed get one
  at their next sign-in (or ``ops web coordinators``).
- ``programs`` is a list of program ids, or ``"*"`` (every program, a lead). Accounts
  made before scopes existed have none stored and keep seeing every program, as they
  did; an operator narrows them with ``ops web add-coordinator EMAIL --program ...``.
- Signing out and deactivation revoke the account's tokens in every service: a
  ``staff.access_revoked`` event in the ``revocations`` outbox, which the pages' relay
  publishes (docs/decisions/0006-coordinator-scopes-and-revocation.md).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo.asynchronous.database import AsyncDatabase

from shared.aggregates import AggregateStore
from shared.events import Envelope, EventData, make_envelope, new_id
from shared.revocation import revoke_subject
from shared.security import ALL_PROGRAMS, normalize_email
from shared.tokens import Programs

_hasher = PasswordHasher()
# Verified against when the email is unknown, so an unknown email costs the same time.
_UNKNOWN = _hasher.hash("no such coordinator")
MIN_PASSWORD = 12
SOURCE = "holdspace/web"


def new_account_id() -> str:
    return f"acct_{secrets.token_hex(8)}"


def _envelope(data: EventData, caused_by: str | None) -> Envelope:
    event_id = new_id()
    return make_envelope(data, source=SOURCE, correlation_id=event_id, event_id=event_id)


def _scope(doc: dict[str, Any]) -> Programs:
    """The account's programs; an account from before scopes sees every program."""
    stored = doc.get("programs", ALL_PROGRAMS)
    return ALL_PROGRAMS if stored == ALL_PROGRAMS else list(stored)


class Accounts:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["coordinators"]
        # Each revocation is one document whose outbox holds its staff.access_revoked.
        self.revocations = AggregateStore(db["revocations"], service="web", enveloper=_envelope)

    async def ping(self) -> None:
        await self.collection.database.command("ping")

    async def add(self, email: str, name: str, password: str, programs: Programs | None) -> str:
        """Create an account or reset its name and password (and its programs, when
        given; a new account given none sees no program). Its account id."""
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
        values: dict[str, Any] = {
            "name": name,
            "password_hash": _hasher.hash(password),
            "active": True,
        }
        created: dict[str, Any] = {"created_at": datetime.now(UTC), "account_id": new_account_id()}
        if programs is not None:
            values["programs"] = programs if programs == ALL_PROGRAMS else sorted(set(programs))
        else:
            created["programs"] = []
        await self.collection.update_one(
            {"_id": normalize_email(email)},
            {"$set": values, "$setOnInsert": created},
            upsert=True,
        )
        return (await self._with_id(normalize_email(email)) or {})["account_id"]

    async def _with_id(self, email: str) -> dict[str, Any] | None:
        """The account, given its account id first if it was made before ids existed."""
        doc = await self.collection.find_one({"_id": email})
        if doc is not None and not doc.get("account_id"):
            # Conditional, so two first sign-ins at once settle on one id.
            await self.collection.update_one(
                {"_id": email, "account_id": None}, {"$set": {"account_id": new_account_id()}}
            )
            doc = await self.collection.find_one({"_id": email})
        return doc

    async def deactivate(self, email: str) -> bool:
        """No more sign-in, and every token of the account is revoked in every service."""
        doc = await self._with_id(normalize_email(email))
        if doc is None:
            return False
        await self.collection.update_one({"_id": doc["_id"]}, {"$set": {"active": False}})
        await self.revoke(doc["account_id"], "deactivated")
        return True

    async def revoke(self, account_id: str, reason: str) -> None:
        """Every token of the account issued until now stops working in every service,
        once the relay has published it (at once while the pages run; a command's within
        OUTBOX_POLL_S)."""
        revoked = revoke_subject(account_id, reason)
        await self.revocations.create(
            {"_id": new_id(), "subject": account_id, "reason": reason}, emit=[revoked]
        )

    async def verify(self, email: str, password: str) -> dict[str, Any] | None:
        """The account, when the password is right and the account active; else None."""
        doc = await self.collection.find_one({"_id": normalize_email(email)})
        try:
            _hasher.verify(doc["password_hash"] if doc else _UNKNOWN, password)
        except (VerificationError, InvalidHashError):
            return None
        if doc is None or not doc.get("active", False):
            return None
        if _hasher.check_needs_rehash(doc["password_hash"]):
            await self.collection.update_one(
                {"_id": doc["_id"]}, {"$set": {"password_hash": _hasher.hash(password)}}
            )
        return await self.current(doc["_id"])

    async def current(self, email: str) -> dict[str, Any] | None:
        """The active account as the console acts for it now (id, name, programs); None
        when it is unknown or deactivated."""
        doc = await self._with_id(email)
        if doc is None or not doc.get("active"):
            return None
        return {
            "email": doc["_id"],
            "name": doc["name"],
            "account_id": doc["account_id"],
            "programs": _scope(doc),
        }

    async def names(self) -> dict[str, str]:
        """Account id -> name, so the console shows who decided, not an id."""
        cursor = self.collection.find({}, {"name": 1, "account_id": 1})
        return {d["account_id"]: d["name"] async for d in cursor if d.get("account_id")}

    async def all(self) -> list[dict[str, Any]]:
        found = []
        async for doc in self.collection.find({}, {"_id": 1}).sort("_id", 1):
            with_id = await self._with_id(doc["_id"])
            if with_id is not None:
                found.append({k: v for k, v in with_id.items() if k != "password_hash"})
        return found
