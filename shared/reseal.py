"""Re-seal personal fields under the current key after a rotation (``python -m <service>
reseal``).

A rotation: the new key becomes ENCRYPTION_KEY (with a new ENCRYPTION_KEY_ID) and the
old one moves to ENCRYPTION_RETIRED_KEYS, so values sealed before still open. This
command then reads every value sealed under another key than the current one and
writes it back sealed under the current key, bound to the same document and field.
When a run reports nothing left under a retired key, the retired key can go.

Each service says where its sealed values are (``SEALED`` in its store module: per
collection, the dotted paths and contexts of one document's values); every
aggregate's outbox entries are added here. A document is written once, on condition
that each of its values, and its version where it has one, is still what was read:
a change made meanwhile wins, is counted, and the next run takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.logs import get_logger
from shared.security import DecryptionError, FieldCipher

log = get_logger(__name__)

# (dotted path of the value in the document, the context it is sealed with)
Sealed = tuple[str, str]
SealedIn = Callable[[dict[str, Any]], Iterable[Sealed]]

PROGRESS_EVERY = 1000


@dataclass
class Tally:
    """What one run did in one collection."""

    documents: int = 0
    resealed: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: int = 0
    kept: int = 0  # under a retired key on purpose (Kept)

    @property
    def left(self) -> int:
        """Values still sealed under another key after this run."""
        return self.changed_meanwhile + self.unreadable


@dataclass(frozen=True)
class Kept:
    """Values left under the key that sealed them, and why (counted, never rewritten)."""

    sealed_in: SealedIn
    why: str


def value_at(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, Mapping):
            value = value.get(part)
        else:
            return None
    return value


def outbox_values(doc: Mapping[str, Any]) -> Iterator[Sealed]:
    """An aggregate's unpublished events, sealed at rest (shared/aggregates.py)."""
    for i, entry in enumerate(doc.get("outbox") or []):
        if entry.get("sealed_data"):
            yield f"outbox.{i}.sealed_data", f"outbox:{entry['id']}"


class Resealer:
    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    def _fresh(self, doc: dict[str, Any], sealed: Iterable[Sealed], tally: Tally) -> dict:
        """The values to write back, by path; counts the ones left as they are."""
        fresh: dict[str, str] = {}
        for path, context in sealed:
            token = value_at(doc, path)
            if not isinstance(token, str):
                continue
            try:
                if self.cipher.key_id_of(token) == self.cipher.current_key_id:
                    tally.current += 1
                    continue
                plain = self.cipher.decrypt(token, context=context)
            except DecryptionError as exc:
                tally.unreadable += 1
                log.warning("reseal: a value does not open", path=path, id=doc["_id"], error=exc)
                continue
            fresh[path] = self.cipher.encrypt(plain, context=context)
        return fresh

    def _count_kept(self, doc: dict[str, Any], kept: Kept, tally: Tally) -> None:
        for path, _context in kept.sealed_in(doc):
            token = value_at(doc, path)
            if isinstance(token, str) and self._key_of(token) != self.cipher.current_key_id:
                tally.kept += 1

    def _key_of(self, token: str) -> str | None:
        try:
            return self.cipher.key_id_of(token)
        except DecryptionError:
            return None

    async def collection(self, collection: Any, sealed_in: SealedIn | Kept) -> Tally:
        tally = Tally()
        async for doc in collection.find({}):
            tally.documents += 1
            if tally.documents % PROGRESS_EVERY == 0:
                log.info("reseal: progress", collection=collection.name, documents=tally.documents)
            values = list(outbox_values(doc))
            if isinstance(sealed_in, Kept):
                self._count_kept(doc, sealed_in, tally)
            else:
                values.extend(sealed_in(doc))
            fresh = self._fresh(doc, values, tally)
            if not fresh:
                continue
            unchanged = {"_id": doc["_id"], **{p: value_at(doc, p) for p in fresh}}
            update: dict[str, Any] = {"$set": fresh}
            if "version" in doc:  # an aggregate: its writers see a new version, and reload
                unchanged["version"] = doc["version"]
                update["$inc"] = {"version": 1}
            written = await collection.update_one(unchanged, update)
            if written.modified_count:
                tally.resealed += len(fresh)
            else:
                tally.changed_meanwhile += len(fresh)
        return tally

    async def database(self, db: Any, plan: Mapping[str, SealedIn | Kept]) -> dict[str, Tally]:
        tallies = {}
        for name, sealed_in in plan.items():
            tallies[name] = tally = await self.collection(db[name], sealed_in)
            log.info("reseal: collection done", collection=name, **vars(tally))
        return tallies


def report(tallies: Mapping[str, Tally], plan: Mapping[str, SealedIn | Kept], key_id: str) -> str:
    lines = [f"re-sealed under key {key_id!r}:"]
    for name, t in tallies.items():
        lines.append(
            f"  {name}: {t.documents} documents, {t.resealed} re-sealed, {t.current} already"
            f" current, {t.changed_meanwhile} changed meanwhile, {t.unreadable} unreadable"
        )
        if t.kept and isinstance(kept := plan[name], Kept):
            lines.append(f"    {t.kept} kept under their key: {kept.why}")
    left = sum(t.left for t in tallies.values())
    kept_count = sum(t.kept for t in tallies.values())
    if left:
        lines.append(
            f"{left} values are still under another key: run it again (unreadable ones are"
            " logged); keep the retired keys until a run reports none"
        )
    elif kept_count:
        lines.append("keep the retired keys in ENCRYPTION_RETIRED_KEYS for the values kept")
    else:
        lines.append("nothing left under a retired key: ENCRYPTION_RETIRED_KEYS may drop them")
    return "\n".join(lines)
