"""docs/asyncapi-services.yaml: who consumes what, generated from the handler registries."""

from __future__ import annotations

import yaml

from shared import asyncapi_services
from shared.topology import subscriptions

REGENERATE = ".venv/bin/python -m shared.asyncapi_services --write"


def test_checked_in_document_is_the_generated_one() -> None:
    fresh = asyncapi_services.render(asyncapi_services.build_document())
    assert asyncapi_services.DOC_PATH.read_text(encoding="utf-8") == fresh, (
        f"docs/asyncapi-services.yaml is stale: run `{REGENERATE}` and commit the result"
    )


def test_every_handler_is_an_operation_on_its_services_queue() -> None:
    doc = asyncapi_services.build_document()
    received = set()
    for op in doc["operations"].values():
        queue = op["channel"]["$ref"].rsplit("/", 1)[1].removesuffix("Queue")
        received.add((queue, op["x-holdspace-routing-key"]))
    declared = {(s, t) for s, types in subscriptions().items() for t in types}
    assert received == declared
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            assert ref["$ref"].rsplit("/", 1)[1] in doc["components"]["messages"]


def test_a_changed_registry_changes_the_document() -> None:
    consumed = dict(subscriptions())
    consumed["payments"] = tuple(t for t in consumed["payments"] if t != "consent.signed")
    changed = asyncapi_services.build_document(consumed=consumed)
    assert "paymentsReceivesConsentSigned" not in changed["operations"]
    assert changed != asyncapi_services.build_document()


def test_the_document_is_valid_yaml_and_asyncapi_3() -> None:
    doc = yaml.safe_load(asyncapi_services.DOC_PATH.read_text(encoding="utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {f"{s}Queue" for s in subscriptions()}


def test_check_fails_on_a_stale_file_and_write_mends_it(tmp_path, capsys) -> None:
    from shared.asyncapi import write_or_check

    path = tmp_path / "doc.yaml"
    path.write_text("old", encoding="utf-8")
    check = {"write": False, "check": True, "module": "shared.asyncapi_services"}
    assert write_or_check("new", path, **check) == 1
    assert "python -m shared.asyncapi_services --write" in capsys.readouterr().err
    assert write_or_check("new", path, write=True, check=False, module="m") == 0
    assert path.read_text(encoding="utf-8") == "new"
    assert write_or_check("new", path, **check) == 0
