"""Consent's MongoDB collections, the sealing of personal fields and the signature chain.

- ``forms``: an aggregate per form (``<ref>.<language>``): the draft and the frozen
  versions, appended only (domain/forms.py).
- ``requests``: an aggregate per registration (``_id`` = registration id = consent
  id): the signing request, its token hashes, the latest signature, anchors of its
  chain records, and its outbox. The outbox is sealed at rest: consent.requested
  carries the signing link, a credential.
- ``signatures``: the chain (domain/chain.py); ``_id`` is the zero-padded sequence
  number, so appending is a unique-key insert: two writers can never both take
  number n, and a record only follows one that exists. A unique index on
  ``signature_id`` keeps a retried append from adding a signature twice.
- ``due``: small, only what is waiting: open requests' expiry, signatures whose
  chain record is not appended yet. The due runners scan this, not ``requests``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from consent.domain import chain, forms
from shared import events as ev
from shared.aggregates import AggregateStore, StoreFactory
from shared.erasure import erasures_store
from shared.errors import Conflict
from shared.logs import get_logger
from shared.reseal import Kept, Sealed, SealedIn
from shared.security import FieldCipher

log = get_logger(__name__)

INDEXES = {
    "forms": [],
    "requests": [],
    "signatures": [
        IndexModel([("signature_id", ASCENDING)], unique=True, name="one_record_per_signature")
    ],
    "due": [IndexModel([("due_at", ASCENDING)], name="by_due_at")],
}


class Sealer:
    """Seals a signature's personal fields, each bound to its signature and field."""

    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    @staticmethod
    def context(signature_id: str, field: str) -> str:
        return f"consent:signature:{signature_id}:{field}"

    def seal(self, signature_id: str, values: dict[str, str]) -> dict[str, str]:
        return {
            k: self.cipher.encrypt(v, context=self.context(signature_id, k))
            for k, v in values.items()
        }

    def open(self, signature_id: str, sealed: dict[str, str]) -> dict[str, str]:
        return {
            k: self.cipher.decrypt(v, context=self.context(signature_id, k))
            for k, v in sealed.items()
            if v is not None
        }


class SignatureChain:
    """Appends records to the chain; safe with any number of writers.

    Each process remembers the tail it last saw. An append tries number tail + 1;
    if another writer took it, the record there becomes the new tail and the append
    tries again. Appends of one process run one at a time (they would only collide).
    """

    def __init__(self, collection: AsyncCollection, key: bytes | None) -> None:
        self.collection = collection
        self.key = key
        self._tail: tuple[int, str] | None = None
        self._lock = asyncio.Lock()
        self.collisions = 0

    async def load_tail(self) -> tuple[int, str]:
        last = self.collection.find({}, {"seq": 1, "hash": 1}).sort("_id", -1).limit(1)
        found = await last.to_list()
        return (found[0]["seq"], found[0]["hash"]) if found else (0, chain.GENESIS)

    async def append(
        self, signature_id: str, body: dict[str, Any], personal: dict[str, str]
    ) -> tuple[int, str]:
        """Append (or find, if a previous attempt did) the record of ``signature_id``."""
        async with self._lock:
            if self._tail is None:
                self._tail = await self.load_tail()
            probes = 0
            for _ in range(100_000):  # bounded: each turn follows a record someone added
                seq, prev = self._tail[0] + 1, self._tail[1]
                record = chain.make_record(seq, prev, body, personal, self.key)
                try:
                    await self.collection.insert_one(record)
                except DuplicateKeyError:
                    self.collisions += 1
                    taken = await self.collection.find_one({"_id": chain.seq_key(seq)})
                    if taken is None:
                        # Not the number: the signature is already in the chain.
                        found = await self.collection.find_one({"signature_id": signature_id})
                        if found is not None:
                            return found["seq"], found["hash"]
                        continue
                    if taken["signature_id"] == signature_id:
                        self._tail = (taken["seq"], taken["hash"])
                        return taken["seq"], taken["hash"]
                    probes += 1
                    # Far behind (another replica wrote many): jump to the real tail.
                    self._tail = (
                        await self.load_tail() if probes > 8 else (taken["seq"], taken["hash"])
                    )
                    continue
                self._tail = (seq, record["hash"])
                return seq, record["hash"]
            raise RuntimeError("could not append to the signature chain")

    async def get(self, seq: int) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": chain.seq_key(seq)})


