"""The public AsyncAPI contract: fresh, complete, self-consistent, and free of personal data.

``jsonschema`` is not installed in this project, so the payload checks use the small
validator below. It knows the keywords pydantic emits and fails on any other, so a
schema it cannot judge is an error, never a silent pass.
"""

from __future__ import annotations

import json
import re
import types
import typing
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared import asyncapi
from shared.events import (
    EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    EnrollmentEvent,
    Envelope,
    EventData,
    RegistrationSubmitted,
    make_envelope,
    schema_uri,
)
from shared.logs import PERSONAL_KEYS
from shared.messaging import CONTENT_TYPE, build_message

REGENERATE = ".venv/bin/python -m shared.asyncapi --write"
INTERNAL_PREFIXES = (
    "registration.",
    "cohort.",
    "consent.",
    "payment.",
    "notification.",
    "progress.",
    "staff.",
)
PERSONAL_WORDS = re.compile(
    r"e-?mail|name|phone|mobile|chat|handle|birth|dob|gender|answer|reason|address|"
    r"contact|alias|note|comment|wechat|ip_addr|passport|health|diagnos"
)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.build_document()


# --- a small JSON-schema validator (the subset pydantic emits) ------------------

ANNOTATIONS = {"title", "description", "default", "examples"}


def resolve(root: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are allowed: {ref}"
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def _is_type(value: Any, kind: str) -> bool:
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "null": value is None,
    }[kind]


