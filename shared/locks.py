"""Leased mutual exclusion per key, built on a unique-key insert.

Why this exists: FerretDB 1.x applies an update by reading the document,
changing it in Go and writing it back by ``_id`` without a compare-and-set
(FerretDB #3040, pinned in tests/compat). Two conditional updates of one document
can both "win", so the design's "one conditional single-document update" is not
atomic there. Inserting a document with a given ``_id`` *is* atomic on FerretDB and
MongoDB alike, so every write to an aggregate first takes that aggregate's lock.
On MongoDB the lock is redundant with the version-conditioned update that follows;
on FerretDB it is what makes the update safe, across coroutines and replicas.

A lock document is ``{_id: key, token, owner, expires_at}``. A holder that dies
leaves it to expire; the next taker deletes the expired one by its token and
takes the key. A holder releases by ``_id`` while its lease is safely unexpired,
and by ``_id`` and token after that. A lease is short and writes are milliseconds,
and a holder checks its lease before writing (:meth:`Lease.check`).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.logs import get_logger

log = get_logger(__name__)


class LockTimeout(Exception):
    """The key stayed taken for longer than the caller was willing to wait."""


class LeaseLost(Exception):
    """The lease ran (nearly) out before the holder's write: the write must not happen."""


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Lease:
    key: str
    token: str
    expires_at: datetime
    margin_s: float = 1.0  # a quarter of the lease at most, so short leases stay usable

    def check(self, margin_s: float | None = None) -> None:
        margin = self.margin_s if margin_s is None else margin_s
        if datetime.now(UTC) + timedelta(seconds=margin) >= self.expires_at:
            raise LeaseLost(f"lease on {self.key} is about to expire")


@dataclass
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Locks:
    """Named leases in one collection. One instance per process and database."""

    def __init__(
        self,
        collection: AsyncCollection,
        *,
        lease_s: float = 15.0,
        wait_s: float = 15.0,
        owner: str | None = None,
    ) -> None:
        self.collection = collection
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.owner = owner or owner_name()
        # Coroutines of one process queue here first, so only one per key at a time
        # knocks on the database.
        self._local: dict[str, _LocalLock] = {}

    @asynccontextmanager
    async def hold(self, key: str, *, wait_s: float | None = None) -> AsyncIterator[Lease]:
        """Hold ``key``; raise LockTimeout after ``wait_s``, queueing in this process included."""
        wait = self.wait_s if wait_s is None else wait_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        local = self._local.setdefault(key, _LocalLock())
        local.users += 1
        try:
            try:
                await asyncio.wait_for(local.lock.acquire(), timeout=wait)
            except TimeoutError:
                raise LockTimeout(key) from None
            try:
                lease = await self._acquire(key, max(0.0, deadline - loop.time()))
                try:
                    yield lease
                finally:
                    await self._release(lease)
            finally:
                local.lock.release()
        finally:
            local.users -= 1
            if local.users == 0:
                self._local.pop(key, None)

    @asynccontextmanager
    async def try_hold(self, key: str) -> AsyncIterator[Lease | None]:
        """Take the key if it is free now; yield None (and wait for nothing) otherwise."""
        local = self._local.get(key)
        if local is not None and local.lock.locked():
            yield None
            return
        try:
            lease = await self._acquire(key, 0)
        except LockTimeout:
            yield None
            return
        try:
            yield lease
        finally:
            await self._release(lease)

    async def acquire(self, key: str, *, wait_s: float = 0.0) -> Lease:
        """Take ``key`` for as long as the caller keeps it (release it with ``release``).

        For holders that keep a claim across many operations (the outbox relay);
        they must serialize their own use of it within the process.
        """
        return await self._acquire(key, wait_s)

    async def release(self, lease: Lease) -> None:
        await self._release(lease)

    async def _acquire(self, key: str, wait_s: float) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.002
        while True:
            token = uuid.uuid4().hex
            expires_at = datetime.now(UTC) + timedelta(seconds=self.lease_s)
            try:
                await self.collection.insert_one(
                    {"_id": key, "token": token, "owner": self.owner, "expires_at": expires_at}
                )
                return Lease(key, token, expires_at, min(1.0, self.lease_s / 4))
            except DuplicateKeyError:
                pass
            current = await self.collection.find_one({"_id": key})
            if current is None:
                continue  # released between our insert and our read: try again at once
            if current["expires_at"] <= datetime.now(UTC):
                log.warning("taking over an expired lock", key=key, owner=current.get("owner"))
                await self.collection.delete_one({"_id": key, "token": current["token"]})
                continue
            if loop.time() >= deadline:
                raise LockTimeout(key)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.02)

    async def _release(self, lease: Lease) -> None:
        try:
            # Half its time left, so still ours when the delete lands: only an expired
            # lease is taken over. By _id alone, because FerretDB scans the whole
            # collection for any other filter.
            lease.check(margin_s=self.lease_s / 2)
            mine = {"_id": lease.key}
        except LeaseLost:
            # It may be someone else's by now: delete it only if the token is ours.
            mine = {"_id": lease.key, "token": lease.token}
        try:
            await self.collection.delete_one(mine)
        except Exception as exc:  # it will expire on its own
            log.warning("could not release lock", key=lease.key, error=type(exc).__name__)