class NoPublishedForm(RuntimeError):
    """registration.approved for a program whose consent form is not published yet.

    The event is retried and then dead-lettered: an operator replays it once a
    coordinator has published the form (better than sending a link that fails).
    """


_CHAINED = (
    "the signature chain's digests cover the sealed bytes (consent/domain/chain.py), so"
    " they stay as sealed until erasure or the end of retention drops them"
)


def _pending_personal(doc: dict[str, Any]) -> list[Sealed]:
    return [
        (f"pending_records.{i}.personal.{k}", Sealer.context(p["signature_id"], k))
        for i, p in enumerate(doc.get("pending_records") or [])
        for k in p.get("personal") or {}
    ]


# Where this service's sealed values are, for ``python -m consent reseal``
# (shared/reseal.py re-seals the requests' outbox; a signature's fields are kept).
SEALED: dict[str, SealedIn | Kept] = {
    "requests": Kept(_pending_personal, _CHAINED),
    "signatures": Kept(
        lambda doc: [
            (f"personal.{k}", Sealer.context(doc["signature_id"], k))
            for k in doc.get("personal") or {}
        ],
        _CHAINED,
    ),
}

SOURCE = "holdspace/consent"


class ConsentStores:
    @classmethod
    def open(
        cls, store: StoreFactory, db: Any, cipher: FieldCipher, chain_key: bytes | None
    ) -> ConsentStores:
        """The stores as every process of the service opens them (``store``: the app's
        Runtime.store, or tests' in-memory one)."""
        forms = store("forms")
        # Sealed outbox: consent.requested carries the signing link.
        requests = store("requests", cipher=cipher, enveloper=ev.registration_enveloper(SOURCE))
        return cls(forms, requests, db, chain_key, erasures_store(store, SOURCE))

    def __init__(
        self,
        forms: AggregateStore,
        requests: AggregateStore,
        db: Any,
        chain_key: bytes | None,
        erasures: AggregateStore | None = None,
    ) -> None:
        self.forms = forms
        self.requests = requests
        self.erasures = erasures
        self.signatures = db["signatures"]
        self.due = db["due"]
        self.chain = SignatureChain(self.signatures, chain_key)

    async def form(self, form_id: str) -> dict[str, Any]:
        return await self.forms.require(form_id, "form_id", "no such form")

    async def request(self, rid: str) -> dict[str, Any]:
        return await self.requests.require(
            rid, "registration_id", "no consent request for this registration"
        )

    async def published_forms(self, ref: str) -> list[dict[str, Any]]:
        cursor = self.forms.collection.find({"ref": ref}, {"outbox": 0, "inbox": 0, "draft": 0})
        return [f async for f in cursor if f.get("current_version")]

    async def ref_for(self, approved: ev.RegistrationApproved) -> str:
        if approved.consent_form_ref:
            ref = approved.consent_form_ref
        else:
            found = await self.forms.collection.find_one(
                {"program_id": approved.program_id}, {"ref": 1}
            )
            ref = found["ref"] if found else forms.ref_for_program(approved.program_id)
        if not await self.published_forms(ref):
            raise NoPublishedForm(f"no published consent form for ref {ref!r}")
        return ref

    async def current_version_with_hash(
        self, ref: str, text_sha256: str
    ) -> tuple[str, dict[str, Any]]:
        for form in await self.published_forms(ref):
            version = forms.current_version(form)
            if version is not None and version["text_sha256"] == text_sha256:
                return form["_id"], version
        raise Conflict(
            "text_sha256",
            "this is not the hash of the current version of the form: reload it and sign again",
        )
