"""The signature records' hash chain (pure: no I/O).

Record ``n`` stores ``prev_hash`` = the hash of record ``n - 1`` (64 zeros for the
first) and its own ``hash`` = SHA-256 of the canonical JSON of ``{seq, prev_hash,
body}``. The body holds what a signature proves (registration, form version and
text hash, language, each clause acknowledged, time, method) and the digest of the
sealed personal fields (typed name, IP, user agent), so the chain covers them
without holding them in clear, and an erasure can drop them without breaking it.

Anyone can recompute the SHA-256 chain. With the service's chain key, each record
also carries ``mac`` = HMAC-SHA256(key, hash): someone who can write the database
but does not hold the key cannot rewrite the chain consistently after a change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
PERSONAL_FIELDS = ("typed_name", "ip", "user_agent")


def canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def record_hash(seq: int, prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({"seq": seq, "prev_hash": prev_hash, "body": body})).hexdigest()


def record_mac(key: bytes, hash_hex: str) -> str:
    return hmac.new(key, hash_hex.encode(), hashlib.sha256).hexdigest()


def personal_digest(sealed: dict[str, str]) -> str:
    """Digest of the sealed (encrypted) personal fields, as stored."""
    return hashlib.sha256(canonical({k: sealed.get(k) for k in PERSONAL_FIELDS})).hexdigest()


def seq_key(seq: int) -> str:
    """A record's ``_id``: zero-padded, so the string order is the chain order."""
    return f"{seq:012d}"


def make_record(
    seq: int,
    prev_hash: str,
    body: dict[str, Any],
    personal: dict[str, str],
    key: bytes | None,
) -> dict[str, Any]:
    h = record_hash(seq, prev_hash, body)
    doc = {
        "_id": seq_key(seq),
        "seq": seq,
        "signature_id": body["signature_id"],
        "prev_hash": prev_hash,
        "body": body,
        "personal": personal,
        "hash": h,
    }
    if key is not None:
        doc["mac"] = record_mac(key, h)
    return doc


@dataclass
class Broken:
    seq: int
    reason: str


@dataclass
class ChainReport:
    records: int = 0
    head_hash: str = GENESIS
    head_seq: int = 0
    broken: Broken | None = None
    macs_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None


def check_record(
    record: dict[str, Any], *, expected_seq: int, prev_hash: str, key: bytes | None
) -> str | None:
    """Why ``record`` is not the valid link ``expected_seq`` after ``prev_hash`` (None if it is)."""
    if record.get("seq") != expected_seq or record.get("_id") != seq_key(expected_seq):
        return f"record {seq_key(expected_seq)} is missing (found {record.get('_id')!r} next)"
    if record.get("prev_hash") != prev_hash:
        return "prev_hash does not match the hash of the previous record"
    body = record.get("body")
    if not isinstance(body, dict):
        return "the record has no body"
    if record.get("hash") != record_hash(expected_seq, prev_hash, body):
        return "the record's content does not match its hash (the record was changed)"
    if record.get("signature_id") != body.get("signature_id"):
        return "signature_id differs from the one in the hashed body"
    personal = record.get("personal")
    if personal is not None and personal_digest(personal) != body.get("personal_digest"):
        return "the sealed personal fields do not match the digest in the hashed body"
    if key is not None:
        mac = record.get("mac")
        if mac is None or not hmac.compare_digest(mac, record_mac(key, record["hash"])):
            return "the record's MAC does not verify under the chain key (rewritten chain)"
    return None


def verify(
    records: Iterable[dict[str, Any]],
    key: bytes | None = None,
    report: ChainReport | None = None,
) -> ChainReport:
    """Check every link in order; stop at the first broken one.

    With ``report``, go on from where an earlier call (an earlier batch) stopped.
    """
    report = report or ChainReport()
    if report.broken:
        return report
    for record in records:
        expected = report.head_seq + 1
        reason = check_record(record, expected_seq=expected, prev_hash=report.head_hash, key=key)
        if reason is not None:
            report.broken = Broken(expected, reason)
            return report
        report.records += 1
        report.head_seq = expected
        report.head_hash = record["hash"]
        if key is not None:
            report.macs_checked += 1
    return report
