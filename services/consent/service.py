"""Consent's use cases: what the API, the handlers and the due work call.

Every change of a signing request is one decision (domain/signing.py) written with
the events it causes in one write of the request's document. A signature spans
two documents: the request (status, event consent.signed, and the record to
append, sealed) and then its chain record; the append is idempotent (keyed by the
signature id) and a due entry finishes it if a crash came between.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from consent.domain import chain, forms, signing
from consent.domain.signing import SignatureIn
from consent.settings import ConsentSettings
from consent.store import ConsentStores, Sealer
from shared import events as ev
from shared.aggregates import AggregateNotFound, Change
from shared.errors import Conflict, DomainError, NotFound
from shared.events import utcnow
from shared.logs import get_logger
from shared.security import hash_access_token, new_access_token

log = get_logger(__name__)


class ConsentService:
    def __init__(self, stores: ConsentStores, sealer: Sealer, settings: ConsentSettings) -> None:
        self.stores = stores
        self.sealer = sealer
        self.settings = settings

    # --- events from registration ---------------------------------------------------------

    async def on_approved(self, data: ev.RegistrationApproved, event_id: str) -> None:
        rid = data.registration_id
        if await self.stores.requests.collection.find_one({"_id": rid}, {"_id": 1}):
            log.info("signing request exists already", registration_id=rid)
            return
        ref = await self.stores.ref_for(data)
        now = utcnow()
        expires_at = data.hold_expires_at or now + timedelta(
            seconds=self.settings.consent_default_ttl_s
        )
        token = signing.make_token(rid, new_access_token())
        token_hash = hash_access_token(token)
        await self._due_expiry(rid, token_hash, expires_at)
        doc = signing.new_request(
            data, form_ref=ref, token_hash=token_hash, expires_at=expires_at, now=now
        )
        requested = ev.ConsentRequested(
            registration_id=rid, signing_url=self.settings.signing_url(token), expires_at=expires_at
        )
        try:
            await self.stores.requests.create(doc, emit=[requested], caused_by=event_id)
        except DuplicateKeyError:
            log.info("signing request exists already", registration_id=rid)
            return
        log.info("signing requested", registration_id=rid)

    async def on_registration_closed(self, rid: str, event_id: str) -> None:
        def decide(doc: dict[str, Any], _s: Any) -> Change | None:
            return signing.registration_closed(doc)

        try:
            await self.stores.requests.mutate(rid, decide, event_id=event_id)
            return
        except AggregateNotFound:
            pass
        try:
            await self.stores.requests.create(signing.tombstone(rid, utcnow()))
        except DuplicateKeyError:  # approved arrived meanwhile: close that one
            await self.stores.requests.mutate(rid, decide, event_id=event_id)

    async def on_confirmed(self, rid: str, event_id: str) -> None:
        try:
            await self.stores.requests.mutate(
                rid, lambda doc, _s: signing.confirmed(doc), event_id=event_id
            )
        except AggregateNotFound:
            log.info("confirmation for a registration without consent", registration_id=rid)

    # --- the applicant ------------------------------------------------------------------

    async def _by_token(self, token: str) -> tuple[dict[str, Any], str]:
        consent_id = signing.consent_id_of(token)
        doc = await self.stores.requests.get(consent_id) if consent_id else None
        if doc is None:
            raise NotFound("token", "no consent request for this link")
        return doc, hash_access_token(token)

    async def to_sign(
        self, token: str, language: str | None, accept_language: str | None, now: datetime
    ) -> dict[str, Any]:
        doc, token_hash = await self._by_token(token)
        signing.check_token(doc, token_hash, now)
        published = {f["language"]: f for f in await self.stores.published_forms(doc["form_ref"])}
        if not published:
            raise Conflict("form", "no consent form is published for this program")
        chosen = published[forms.choose_language(list(published), language, accept_language)]
        version = forms.current_version(chosen)
        assert version is not None
        return {
            "consent_id": doc["_id"],
            "status": doc["status"],
            "expires_at": doc["expires_at"],
            "reconsent": bool(doc.get("reconsent")),
            "available_languages": sorted(published),
            "form": {
                "form_id": chosen["_id"],
                "version": version["version"],
                "language": version["language"],
                "title": version["title"],
                "body_markdown": version["body_markdown"],
                "clauses": version["clauses"],
                "text_sha256": version["text_sha256"],
                "canonical_text": version["canonical_text"],
                "published_at": version["published_at"],
            },
        }

    async def sign(
        self,
        token: str,
        given: SignatureIn,
        *,
        ip: str | None,
        user_agent: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        doc, token_hash = await self._by_token(token)
        signing.check_token(doc, token_hash, now)
        form_id, version = await self.stores.current_version_with_hash(
            doc["form_ref"], given.text_sha256
        )
        acknowledged = signing.check_signature(version, given)
        rid = doc["_id"]
        signature_id = str(uuid.uuid4())
        seen = {"typed_name": given.typed_name, "ip": ip or "", "user_agent": user_agent or ""}
        personal = self.sealer.seal(signature_id, seen)
        withdrawal_token = new_access_token()
        # Due first: if we die after the signature is written, the record still gets appended.
        await self._due_record(rid, signature_id, now)

        def decide(current: dict[str, Any], _s: Any) -> Change | None:
            body = signing.record_body(
                current,
                signature_id=signature_id,
                form_id=form_id,
                version=version,
                acknowledged=acknowledged,
                signed_at=now,
                personal_digest=chain.personal_digest(personal),
            )
            decision = signing.sign(
                current,
                token_hash,
                now,
                body=body,
                personal=personal,
                withdrawal_token_hash=hash_access_token(withdrawal_token),
            )
            return decision

        try:
            outcome = await self.stores.requests.mutate(rid, decide)
        except DomainError:
            await self.stores.due.delete_one({"_id": f"record:{signature_id}"})
            raise
        await self._after_signature(rid, token_hash, signature_id, form_id, version["version"])
        log.info("consent signed", registration_id=rid, form_id=form_id)
        return {
            "consent_id": rid,
            "status": signing.Status.signed,
            "signature_id": signature_id,
            "form_id": form_id,
            "form_version": version["version"],
            "text_sha256": version["text_sha256"],
            "signed_at": outcome.result["at"],
            "withdrawal_token": withdrawal_token,
        }

    async def _due_record(self, rid: str, signature_id: str, now: datetime) -> None:
        await self.stores.due.insert_one(
            {
                "_id": f"record:{signature_id}",
                "kind": "record",
                "registration_id": rid,
                "signature_id": signature_id,
                "due_at": now + timedelta(seconds=self.settings.record_retry_after_s),
            }
        )

    async def _after_signature(
        self, rid: str, token_hash: str, signature_id: str, form_id: str, version: int
    ) -> None:
        """The signature is written: the link cannot expire any more, the chain record is
        appended (or left to its due entry), and a newer form version asks again."""
        await self.stores.due.delete_one({"_id": self._expiry_key(rid, token_hash)})
        try:
            await self.append_record(rid, signature_id)
        except Exception as exc:  # the due entry retries it
            log.warning("chain append deferred", registration_id=rid, error=type(exc).__name__)
        await self._renew_if_superseded(rid, form_id, version)

    async def decline(self, token: str, now: datetime) -> dict[str, Any]:
        doc, token_hash = await self._by_token(token)
        rid = doc["_id"]
        await self.stores.requests.mutate(
            rid, lambda current, _s: signing.decline(current, token_hash, now)
        )
        await self.stores.due.delete_one({"_id": self._expiry_key(rid, token_hash)})
        log.info("consent declined", registration_id=rid)
        return {"consent_id": rid, "status": signing.Status.declined}

    async def withdraw(self, consent_id: str, token: str) -> dict[str, Any]:
        token_hash = hash_access_token(token)
        try:
            outcome = await self.stores.requests.mutate(
                consent_id,
                lambda current, _s: signing.withdraw(current, token_hash),
            )
        except AggregateNotFound:
            raise NotFound("consent_id", "no consent for this id and token") from None
        log.info("consent withdrawn", registration_id=consent_id, repeated=not outcome.changed)
        return {"consent_id": consent_id, "status": signing.Status.withdrawn}

    # --- the chain ---------------------------------------------------------------------

    async def append_record(self, rid: str, signature_id: str) -> None:
        """Append the signature's chain record and anchor it on the request (idempotent)."""
        doc = await self.stores.requests.get(rid)
        waiting = (doc or {}).get("pending_records", [])
        pending = next((p for p in waiting if p["signature_id"] == signature_id), None)
        if pending is not None:
            seq, hash_hex = await self.stores.chain.append(
                signature_id, pending["body"], pending["personal"]
            )
            await self.stores.requests.mutate(
                rid,
                lambda current, _s: signing.recorded(current, signature_id, seq, hash_hex),
            )
        await self.stores.due.delete_one({"_id": f"record:{signature_id}"})

    # --- re-consent ----------------------------------------------------------------------

    def _renewal_expiry(self, doc: dict[str, Any], now: datetime) -> datetime:
        hold = doc.get("hold_expires_at")
        if not doc.get("confirmed") and hold is not None and hold > now:
            return hold
        return now + timedelta(seconds=self.settings.reconsent_ttl_s)

    async def renew(
        self,
        rid: str,
        now: datetime,
        *,
        event_id: str | None = None,
        match: dict[str, Any] | None = None,
    ) -> bool:
        """Open a new signing round for a signer; with ``match``, only if still needed."""
        doc = await self.stores.requests.get(rid)
        if doc is None:
            raise NotFound("registration_id", "no consent request for this registration")
        token = signing.make_token(rid, new_access_token())
        token_hash = hash_access_token(token)
        expires_at = self._renewal_expiry(doc, now)
        await self._due_expiry(rid, token_hash, expires_at)

        def decide(current: dict[str, Any], _s: Any) -> Change | None:
            if match is not None and not signing.needs_reconsent(current, **match):
                return None
            decision = signing.reopen(
                current,
                token_hash=token_hash,
                signing_url=self.settings.signing_url(token),
                expires_at=expires_at,
            )
            return decision

        outcome = await self.stores.requests.mutate(rid, decide, event_id=event_id)
        if outcome.changed and outcome.doc and outcome.doc.get("token_hash") == token_hash:
            log.info("re-consent requested", registration_id=rid)
            return True
        await self.stores.due.delete_one({"_id": self._expiry_key(rid, token_hash)})
        return False

    async def _renew_if_superseded(self, rid: str, form_id: str, signed_version: int) -> None:
        """A version published while this signature was in flight: ask again at once."""
        form = await self.stores.forms.get(form_id)
        if form and form["current_version"] > signed_version:
            match = {"form_id": form_id, "version": form["current_version"]}
            await self.renew(rid, utcnow(), match={**match, "include_confirmed": False})

    async def reconsent_due(self, _now: datetime) -> list[str]:
        cursor = self.stores.forms.collection.find({"reconsent_pending": True}, {"_id": 1})
        return [f["_id"] async for f in cursor]

    async def run_reconsent(self, form_id: str) -> None:
        form = await self.stores.forms.get(form_id)
        for request in (form or {}).get("reconsent_requests", []):
            match = {
                "form_id": form_id,
                "version": request["version"],
                "include_confirmed": request["include_confirmed"],
            }
            asked = 0
            fields = ("status", "signed_form_id", "signed_version", "confirmed")
            cursor = self.stores.requests.collection.find(
                {"status": "signed", "signed_form_id": form_id},
                {**dict.fromkeys(fields, 1), "registration_closed": 1},
            )
            async for doc in cursor:
                if signing.needs_reconsent(doc, **match):
                    renewed = await self.renew(
                        doc["_id"], utcnow(), event_id=f"reconsent:{request['id']}", match=match
                    )
                    asked += int(renewed)
            done = request["id"]
            await self.stores.forms.mutate(
                form_id, lambda doc, _s, done=done: Change(set=forms.reconsent_done(doc, done))
            )
            log.info("re-consent asked", form_id=form_id, version=request["version"], asked=asked)

    # --- due work: expiry and unfinished chain records -------------------------------------

    @staticmethod
    def _expiry_key(rid: str, token_hash: str) -> str:
        return f"expire:{rid}:{token_hash[:24]}"

    async def _due_expiry(self, rid: str, token_hash: str, due_at: datetime) -> None:
        await self.stores.due.insert_one(
            {
                "_id": self._expiry_key(rid, token_hash),
                "kind": "expire",
                "registration_id": rid,
                "token_hash": token_hash,
                "due_at": due_at,
            }
        )

    async def due_items(self, now: datetime) -> list[str]:
        cursor = self.stores.due.find({"due_at": {"$lte": now}}, {"_id": 1}).limit(500)
        return [d["_id"] async for d in cursor]

    async def run_due(self, item_id: str) -> None:
        item = await self.stores.due.find_one({"_id": item_id})
        if item is None:
            return
        rid = item["registration_id"]
        if item["kind"] == "record":
            await self.append_record(rid, item["signature_id"])
            return
        now = utcnow()

        def decide(doc: dict[str, Any], _s: Any) -> Change | None:
            if doc.get("token_hash") != item["token_hash"]:
                return None
            return signing.expire(doc, now)

        try:
            outcome = await self.stores.requests.mutate(rid, decide)
        except AggregateNotFound:
            outcome = None
        doc = outcome.doc if outcome else None
        if doc is None or doc.get("token_hash") != item["token_hash"] or doc["status"] != "open":
            await self.stores.due.delete_one({"_id": item_id})
            if outcome is not None and outcome.changed:
                log.info("signing link expired", registration_id=rid)
