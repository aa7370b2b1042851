"""Verification of the whole audit trail, end to end (used by ``python -m consent.verify``).

1. The chain: every record in order from 1, each linked to the previous one's hash,
   each hash recomputed from its content, each MAC checked when the key is given,
   each record's sealed personal fields matching the digest inside the hash.
2. The anchors: each signing request keeps the number and hash of its signatures'
   records, so a removed or replaced record (even at the end of the chain, which the
   links alone cannot show) is found.
3. The texts: every published form version still hashes to its stored hash.

It reports the first broken link of the chain, and every broken anchor and text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from consent.domain import chain, forms


@dataclass
class AuditReport:
    chain: chain.ChainReport
    anchors_checked: int = 0
    broken_anchors: list[dict[str, Any]] = field(default_factory=list)
    versions_checked: int = 0
    broken_versions: list[str] = field(default_factory=list)
    pending_records: int = 0

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.broken_anchors and not self.broken_versions

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["chain"]["ok"] = self.chain.ok
        return out


async def verify_database(db: AsyncDatabase, key: bytes | None) -> AuditReport:
    records = db["signatures"].find({}).sort("_id", 1)
    report = AuditReport(chain=chain.ChainReport())
    # The chain check is a pure fold over the records; feed it as they stream in.
    streamed: list[dict[str, Any]] = []
    async for record in records:
        streamed.append(record)
        if len(streamed) >= 1000:
            chain.verify(streamed, key, report.chain)
            streamed = []
            if report.chain.broken:
                break
    if not report.chain.broken:
        chain.verify(streamed, key, report.chain)
    hashes: dict[int, str] = {}
    async for request in db["requests"].find({}, {"signatures": 1, "pending_records": 1}):
        report.pending_records += len(request.get("pending_records") or [])
        for anchor in request.get("signatures") or []:
            report.anchors_checked += 1
            hashes[anchor["seq"]] = anchor["hash"]
            record = await db["signatures"].find_one({"_id": chain.seq_key(anchor["seq"])})
            if record is None or record.get("hash") != anchor["hash"]:
                report.broken_anchors.append(
                    {
                        "registration_id": request["_id"],
                        "seq": anchor["seq"],
                        "reason": "record missing" if record is None else "record replaced",
                    }
                )
    async for form in db["forms"].find({}, {"versions": 1}):
        for version in form.get("versions", []):
            report.versions_checked += 1
            if not forms.version_intact(version):
                report.broken_versions.append(f"{form['_id']} v{version['version']}")
    return report
