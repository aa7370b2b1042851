"""What a compare-and-set write sets: only the fields, and map entries, that changed."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.aggregates import changed_fields

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
