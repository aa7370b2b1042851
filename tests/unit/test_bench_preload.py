"""The data-size phase's copies: consistent worlds with new ids, nothing unique repeated."""

from __future__ import annotations

import uuid

from bson import ObjectId
from holdspace_bench import preload

REG = "0b6f3a52-94a4-4a57-8f0e-3f1f3c2a9d11"
COHORT = "7d1c2b3a-1111-4c22-9333-444455556666"


def registration() -> dict:
    return {
        "_id": REG,
        "cohort_id": COHORT,
        "dedupe_key": f"{COHORT}:9f86d081884c7d65",
        "idempotency": "ramp100-abc-17",
        "status": "confirmed",
        "traces": {REG: "00-abc-def-01"},
        "events": [{"id": str(uuid.uuid4()), "subject": f"registration/{REG}"}],
        "version": 7,
    }


def test_copies_needed_reach_the_target() -> None:
    assert preload.copies_needed(17_000, 100_000) == 5  # 6 x 17,000 = 102,000
    assert preload.copies_needed(100_000, 100_000) == 0
    assert preload.copies_needed(0, 100_000) == 0
    assert preload.copies_needed(1, 3) == 2


def test_every_id_is_mapped_the_same_way_wherever_it_stands() -> None:
    doc = registration()
    out = preload.copied_document(doc, 3, ["dedupe_key"])
    new_reg, new_cohort = preload.mapped_id(REG, 3), preload.mapped_id(COHORT, 3)
    assert out["_id"] == new_reg and new_reg != REG
    assert out["cohort_id"] == new_cohort
    assert out["dedupe_key"].startswith(new_cohort)  # an id inside text
    assert list(out["traces"]) == [new_reg]  # an id as a key
    assert out["events"][0]["subject"] == f"registration/{new_reg}"
    assert out["version"] == 7 and out["status"] == "confirmed"
    assert doc == registration() | {"events": doc["events"]}  # the original untouched
    uuid.UUID(out["_id"])  # still a UUID the services can parse


def test_copies_differ_from_each_other_and_are_stable() -> None:
    a = preload.copied_document(registration(), 1, ["dedupe_key"])
    b = preload.copied_document(registration(), 2, ["dedupe_key"])
    assert a["_id"] != b["_id"] and a["dedupe_key"] != b["dedupe_key"]
    assert preload.mapped_id(REG, 1) == preload.mapped_id(REG, 1)


def test_unique_values_without_an_id_get_the_copy_number() -> None:
    doc = {"_id": "ramp100-abc-17", "key": "plain-text-key", "other": "plain"}
    out = preload.copied_document(doc, 4, ["key"])
    assert out["_id"] == "ramp100-abc-17~4"
    assert out["key"] == "plain-text-key~4"
    assert out["other"] == "plain"  # not unique: left as it was


def test_object_ids_are_replaced() -> None:
    oid = ObjectId()
    out = preload.copied_document({"_id": oid, "n": 1}, 1, [])
    assert isinstance(out["_id"], ObjectId) and out["_id"] != oid


def test_nested_unique_paths() -> None:
    doc = {"_id": REG, "seal": {"token_hash": "abcdef"}}
    out = preload.copied_document(doc, 2, ["seal.token_hash"])
    assert out["seal"]["token_hash"] == "abcdef~2"


def test_inserts_are_cut_by_size_as_well_as_by_count() -> None:
    big = [{"_id": i, "text": "x" * 50_000} for i in range(10)]
    batches = list(preload._batches(iter(big), 1_000, max_bytes=120_000))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    small = [{"_id": i} for i in range(5)]
    assert [len(b) for b in preload._batches(iter(small), 2)] == [2, 2, 1]


def test_a_document_a_cursor_returned_twice_is_copied_once() -> None:
    # A service's write moved it while the cursor ran: seen twice, the later one kept.
    seen = [{"_id": "a", "v": 1}, {"_id": "b", "v": 1}, {"_id": "a", "v": 2}]
    assert preload.once_each(seen) == [{"_id": "a", "v": 2}, {"_id": "b", "v": 1}]


def test_finished_deliveries_are_copied_as_the_log_keeps_them() -> None:
    from notifications.domain.delivery import ARCHIVABLE

    assert preload.ARCHIVABLE == {str(s.value) for s in ARCHIVABLE}  # the service's rule
    sent = {"_id": "d~1", "status": "sent", "sealed": {"to": "x"}, "inbox": [], "version": 3}
    assert preload.archived_copy(sent) == {"_id": "d~1", "status": "sent", "version": 3}
    assert preload.archived_copy({**sent, "status": "pending"}) is None  # still to send
    assert preload.archived_copy({**sent, "outbox": [{"id": "e"}]}) is None  # unpublished


def test_a_copy_already_in_the_log_is_skipped_and_any_other_error_raised() -> None:
    import pytest
    from pymongo.errors import BulkWriteError

    class Log:
        def __init__(self, code: int) -> None:
            self.code = code

        def insert_many(self, docs, ordered):  # type: ignore[no-untyped-def]
            error = {"index": 0, "code": self.code, "errmsg": "E11000"}
            raise BulkWriteError({"writeErrors": [error], "nInserted": len(docs) - 1})

    assert preload._insert(Log(11000), [{"_id": 1}, {"_id": 2}], may_exist=True) == 1
    with pytest.raises(BulkWriteError):
        preload._insert(Log(11000), [{"_id": 1}], may_exist=False)  # a working set: a bug
    with pytest.raises(BulkWriteError):
        preload._insert(Log(2), [{"_id": 1}], may_exist=True)
