"""The public event contract as an AsyncAPI 3.0.0 document, generated from the event models.

``docs/asyncapi.yaml`` is this module's output, checked in for subscribing systems::

    python -m shared.asyncapi --write   # regenerate docs/asyncapi.yaml
    python -m shared.asyncapi --check   # exit 1 when the checked-in file is stale

Only the events on the ``public`` exchange (``PUBLIC_EVENT_TYPES``) are described:
one channel, one ``receive`` operation and one message per event type, so a new
public event model appears here without any change to this module. Each message
payload is the CloudEvents envelope (the :class:`~shared.events.Envelope` schema)
whose ``data`` is the event model's own JSON schema (pydantic, serialization mode).

Document version rule: ``info.version`` is ``<CONTRACT_MAJOR>.<N>`` where ``N`` is
the sum of the ``version`` of every public event model. Adding a public event
type or bumping an event's version (a breaking change to its payload, which also
changes its ``dataschema`` URN) raises ``N``; ``CONTRACT_MAJOR`` is raised by hand
when the envelope, the exchange or the routing changes incompatibly, or an event
type is removed. Adding an optional field changes neither: subscribers must ignore
properties they do not know, which is why ``additionalProperties: false`` (from the
models' ``extra="forbid"``) is left out of the published schemas.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shared.events import (
    PUBLIC_EVENT_TYPES,
    Envelope,
    EventData,
    Exchange,
    make_envelope,
    schema_uri,
)
from shared.messaging import CONTENT_TYPE, Topology

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
CONTRACT_MAJOR = 1
DEFAULT_PREFIX = "holdspace."
MODULE = "shared.asyncapi"  # as run: python -m shared.asyncapi
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
REF_PREFIX = "#/components/schemas/"

PRIVACY_NOTE = (
    "Public events never carry personal data: only ids (registration, cohort, program), "
    "status (the event type) and times. Nothing here identifies a person by name, contact "
    "detail or answer, and the ids are opaque: only Holdspace can relate them to a person. "
    "Personal data never leaves the internal exchange, which subscribers cannot read."
)

# What each envelope attribute means to a subscriber (merged into the Envelope schema).
ENVELOPE_DESCRIPTIONS = {
    "specversion": "CloudEvents specification version.",
    "id": (
        "Unique id of this event; equals the AMQP message_id. Delivery is at least once: "
        "deduplicate on it."
    ),
    "source": "The Holdspace service that published the event.",
    "type": "The event type; equals the AMQP routing key and the AMQP type property.",
    "time": "When the event was recorded (RFC 3339, UTC).",
    "datacontenttype": "Media type of `data`: always JSON.",
    "dataschema": (
        "Schema of `data`: urn:holdspace:event:<type>:v<N>. N is bumped by a breaking "
        "change of the payload."
    ),
    "subject": "Optional CloudEvents subject.",
    "correlationid": (
        "Extension: id shared by every event of one flow (e.g. one sign-up); equals the "
        "AMQP correlation_id."
    ),
    "causationid": "Extension: id of the event that caused this one, when there is one.",
    "traceparent": (
        "Extension (CloudEvents distributed tracing): the W3C trace context of the work that"
        " recorded the event; also the AMQP header `traceparent`, which names the publish."
    ),
    "data": "The event payload.",
}

# How build_message (shared/messaging.py) fills the AMQP basic properties.
AMQP_PROPERTIES: dict[str, dict[str, Any]] = {
    "content_type": {"value": CONTENT_TYPE},
    "delivery_mode": {"value": 2, "description": "persistent"},
    "message_id": {"from": "id"},
    "correlation_id": {"from": "correlationid"},
    "type": {"from": "type"},
    "timestamp": {"from": "time", "description": "whole seconds"},
    "app_id": {"from": "source"},
}

# Fixed values for the generated examples, so the document is reproducible.
EXAMPLE_TIME = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
EXAMPLE_NAMESPACE = uuid.UUID("6f1c1b0e-3a55-4b7e-9a57-0d3c6f1e2a10")


def contract_version(events: Mapping[str, type[EventData]]) -> str:
    """``<CONTRACT_MAJOR>.<sum of the public event versions>`` (see the module docstring)."""
    return f"{CONTRACT_MAJOR}.{sum(cls.version for cls in events.values())}"


def _camel(event_type: str) -> str:
    words = [w for w in re.split(r"[._\-]", event_type) if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _strip_closed_objects(node: Any) -> Any:
    """Drop ``additionalProperties: false``: subscribers must tolerate added fields."""
    if isinstance(node, dict):
        return {
            k: _strip_closed_objects(v)
            for k, v in node.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(node, list):
        return [_strip_closed_objects(v) for v in node]
    return node


def _add_schema(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r}")
    schemas[name] = schema


def _model_schema(model: type[Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema; its ``$defs`` move to components.schemas (refs point there)."""
    schema = model.model_json_schema(mode="serialization", ref_template=REF_PREFIX + "{model}")
    for name, sub in schema.pop("$defs", {}).items():
        _add_schema(schemas, name, _strip_closed_objects(sub))
    return _strip_closed_objects(schema)


