"""Coordinator accounts: an email, a name, a password hashed with Argon2id (argon2-cffi).

Created by operators (``ops web add-coordinator``), never by a page. Sign-in answers the
same way, and takes as long, whether the email is unknown or the password wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pymongo.asynchronous.database import AsyncDatabase

from shared.security import normalize_email

_hasher = PasswordHasher()
# Verified against when the email is unknown, so an unknown email costs the same time.
_UNKNOWN = _hasher.hash("no such coordinator")
MIN_PASSWORD = 12


class Accounts:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["coordinators"]

    async def ping(self) -> None:
        await self.collection.database.command("ping")

    async def add(self, email: str, name: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
        await self.collection.update_one(
            {"_id": normalize_email(email)},
            {
                "$set": {"name": name, "password_hash": _hasher.hash(password), "active": True},
                "$setOnInsert": {"created_at": datetime.now(UTC)},
            },
            upsert=True,
        )

    async def deactivate(self, email: str) -> bool:
        done = await self.collection.update_one(
            {"_id": normalize_email(email)}, {"$set": {"active": False}}
        )
        return done.matched_count == 1

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
        return {"email": doc["_id"], "name": doc["name"]}

    async def is_active(self, email: str) -> bool:
        doc = await self.collection.find_one({"_id": email}, {"active": 1})
        return bool(doc and doc.get("active"))

    async def all(self) -> list[dict[str, Any]]:
        cursor = self.collection.find({}, {"password_hash": 0}).sort("_id", 1)
        return [d async for d in cursor]
