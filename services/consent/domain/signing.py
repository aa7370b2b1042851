"""A registration's signing request and what may happen to it (pure: no I/O).

One request per registration (``_id`` = the registration id = the consent id)::

    open -(sign)-> signed -(withdraw)-> withdrawn
    open -(decline)-> declined       open -(token expires)-> expired
    open -(registration withdrawn or expired)-> cancelled
    signed -(form superseded, or a coordinator asks)-> open again (a new round, new link)

The signing link is ``<consent_id>.<secret>``: 256 random bits, stored only as the
SHA-256 of the whole token, single-use, expiring with the registration's hold. The
id part only finds the request (one read by ``_id``); the hash decides. Hashes of
earlier links are kept with how they ended, so a reused link is told "already
used" rather than "unknown". Whoever signs gets a withdrawal token (also stored
hashed) for ``POST /consents/{consent_id}/withdraw``.

Each function returns a :class:`~shared.decisions.Change` (fields to set, event payloads) or
raises one of shared.errors' refusals (the field at fault, a message).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import events as ev
from shared.decisions import Change
from shared.errors import Conflict, Gone, Invalid, NotFound


class Status(StrEnum):
    open = "open"
    signed = "signed"
    declined = "declined"
    expired = "expired"
    withdrawn = "withdrawn"
    cancelled = "cancelled"


class SignatureIn(BaseModel):
    """What the applicant sends to sign."""

    model_config = ConfigDict(extra="forbid")
    text_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the hash of the text that was shown"
    )
    typed_name: str = Field(min_length=1, max_length=200, description="full name or alias")
    acknowledged_clauses: list[str] = Field(max_length=50, description="every clause id")
    agree_to_sign_electronically: bool

    @field_validator("typed_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


# --- tokens ----------------------------------------------------------------------------


def make_token(consent_id: str, secret: str) -> str:
    return f"{consent_id}.{secret}"


def consent_id_of(token: str) -> str | None:
    consent_id, dot, secret = token.rpartition(".")
    if not dot or not consent_id or len(secret) < 32 or len(token) > 300:
        return None
    return consent_id


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def check_token(doc: dict[str, Any], token_hash: str, now: datetime) -> None:
    """Refuse a link that is unknown, used, replaced or expired."""
    if _same(doc.get("token_hash"), token_hash):
        status = Status(doc["status"])
        if status == Status.open:
            if doc["expires_at"] <= now:
                raise Gone("token", "this signing link has expired")
            return
    for past in doc.get("past_tokens", []):
        if _same(past["hash"], token_hash):
            outcome = past["outcome"]
            if outcome in ("signed", "declined"):
                raise Conflict("token", f"this signing link was already used ({outcome})")
            if outcome == "expired":
                raise Gone("token", "this signing link has expired")
            if outcome == "replaced":
                raise Gone("token", "a newer signing link replaced this one")
            raise Gone("token", "this consent request is no longer open")
    raise NotFound("token", "no consent request for this link")


def _close_token(doc: dict[str, Any], outcome: str) -> dict[str, Any]:
    if doc.get("token_hash") is None:
        return {}
    past = [*doc.get("past_tokens", []), {"hash": doc["token_hash"], "outcome": outcome}]
    return {"token_hash": None, "past_tokens": past}


# --- creation ----------------------------------------------------------------------------


def new_request(
    approved: ev.RegistrationApproved,
    *,
    form_ref: str,
    token_hash: str,
    expires_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    return {
        "_id": approved.registration_id,
        "cohort_id": approved.cohort_id,
        "program_id": approved.program_id,
        "form_ref": form_ref,
        "price": approved.price.model_dump() if approved.price else None,
        "refundable": approved.refundable,
        "hold_expires_at": approved.hold_expires_at,
        "status": Status.open.value,
        "round": 1,
        "reconsent": False,
        "token_hash": token_hash,
        "expires_at": expires_at,
        "past_tokens": [],
        "withdrawal_token_hashes": [],
        "signed": None,
        "signed_form_id": None,
        "signed_version": 0,
        "signatures": [],
        "pending_records": [],
        "needs_record": False,
        "confirmed": False,
        "registration_closed": False,
        "created_at": now,
    }


def tombstone(registration_id: str, now: datetime) -> dict[str, Any]:
    """A request for a registration that closed before its approval reached us.

    It makes a late ``registration.approved`` a no-op (the create finds it exists).
    """
    return {
        "_id": registration_id,
        "status": Status.cancelled.value,
        "round": 0,
        "token_hash": None,
        "past_tokens": [],
        "withdrawal_token_hashes": [],
        "signed": None,
        "signatures": [],
        "pending_records": [],
        "needs_record": False,
        "registration_closed": True,
        "created_at": now,
    }


# --- the applicant -------------------------------------------------------------------------


def check_signature(version: dict[str, Any], given: SignatureIn) -> list[str]:
    """The clause ids acknowledged, in the form's order; refuses an incomplete signature."""
    if not given.agree_to_sign_electronically:
        raise Invalid("agree_to_sign_electronically", "agreement to sign electronically")
    ids = [c["id"] for c in version["clauses"]]
    unknown = sorted(set(given.acknowledged_clauses) - set(ids))
    if unknown:
        raise Invalid("acknowledged_clauses", f"unknown clause ids: {', '.join(unknown)}")
    missing = [i for i in ids if i not in given.acknowledged_clauses]
    if missing:
        raise Invalid(
            "acknowledged_clauses",
            f"each clause must be acknowledged; missing: {', '.join(missing)}",
        )
    return ids


