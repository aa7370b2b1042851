"""Revoked staff tokens, as each service keeps them in its own database.

A revocation travels as a ``staff.access_revoked`` event (shared/events.py): the web
console publishes one through its outbox when a coordinator signs out or an operator
deactivates their account, ``ops token revoke`` publishes one with publisher confirms.
Every service consumes it into its ``revoked_tokens`` collection, and
:func:`shared.tokens.require_role` asks :meth:`RevocationList.refuses` on every staff
request (one indexed read). An entry is kept until ``forget_after``: after that, every
token it refuses has expired anyway (no token lives past MAX_TOKEN_LIFETIME_S).

Two kinds of entry, one lookup: ``jti:<token id>`` refuses that one token;
``sub:<account id>`` refuses every token of that account issued at or before its
``not_before`` (a token minted later, after signing in again, stands).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from shared.events import Envelope, StaffAccessRevoked
from shared.messaging import Handler
from shared.tokens import MAX_TOKEN_LIFETIME_S, Principal

COLLECTION = "revoked_tokens"
INDEXES = {COLLECTION: [IndexModel([("key", ASCENDING), ("not_before", ASCENDING)])]}


def revoke_subject(subject: str, reason: str, now: datetime | None = None) -> StaffAccessRevoked:
    """Every token of ``subject`` issued up to ``now`` (signing out, deactivation)."""
    now = now or datetime.now(UTC)
    return StaffAccessRevoked(
        subject=subject,
        not_before=now,
        forget_after=now + timedelta(seconds=MAX_TOKEN_LIFETIME_S + 60),
        reason=reason,  # type: ignore[arg-type]
    )


def revoke_token(token_id: str, expires_at: datetime) -> StaffAccessRevoked:
    """One token, until it would have expired."""
    return StaffAccessRevoked(
        token_id=token_id,
        not_before=expires_at,
        forget_after=expires_at + timedelta(seconds=60),
        reason="revoked",
    )


class RevocationList:
    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def handlers(self) -> dict[str, Handler]:
        """The consumer's handler of ``staff.access_revoked`` (the app factory binds it)."""

        async def take(envelope: Envelope) -> None:
            await self.record(StaffAccessRevoked.model_validate(envelope.data), envelope.id)

        return {StaffAccessRevoked.event_type: take}

    async def record(self, revoked: StaffAccessRevoked, event_id: str) -> None:
        """Keep one revocation (once per event: a redelivery is the same entry)."""
        if revoked.token_id:
            key = f"jti:{revoked.token_id}"
        elif revoked.subject:
            key = f"sub:{revoked.subject}"
        else:
            return  # names no token: nothing to refuse
        try:
            await self.collection.insert_one(
                {
                    "_id": event_id,
                    "key": key,
                    "not_before": revoked.not_before,
                    "forget_after": revoked.forget_after,
                    "reason": revoked.reason,
                }
            )
        except DuplicateKeyError:
            pass  # the same event again
        await self.forget_expired()

    async def refuses(self, principal: Principal) -> bool:
        found = await self.collection.find_one(
            {
                "key": {"$in": [f"jti:{principal.token_id}", f"sub:{principal.subject}"]},
                "not_before": {"$gte": principal.issued_at},
            },
            {"_id": 1},
        )
        return found is not None

    async def forget_expired(self, now: datetime | None = None) -> int:
        """Drop entries no valid token can match any more."""
        done = await self.collection.delete_many(
            {"forget_after": {"$lt": now or datetime.now(UTC)}}
        )
        return done.deleted_count
