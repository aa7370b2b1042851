"""What coordinators read of consent: forms and their versions, a registration's
consent request, and a signature's evidence checked against the chain.

Reads only: nothing here writes, and the routes read through this module, never
through a collection. Personal fields of a signature are opened for the evidence only.
"""

from __future__ import annotations

from typing import Any

from consent.domain import chain, forms
from consent.store import ConsentStores, Sealer
from shared.errors import Conflict, NotFound
from shared.export import staff_unnamed


class ConsentViews:
    def __init__(self, stores: ConsentStores, sealer: Sealer) -> None:
        self.stores = stores
        self.sealer = sealer

    async def forms(self, ref: str | None, program_id: str | None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if ref:
            query["ref"] = ref
        if program_id:
            query["program_id"] = program_id
        cursor = self.stores.forms.collection.find(query, {"outbox": 0, "inbox": 0})
        return [form_out(f) async for f in cursor]

    async def form(self, form_id: str) -> dict[str, Any]:
        return form_out(await self.stores.form(form_id))

    async def version(self, form_id: str, version: int) -> dict[str, Any]:
        found = forms.version_of(await self.stores.form(form_id), version)
        if found is None:
            raise NotFound("version", "no such version")
        return {"form_id": form_id, **found}

    async def request(self, rid: str) -> dict[str, Any]:
        return request_out(await self.stores.request(rid))

    async def export(self, rid: str) -> dict[str, Any]:
        """Everything consent holds about the applicant's registration, for their data
        export: the request and each signature's record with its fields opened."""
        try:
            doc = await self.stores.request(rid)
        except NotFound:
            return {"consent": None, "signatures": []}
        signatures = [
            await self.evidence(rid, anchor["signature_id"]) for anchor in doc.get("signatures", [])
        ]
        return staff_unnamed({"consent": request_out(doc), "signatures": signatures})

    async def evidence(self, rid: str, signature_id: str | None = None) -> dict[str, Any]:
        """A signature's record, checked: its links in the chain, its anchor on the
        request, and the signed text against the published version it names."""
        anchor = await self._anchor(rid, signature_id)
        seq = anchor["seq"]
        record = await self.stores.chain.get(seq)
        checks: dict[str, Any] = {"record_present": record is not None}
        form_version = None
        personal: dict[str, str] = {}
        if record is not None:
            checks |= await self._chain_checks(record, anchor)
            body = record.get("body", {})
            form = await self.stores.forms.get(body.get("form_id", ""))
            form_version = forms.version_of(form, body.get("form_version", 0)) if form else None
            intact = (
                form_version is not None
                and forms.version_intact(form_version)
                and form_version["text_sha256"] == body.get("text_sha256")
            )
            checks["signed_text"] = "ok" if intact else "broken"
            try:
                personal = self.sealer.open(record["signature_id"], record.get("personal") or {})
            except Exception:
                checks["personal_fields"] = "cannot be opened"
        verified = record is not None and all(
            checks.get(k) in ("ok", "head of the chain")
            for k in ("record_and_link_to_previous", "link_to_next", "anchored", "signed_text")
        )
        return {
            "registration_id": rid,
            "signature_id": anchor["signature_id"],
            "verified": verified,
            "checks": checks,
            "record": None if record is None else _record_out(record, personal),
            "signed_text": None
            if form_version is None
            else {k: form_version[k] for k in SIGNED_TEXT_FIELDS},
        }

    async def _anchor(self, rid: str, signature_id: str | None) -> dict[str, Any]:
        doc = await self.stores.request(rid)
        anchors = doc.get("signatures", [])
        if signature_id is not None:
            anchors = [a for a in anchors if a["signature_id"] == signature_id]
        if not anchors:
            if doc.get("pending_records"):
                raise Conflict("signature_id", "the signature is being recorded; try again")
            raise NotFound("signature_id", "no recorded signature for this registration")
        return anchors[-1]

    async def _chain_checks(self, record: dict[str, Any], anchor: dict[str, Any]) -> dict[str, str]:
        seq = anchor["seq"]
        previous = await self.stores.chain.get(seq - 1) if seq > 1 else None
        following = await self.stores.chain.get(seq + 1)
        prev_hash = previous["hash"] if previous else chain.GENESIS
        problem = chain.check_record(
            record, expected_seq=seq, prev_hash=prev_hash, key=self.stores.chain.key
        )
        if following is None:
            to_next = "head of the chain"
        else:
            to_next = "ok" if following.get("prev_hash") == record.get("hash") else "broken"
        return {
            "record_and_link_to_previous": problem or "ok",
            "link_to_next": to_next,
            "anchored": "ok" if record.get("hash") == anchor["hash"] else "broken",
        }


SIGNED_TEXT_FIELDS = (
    "version",
    "language",
    "title",
    "body_markdown",
    "clauses",
    "text_sha256",
    "canonical_text",
    "published_at",
)


def _record_out(record: dict[str, Any], personal: dict[str, str]) -> dict[str, Any]:
    return {
        "seq": record["seq"],
        "prev_hash": record["prev_hash"],
        "hash": record["hash"],
        "mac_present": "mac" in record,
        **record["body"],
        **personal,
    }


def form_out(doc: dict[str, Any]) -> dict[str, Any]:
    current = forms.current_version(doc)
    return {
        "form_id": doc["_id"],
        "ref": doc["ref"],
        "program_id": doc.get("program_id"),
        "language": doc["language"],
        "draft": doc["draft"],
        "current_version": doc["current_version"],
        "current_text_sha256": current["text_sha256"] if current else None,
        "versions": [
            {
                "version": v["version"],
                "text_sha256": v["text_sha256"],
                "published_at": v["published_at"],
                "superseded": v["version"] != doc["current_version"],
            }
            for v in doc.get("versions", [])
        ],
        "reconsent_pending": doc.get("reconsent_pending", False),
    }


def request_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "registration_id": doc["_id"],
        "status": doc["status"],
        "round": doc.get("round"),
        "reconsent": doc.get("reconsent", False),
        "expires_at": doc.get("expires_at"),
        "form_ref": doc.get("form_ref"),
        "confirmed": doc.get("confirmed", False),
        "registration_closed": doc.get("registration_closed", False),
        "signed": doc.get("signed"),
        "signatures": doc.get("signatures", []),
        "records_pending": len(doc.get("pending_records") or []),
    }