def _example_value(name: str, schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if "$ref" in schema:
        return _example_value(name, schemas[schema["$ref"].removeprefix(REF_PREFIX)], schemas)
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example_value(name, options[0], schemas)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _example_value(k, v, schemas) for k, v in props.items()}
    if kind == "array":
        return [_example_value(name, schema.get("items", {}), schemas)]
    if kind == "integer":
        if "exclusiveMinimum" in schema:
            return int(schema["exclusiveMinimum"]) + 1
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "string":
        if schema.get("format") == "date-time":
            return EXAMPLE_TIME.isoformat().replace("+00:00", "Z")
        if schema.get("format") == "date":
            return EXAMPLE_TIME.date().isoformat()
        if name == "id" or name.endswith("_id"):
            return str(uuid.uuid5(EXAMPLE_NAMESPACE, name))
        return name.replace("_", "-")[: schema.get("maxLength", 64)].ljust(
            schema.get("minLength", 0), "x"
        )
    return None


def _example_envelope(
    model: type[EventData], data_schema: dict[str, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    """A real envelope, built with make_envelope from a model instance of example values."""
    data = model.model_validate(_example_value("data", data_schema, schemas))
    envelope = make_envelope(
        data,
        source="registration",
        correlation_id=str(uuid.uuid5(EXAMPLE_NAMESPACE, "correlation")),
        causation_id=str(uuid.uuid5(EXAMPLE_NAMESPACE, "causation")),
        event_id=str(uuid.uuid5(EXAMPLE_NAMESPACE, model.event_type)),
    )
    return envelope.model_copy(update={"time": EXAMPLE_TIME}).model_dump(mode="json")


def _envelope_schema(
    base: dict[str, Any], model: type[EventData], data_schema_name: str
) -> dict[str, Any]:
    schema = copy.deepcopy(base)
    schema["title"] = f"{model.event_type} (CloudEvents 1.0 envelope)"
    schema["description"] = (
        f"One `{model.event_type}` event in CloudEvents 1.0 structured JSON mode "
        "(the AMQP body). Holdspace always sends every attribute listed here."
    )
    props = schema["properties"]
    props["type"] = {**props["type"], "const": model.event_type}
    props["dataschema"] = {
        **props["dataschema"],
        "const": schema_uri(model.event_type, model.version),
    }
    props["data"] = {"$ref": REF_PREFIX + data_schema_name}
    for key, text in ENVELOPE_DESCRIPTIONS.items():
        if key in props and "$ref" not in props[key]:
            props[key].setdefault("description", text)
    # make_envelope's output is dumped whole (build_message): every attribute is present.
    schema["required"] = list(props)
    return schema


def build_document(
    prefix: str = DEFAULT_PREFIX, events: Mapping[str, type[EventData]] | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the public events (``PUBLIC_EVENT_TYPES`` by default)."""
    events = dict(sorted((PUBLIC_EVENT_TYPES if events is None else events).items()))
    for event_type, model in events.items():
        if model.exchange is not Exchange.public or model.event_type != event_type:
            raise ValueError(f"{event_type!r} is not a public event; it has no place here")
    exchange = Topology(prefix=prefix, service="subscriber", retry_delays_ms=()).public

    schemas: dict[str, Any] = {}
    envelope_base = _model_schema(Envelope, schemas)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    for event_type, model in events.items():
        channel_id = _camel(event_type)
        message_id = model.__name__
        data_name = model.__name__
        envelope_name = f"{model.__name__}Event"
        data_schema = _model_schema(model, schemas)
        _add_schema(schemas, data_name, data_schema)
        _add_schema(schemas, envelope_name, _envelope_schema(envelope_base, model, data_name))
        title = event_type.replace(".", " ").replace("_", " ").capitalize()
        doc = (model.__doc__ or "").strip()

        channels[channel_id] = {
            "address": event_type,
            "title": title,
            "description": (
                f"`{event_type}` events on the `{exchange}` topic exchange; the routing key "
                "is the event type. Bind your own queue to receive them."
            ),
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
        operations[f"receive{channel_id[:1].upper()}{channel_id[1:]}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Receive `{event_type}` from `{exchange}`.",
            "description": (
                "Ack manually after your own processing is durable; deliveries may repeat, "
                "so deduplicate on the envelope `id` (= AMQP message_id)."
            ),
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        message: dict[str, Any] = {
            "name": event_type,
            "title": title,
            "summary": doc.splitlines()[0] if doc else f"The `{event_type}` event.",
            "description": (
                "AMQP body: the CloudEvents envelope, UTF-8 JSON. The AMQP basic properties "
                "repeat envelope attributes (see `x-amqp-properties`): message_id = id, "
                "correlation_id = correlationid, type = type, app_id = source, timestamp = "
                "time; delivery_mode 2 (persistent)."
            ),
            "contentType": CONTENT_TYPE,
            "correlationId": {
                "description": "Shared by every event of one flow; also the AMQP correlation_id.",
                "location": "$message.payload#/correlationid",
            },
            "headers": {
                "type": "object",
                "description": (
                    "AMQP application headers. Holdspace sets none on public events; "
                    "ignore any that appear."
                ),
            },
            "payload": {"$ref": REF_PREFIX + envelope_name},
            "bindings": {
                "amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING_VERSION}
            },
            "x-amqp-properties": copy.deepcopy(AMQP_PROPERTIES),
            "examples": [
                {
                    "name": _camel(event_type),
                    "summary": "Example values; every id is an opaque string.",
                    "payload": _example_envelope(model, data_schema, schemas),
                }
            ],
        }
        messages[message_id] = message

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Holdspace enrollment events",
            "version": contract_version(events),
            "description": (
                "Events Holdspace publishes for outside systems on the "
                f"`{exchange}` topic exchange. Each is a CloudEvents 1.0 envelope in "
                "structured JSON mode; the routing key is the event type. See "
                "docs/subscribing.md for how to subscribe.\n\n"
                f"Version rule: `{CONTRACT_MAJOR}.N`, N = the sum of the schema versions of "
                "the public events (each event's `dataschema` is "
                "`urn:holdspace:event:<type>:v<version>`). A new public event type or a "
                "breaking payload change raises N; an incompatible change of the envelope, "
                "exchange or routing, or a removed event type, raises the major number. "
                "Added optional fields change neither: ignore properties you do not know."
            ),
            "x-holdspace-personal-data": PRIVACY_NOTE,
            "x-holdspace-generated-by": "python -m shared.asyncapi --write",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "production": {
                "host": "{host}:{port}",
                "protocol": "amqp",
                "description": (
                    "Placeholder: the operator gives you the host, port, virtual host and a "
                    "broker user of your own. Use TLS (amqps) where offered."
                ),
                "variables": {
                    "host": {
                        "default": "rabbitmq.example.invalid",
                        "description": "Given by the operator.",
                    },
                    "port": {"default": "5672"},
                },
                "security": [{"$ref": "#/components/securitySchemes/brokerUser"}],
            },
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "description": "Local development broker (deploy/rabbitmq/definitions.json).",
                "security": [{"$ref": "#/components/securitySchemes/brokerUser"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "brokerUser": {
                    "type": "userPassword",
                    "description": (
                        "A broker user that may only declare and bind its own queues to the "
                        "public exchange."
                    ),
                }
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &anchors: every node spelled out
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)

HEADER = "# Generated by `python -m shared.asyncapi --write` from shared/events.py. Do not edit.\n"


def render_yaml(doc: dict[str, Any]) -> str:
    """YAML in the document's own key order (insertion order: deterministic)."""
    body = yaml.dump(
        doc,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared.asyncapi", description="The public events as AsyncAPI 3.0.0."
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the document file")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--path", type=Path, default=DOC_PATH, help="document file")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topology prefix")
    args = parser.parse_args(argv)

    text = render_yaml(build_document(args.prefix))
    return write_or_check(text, args.path, write=args.write, check=args.check, module=MODULE)


def write_or_check(text: str, path: Path, *, write: bool, check: bool, module: str) -> int:
    """The generated document: written to ``path``, checked against it, or printed."""
    command = f"python -m {module} --write"
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(f"{path} is stale: run `{command}` and commit it", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