def errors(root: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    found: list[str] = []
    for key, rule in schema.items():
        if key in ANNOTATIONS:
            continue
        if key == "$ref":
            found += errors(root, resolve(root, rule), value, at)
        elif key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            if not any(_is_type(value, k) for k in kinds):
                found.append(f"{at}: {value!r} is not of type {rule}")
        elif key == "const":
            if value != rule:
                found.append(f"{at}: {value!r} != const {rule!r}")
        elif key == "enum":
            if value not in rule:
                found.append(f"{at}: {value!r} not in {rule}")
        elif key == "anyOf":
            if all(errors(root, sub, value, at) for sub in rule):
                found.append(f"{at}: matches no anyOf branch")
        elif key == "oneOf":
            if sum(not errors(root, sub, value, at) for sub in rule) != 1:
                found.append(f"{at}: does not match exactly one oneOf branch")
        elif key == "allOf":
            for sub in rule:
                found += errors(root, sub, value, at)
        elif key == "format":
            if rule == "date-time" and isinstance(value, str):
                try:
                    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    found.append(f"{at}: {value!r} is not a date-time")
                else:
                    if parsed.tzinfo is None:
                        found.append(f"{at}: {value!r} has no offset")
        elif key in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
            if _is_type(value, "number"):
                ok = {
                    "minimum": value >= rule,
                    "maximum": value <= rule,
                    "exclusiveMinimum": value > rule,
                    "exclusiveMaximum": value < rule,
                }[key]
                if not ok:
                    found.append(f"{at}: {value!r} violates {key} {rule}")
        elif key in {"minLength", "maxLength"}:
            if isinstance(value, str) and not (
                len(value) >= rule if key == "minLength" else len(value) <= rule
            ):
                found.append(f"{at}: length of {value!r} violates {key} {rule}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                found.append(f"{at}: {value!r} does not match {rule}")
        elif key == "required":
            if isinstance(value, dict):
                found += [f"{at}: missing {name!r}" for name in rule if name not in value]
        elif key == "properties":
            if isinstance(value, dict):
                for name, sub in rule.items():
                    if name in value:
                        found += errors(root, sub, value[name], f"{at}.{name}")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                extra = set(value) - set(schema.get("properties", {}))
                if rule is False and extra:
                    found.append(f"{at}: unexpected {sorted(extra)}")
                elif isinstance(rule, dict):
                    for name in sorted(extra):
                        found += errors(root, rule, value[name], f"{at}.{name}")
        elif key == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    found += errors(root, rule, item, f"{at}[{i}]")
        else:
            raise AssertionError(f"the test validator does not know the keyword {key!r}")
    return found


def payload_schema(doc: dict[str, Any], event_type: str) -> dict[str, Any]:
    (message,) = [m for m in doc["components"]["messages"].values() if m["name"] == event_type]
    return message["payload"]


def data_schema(doc: dict[str, Any], event_type: str) -> dict[str, Any]:
    envelope = resolve(doc, payload_schema(doc, event_type)["$ref"])
    return resolve(doc, envelope["properties"]["data"]["$ref"])


# --- sample instances, built from the model's fields (not from the schema) --------

SAMPLE_BY_TYPE: dict[Any, Any] = {
    str: "opaque-7f3a",
    datetime: datetime(2025, 6, 2, 18, 45, 12, 123456, tzinfo=UTC),
    int: 3,
    bool: True,
}


def sample_value(annotation: Any) -> Any:
    if annotation in SAMPLE_BY_TYPE:
        return SAMPLE_BY_TYPE[annotation]
    origin = typing.get_origin(annotation)
    if origin is list:
        return [sample_value(typing.get_args(annotation)[0])]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return sample_value(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sample_instance(annotation)
    raise AssertionError(f"add a representative value for {annotation!r} to SAMPLE_BY_TYPE")


def sample_instance(model: type[BaseModel]) -> BaseModel:
    return model(**{name: sample_value(f.annotation) for name, f in model.model_fields.items()})


def sample_envelope(model: type[EventData]) -> Envelope:
    return make_envelope(
        sample_instance(model),
        source="registration",
        correlation_id="corr-1",
        causation_id="cause-1",
    )


# --- the checked-in file -------------------------------------------------------


def test_checked_in_document_is_the_generated_one() -> None:
    assert asyncapi.DOC_PATH.exists(), f"docs/asyncapi.yaml is missing: run `{REGENERATE}`"
    fresh = asyncapi.render_yaml(asyncapi.build_document())
    assert asyncapi.DOC_PATH.read_text(encoding="utf-8") == fresh, (
        f"docs/asyncapi.yaml is stale: run `{REGENERATE}` and commit the result"
    )


def test_rendering_is_stable_and_loses_nothing(doc: dict[str, Any]) -> None:
    text = asyncapi.render_yaml(doc)
    assert asyncapi.render_yaml(asyncapi.build_document()) == text
    assert "&id" not in text and "*id" not in text  # no YAML anchors or aliases
    assert yaml.safe_load(text) == doc
    assert list(yaml.safe_load(text)) == list(doc)  # key order kept


def test_cli_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path) -> None:
    path = tmp_path / "asyncapi.yaml"
    assert asyncapi.main(["--check", "--path", str(path)]) == 1  # missing
    path.write_text("asyncapi: 3.0.0\n", encoding="utf-8")
    assert asyncapi.main(["--check", "--path", str(path)]) == 1  # stale
    assert asyncapi.main(["--write", "--path", str(path)]) == 0
    assert asyncapi.main(["--check", "--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == asyncapi.render_yaml(asyncapi.build_document())


# --- structure -----------------------------------------------------------------


def test_document_header(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Holdspace enrollment events"
    versions = sum(model.version for model in PUBLIC_EVENT_TYPES.values())
    assert doc["info"]["version"] == f"{asyncapi.CONTRACT_MAJOR}.{versions}"
    assert "personal data" in doc["info"]["x-holdspace-personal-data"]
    assert doc["servers"]["local"] == {
        **doc["servers"]["local"],
        "host": "127.0.0.1:5672",
        "protocol": "amqp",
    }
    assert doc["servers"]["production"]["protocol"] == "amqp"


def test_every_public_event_has_a_channel_an_operation_and_a_message(
    doc: dict[str, Any],
) -> None:
    channels = doc["channels"]
    assert sorted(c["address"] for c in channels.values()) == sorted(PUBLIC_EVENT_TYPES)
    for event_type, model in PUBLIC_EVENT_TYPES.items():
        (channel_id,) = [k for k, c in channels.items() if c["address"] == event_type]
        channel = channels[channel_id]
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] == "routingKey"
        assert amqp["exchange"]["name"] == "holdspace.public"
        assert amqp["exchange"]["type"] == "topic" and amqp["exchange"]["durable"] is True

        ops = [
            op
            for op in doc["operations"].values()
            if op["channel"] == {"$ref": f"#/channels/{channel_id}"}
        ]
        assert len(ops) == 1 and ops[0]["action"] == "receive", event_type
        (message_ref,) = ops[0]["messages"]
        message = resolve(doc, resolve(doc, message_ref["$ref"])["$ref"])
        assert message["name"] == event_type
        assert message["contentType"] == "application/cloudevents+json" == CONTENT_TYPE
        assert message["bindings"]["amqp"]["messageType"] == event_type
        assert message["correlationId"]["location"] == "$message.payload#/correlationid"
        assert message["headers"]["type"] == "object"

        envelope = resolve(doc, message["payload"]["$ref"])
        assert envelope["properties"]["type"]["const"] == event_type
        assert envelope["properties"]["dataschema"]["const"] == schema_uri(
            event_type, model.version
        )


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    # Per event: channel->message, operation->channel, operation->message,
    # message->payload, envelope->data; plus the two servers' security.
    assert len(refs) >= 5 * len(PUBLIC_EVENT_TYPES) + 2
    for ref in refs:
        assert resolve(doc, ref) is not None, ref
    assert "$defs" not in json.dumps(doc)


# --- payloads ------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(PUBLIC_EVENT_TYPES))
def test_a_sample_envelope_validates_against_the_payload_schema(
    doc: dict[str, Any], event_type: str
) -> None:
    model = PUBLIC_EVENT_TYPES[event_type]
    envelope = sample_envelope(model)
    wire = json.loads(build_message(envelope).body)  # exactly what a subscriber receives
    assert errors(doc, payload_schema(doc, event_type), wire) == []

    schema = data_schema(doc, event_type)
    assert set(schema["properties"]) == set(model.model_fields)
    assert set(schema["required"]) == {
        name for name, f in model.model_fields.items() if f.is_required()
    }


@pytest.mark.parametrize("event_type", sorted(PUBLIC_EVENT_TYPES))
def test_the_payload_schema_rejects_broken_envelopes(doc: dict[str, Any], event_type: str) -> None:
    model = PUBLIC_EVENT_TYPES[event_type]
    schema = payload_schema(doc, event_type)
    good = sample_envelope(model).model_dump(mode="json")
    other = next(t for t in EVENT_TYPES if t != event_type)
    broken = [
        {**good, "type": other},
        {**good, "dataschema": schema_uri(event_type, model.version + 1)},
        {k: v for k, v in good.items() if k != "correlationid"},
        {**good, "time": "yesterday"},
        {**good, "data": {k: v for k, v in good["data"].items() if k != "registration_id"}},
        {**good, "data": {**good["data"], "occurred_at": 12}},
    ]
    for bad in broken:
        assert errors(doc, schema, bad), bad
    if "position" in good["data"]:
        assert errors(doc, schema, {**good, "data": {**good["data"], "position": 0}})


def test_document_examples_are_real_envelopes(doc: dict[str, Any]) -> None:
    for message in doc["components"]["messages"].values():
        (example,) = message["examples"]
        payload = example["payload"]
        assert errors(doc, message["payload"], payload) == []
        envelope = Envelope.model_validate(payload)
        assert envelope.type == message["name"]
        assert envelope.payload().event_type == message["name"]


def test_documented_amqp_properties_match_build_message(doc: dict[str, Any]) -> None:
    for event_type, model in PUBLIC_EVENT_TYPES.items():
        envelope = sample_envelope(model)
        amqp = build_message(envelope)
        (message,) = [m for m in doc["components"]["messages"].values() if m["name"] == event_type]
        for prop, spec in message["x-amqp-properties"].items():
            actual = getattr(amqp, prop)
            if "value" in spec:
                assert actual == spec["value"], prop
            elif prop == "timestamp":
                assert abs((actual - envelope.time).total_seconds()) < 1
            else:
                assert actual == getattr(envelope, spec["from"]), prop
        assert amqp.headers == {}  # the document says: no application headers


# --- what must never be in the public contract ------------------------------------


def test_no_internal_event_type_appears(doc: dict[str, Any]) -> None:
    text = asyncapi.render_yaml(doc)
    internal = [t for t in EVENT_TYPES if t not in PUBLIC_EVENT_TYPES]
    assert internal and all(t.startswith(INTERNAL_PREFIXES) for t in internal)
    for event_type in internal:
        assert event_type not in text, event_type
    for prefix in INTERNAL_PREFIXES:
        assert not re.search(rf"(?<![\w_]){re.escape(prefix)}\w", text), prefix
    assert "holdspace.internal" not in text


def test_no_public_field_name_looks_personal(doc: dict[str, Any]) -> None:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                names.update(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc["components"]["schemas"])
    assert {"registration_id", "cohort_id", "occurred_at", "correlationid"} <= names
    for name in names:
        assert not PERSONAL_WORDS.search(name.lower()), name
    # The logs' redaction list too, for the payload fields (it names the envelope's
    # `data` itself, which only wraps them).
    payload_names = names - set(Envelope.model_fields)
    assert payload_names
    for name in payload_names:
        assert name not in PERSONAL_KEYS, name
        assert not any(name.endswith("_" + p) for p in PERSONAL_KEYS), name


def test_the_personal_word_check_would_catch_the_internal_payloads() -> None:
    fields = set(RegistrationSubmitted.model_fields) | {"name", "email", "chat_handle"}
    assert {f for f in fields if PERSONAL_WORDS.search(f)} >= {"contact", "name", "email"}


# --- generic over the public events -----------------------------------------------


def test_a_new_public_event_appears_without_code_changes() -> None:
    class SeatRef(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        seat_no: int = Field(ge=1)

    class EnrollmentMoved(EnrollmentEvent):
        event_type: ClassVar[str] = "enrollment.moved"
        version: ClassVar[int] = 2
        seats: list[SeatRef]
        to_cohort_id: str | None = None

    events = {**PUBLIC_EVENT_TYPES, "enrollment.moved": EnrollmentMoved}
    doc = asyncapi.build_document(prefix="t1.", events=events)
    (channel,) = [c for c in doc["channels"].values() if c["address"] == "enrollment.moved"]
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "t1.public"
    assert "SeatRef" in doc["components"]["schemas"]  # pydantic $defs hoisted
    versions = sum(m.version for m in PUBLIC_EVENT_TYPES.values()) + 2
    assert doc["info"]["version"] == f"1.{versions}"
    test_every_ref_resolves(doc)

    envelope = json.loads(build_message(sample_envelope(EnrollmentMoved)).body)
    schema = payload_schema(doc, "enrollment.moved")
    assert errors(doc, schema, envelope) == []
    assert resolve(doc, schema["$ref"])["properties"]["dataschema"]["const"].endswith(":v2")
    bad = {**envelope, "data": {**envelope["data"], "seats": [{"seat_no": 0}]}}
    assert errors(doc, schema, bad)


def test_an_internal_event_is_refused() -> None:
    with pytest.raises(ValueError, match="not a public event"):
        asyncapi.build_document(events={"registration.submitted": RegistrationSubmitted})


def test_the_subscribing_guide_shows_a_valid_message_and_links_the_contract(
    doc: dict[str, Any],
) -> None:
    text = (asyncapi.DOC_PATH.parent / "subscribing.md").read_text(encoding="utf-8")
    assert "(asyncapi.yaml)" in text
    (block,) = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    shown = json.loads(block)
    assert shown["type"] in PUBLIC_EVENT_TYPES
    assert errors(doc, payload_schema(doc, shown["type"]), shown) == []