def ms(moment: datetime) -> datetime:
    """Millisecond precision: what MongoDB keeps, so hashes of times survive a round trip."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def record_body(
    doc: dict[str, Any],
    *,
    signature_id: str,
    form_id: str,
    version: dict[str, Any],
    acknowledged: list[str],
    signed_at: datetime,
    personal_digest: str,
) -> dict[str, Any]:
    """What the chain record of a signature proves (no personal data in clear)."""
    return {
        "signature_id": signature_id,
        "registration_id": doc["_id"],
        "form_id": form_id,
        "form_version": version["version"],
        "text_sha256": version["text_sha256"],
        "language": version["language"],
        "clauses_acknowledged": acknowledged,
        "electronic_signature_agreed": True,
        "method": "typed_name",
        "signed_at": ms(signed_at).isoformat(),
        "round": doc["round"],
        "reconsent": bool(doc.get("reconsent")),
        "personal_digest": personal_digest,
    }


def sign(
    doc: dict[str, Any],
    token_hash: str,
    now: datetime,
    *,
    body: dict[str, Any],
    personal: dict[str, str],
    withdrawal_token_hash: str,
) -> Change:
    check_token(doc, token_hash, now)
    signed_at = ms(now)
    signed = {
        "signature_id": body["signature_id"],
        "form_id": body["form_id"],
        "version": body["form_version"],
        "text_sha256": body["text_sha256"],
        "language": body["language"],
        "at": signed_at,
        "round": doc["round"],
    }
    pending = {"signature_id": body["signature_id"], "body": body, "personal": personal}
    price = ev.Money(**doc["price"]) if doc.get("price") else None
    return Change(
        set={
            "status": Status.signed.value,
            "signed": signed,
            "signed_form_id": body["form_id"],
            "signed_version": body["form_version"],
            **_close_token(doc, "signed"),
            "pending_records": [*doc.get("pending_records", []), pending],
            "needs_record": True,
            "withdrawal_token_hashes": [
                *doc.get("withdrawal_token_hashes", []),
                withdrawal_token_hash,
            ],
        },
        emit=[
            ev.ConsentSigned(
                registration_id=doc["_id"],
                program_id=doc.get("program_id"),
                form_id=body["form_id"],
                form_version=body["form_version"],
                text_sha256=body["text_sha256"],
                signed_at=signed_at,
                price=price,
                refundable=bool(doc.get("refundable")),
                hold_expires_at=doc.get("hold_expires_at"),
                reconsent=bool(doc.get("reconsent")),
            )
        ],
        result=signed,
    )


def decline(doc: dict[str, Any], token_hash: str, now: datetime) -> Change:
    check_token(doc, token_hash, now)
    return Change(
        set={"status": Status.declined.value, **_close_token(doc, "declined")},
        emit=[ev.ConsentDeclined(registration_id=doc["_id"])],
    )


def withdraw(doc: dict[str, Any], withdrawal_token_hash: str) -> Change | None:
    """The signer takes consent back; a second call changes nothing."""
    if not any(_same(h, withdrawal_token_hash) for h in doc.get("withdrawal_token_hashes", [])):
        # The same answer as for an unknown id, so ids cannot be probed.
        raise NotFound("consent_id", "no consent for this id and token")
    if doc["status"] == Status.withdrawn:
        return None
    return Change(
        set={"status": Status.withdrawn.value, **_close_token(doc, "cancelled")},
        emit=[ev.ConsentWithdrawn(registration_id=doc["_id"])],
    )


# --- time, the registration, coordinators --------------------------------------------------


def expire(doc: dict[str, Any], now: datetime) -> Change | None:
    if doc["status"] != Status.open or doc["expires_at"] > now:
        return None
    return Change(
        set={"status": Status.expired.value, **_close_token(doc, "expired")},
        emit=[ev.ConsentExpired(registration_id=doc["_id"])],
    )


def registration_closed(doc: dict[str, Any]) -> Change | None:
    """The registration was withdrawn or expired: an open request is cancelled, quietly."""
    changes: dict[str, Any] = {}
    if not doc.get("registration_closed"):
        changes["registration_closed"] = True
    if doc["status"] == Status.open:
        changes.update({"status": Status.cancelled.value, **_close_token(doc, "cancelled")})
    return Change(set=changes) if changes else None


def confirmed(doc: dict[str, Any]) -> Change | None:
    return None if doc.get("confirmed") else Change(set={"confirmed": True})


def needs_reconsent(
    doc: dict[str, Any], *, form_id: str, version: int, include_confirmed: bool
) -> bool:
    return (
        doc["status"] == Status.signed
        and not doc.get("registration_closed")
        and doc.get("signed_form_id") == form_id
        and doc.get("signed_version", 0) < version
        and (include_confirmed or not doc.get("confirmed"))
    )


def reopen(
    doc: dict[str, Any],
    *,
    token_hash: str,
    signing_url: str,
    expires_at: datetime,
) -> Change:
    """Ask a signer to sign again (a superseded form, or a coordinator's request)."""
    if doc["status"] != Status.signed or doc.get("registration_closed"):
        raise Conflict("consent_id", f"only a signed consent can be renewed ({doc['status']})")
    return Change(
        set={
            "status": Status.open.value,
            "round": doc["round"] + 1,
            "reconsent": True,
            "token_hash": token_hash,
            "expires_at": expires_at,
        },
        emit=[
            ev.ConsentRequested(
                registration_id=doc["_id"],
                signing_url=signing_url,
                expires_at=expires_at,
                reconsent=True,
            )
        ],
    )


def recorded(doc: dict[str, Any], signature_id: str, seq: int, hash_hex: str) -> Change | None:
    """The chain record of a signature was appended: anchor it here."""
    pending = doc.get("pending_records", [])
    entry = next((p for p in pending if p["signature_id"] == signature_id), None)
    if entry is None:
        return None
    left = [p for p in pending if p["signature_id"] != signature_id]
    body = entry["body"]
    anchor = {
        "signature_id": signature_id,
        "seq": seq,
        "hash": hash_hex,
        "form_id": body["form_id"],
        "form_version": body["form_version"],
        "text_sha256": body["text_sha256"],
        "signed_at": body["signed_at"],
    }
    return Change(
        set={
            "pending_records": left,
            "needs_record": bool(left),
            "signatures": [*doc.get("signatures", []), anchor],
        }
    )
