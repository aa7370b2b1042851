"""What a compare-and-set write sets: only the fields, and map entries, that changed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import events as ev
from shared.aggregates import Change, changed_fields
from tests.fakes import MemoryBus, MemoryDatabase

T = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_unchanged_fields_are_left_out() -> None:
    doc = {"status": "open", "n": 1, "when": T}
    assert changed_fields(doc, {"status": "open", "n": 2, "when": T}) == ({"n": 2}, [], {})


def test_a_map_is_changed_entry_by_entry() -> None:
    doc = {"entries": {f"r{i}": {"status": "held"} for i in range(1000)}}
    entries = dict(doc["entries"])
    entries["r7"] = {"status": "confirmed"}
    entries["new-id"] = {"status": "held"}
    del entries["r8"]
    sets, unsets, appends = changed_fields(doc, {"entries": entries})
    assert sets == {"entries.r7": {"status": "confirmed"}, "entries.new-id": {"status": "held"}}
    assert unsets == ["entries.r8"] and appends == {}


def test_a_map_whose_keys_cannot_be_paths_is_set_whole() -> None:
    for key in ("a.b", "$x", ""):
        doc = {"m": {key: 1, "ok": 2}}
        assert changed_fields(doc, {"m": {key: 1, "ok": 3}}) == ({"m": {key: 1, "ok": 3}}, [], {})


def test_an_empty_map_new_fields_and_type_changes_are_set_whole() -> None:
    assert changed_fields({"m": {}}, {"m": {"a": 1}}) == ({"m": {"a": 1}}, [], {})
    assert changed_fields({}, {"m": {"a": 1}}) == ({"m": {"a": 1}}, [], {})
    assert changed_fields({"m": [1]}, {"m": {"a": 1}}) == ({"m": {"a": 1}}, [], {})
    assert changed_fields({"m": {"a": 1}}, {"m": None}) == ({"m": None}, [], {})


def test_emptying_a_map_unsets_each_entry() -> None:
    assert changed_fields({"m": {"a": 1, "b": 2}}, {"m": {}}) == ({}, ["m.a", "m.b"], {})


def test_a_list_that_only_grew_gets_its_tail_appended() -> None:
    waitlist = [f"r{i}" for i in range(900)]
    assert changed_fields({"w": waitlist}, {"w": [*waitlist, "x", "y"]}) == (
        {},
        [],
        {"w": ["x", "y"]},
    )
    # Anything else (a removal, a reorder, an empty start) is set whole.
    assert changed_fields({"w": ["a", "b"]}, {"w": ["b", "c"]}) == ({"w": ["b", "c"]}, [], {})
    assert changed_fields({"w": ["a", "b"]}, {"w": ["a"]}) == ({"w": ["a"]}, [], {})
    assert changed_fields({"w": []}, {"w": ["a"]}) == ({"w": ["a"]}, [], {})


# --- typed events: the store puts them in envelopes ------------------------------------


async def test_emitted_events_are_enveloped_by_the_store_caused_by_the_applied_event() -> None:
    db = MemoryDatabase()
    store = db.store("cases", enveloper=ev.registration_enveloper("holdspace/test"))
    await store.create({"_id": "reg-1", "n": 0})
    waived = ev.PaymentWaived(registration_id="reg-1", payment_id="pay-1")
    await store.mutate("reg-1", lambda d, _s: Change(set={"n": 1}, emit=[waived]), event_id="e-1")
    [envelope] = MemoryBus(store).take()
    assert (envelope.type, envelope.causationid) == ("payment.waived", "e-1")
    assert envelope.correlationid == "reg-1" == envelope.subject
    assert envelope.source == "holdspace/test"


async def test_a_store_without_an_enveloper_refuses_typed_events() -> None:
    store = MemoryDatabase().store("cases")
    await store.create({"_id": "reg-1"})
    waived = ev.PaymentWaived(registration_id="reg-1", payment_id="pay-1")
    with pytest.raises(RuntimeError, match="no enveloper"):
        await store.mutate("reg-1", lambda d, _s: Change(emit=[waived]))
