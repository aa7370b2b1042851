"""deploy/rabbitmq/definitions.json agrees with the topology the services declare in code.

The expectations are not copied from shared/messaging.py: the test runs the real
``Broker.declare_exchanges`` / ``declare_service_queues`` against a recording fake
channel, for the default prefix and each service's default retry settings, and
compares what they declare with the file. A mismatch here would be a
PRECONDITION_FAILED (inequivalent arguments) when a service starts on a broker
loaded from the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.events import EVENT_TYPES, PUBLIC_EVENT_TYPES
from shared.messaging import Broker, Topology
from shared.settings import CommonSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
SUBSCRIBING_DOC = ROOT / "docs" / "subscribing.md"
SERVICES = ("registration", "consent", "payments", "notifications")
DEV_PASSWORD = "subscriber-dev-only-change-me"
PREFIX = CommonSettings.model_fields["holdspace_topology_prefix"].default


def topology(service: str) -> Topology:
    # model_construct: the field defaults, whatever this shell's environment says.
    settings = ServiceSettings.model_construct(service_name=service)
    return Topology(PREFIX, service, tuple(settings.retry_delays_ms()))


class Recorder:
    def __init__(self) -> None:
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.bindings: set[tuple[str, str, str]] = set()


class FakeQueue:
    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    async def bind(self, exchange: Any, routing_key: str | None = None, **_: Any) -> None:
        source = exchange if isinstance(exchange, str) else exchange.name
        self.recorder.bindings.add((source, self.name, routing_key or ""))


class FakeChannel:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def declare_exchange(self, name: str, type: Any, durable: bool = False, **kw: Any):
        self.recorder.exchanges[name] = {
            "type": getattr(type, "value", type),
            "durable": durable,
            "auto_delete": kw.get("auto_delete", False),
            "internal": kw.get("internal", False),
            "arguments": kw.get("arguments") or {},
        }

    async def declare_queue(
        self, name: str, durable: bool = False, arguments: dict | None = None, **kw: Any
    ) -> FakeQueue:
        self.recorder.queues[name] = {
            "durable": durable,
            "auto_delete": kw.get("auto_delete", False),
            "arguments": dict(arguments or {}),
        }
        return FakeQueue(self.recorder, name)


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text(encoding="utf-8"))


@pytest.fixture
async def declared() -> dict[str, Recorder]:
    """What each service's code declares (its handlers' bindings aside: none given)."""
    out = {}
    for service in SERVICES:
        recorder = Recorder()
        broker = Broker("amqp://unused/", topology(service))
        await broker.declare_service_queues(FakeChannel(recorder), [])
        out[service] = recorder
    return out


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    return {item["name"]: item for item in items}


def test_the_file_is_a_definitions_document_for_vhost_root(definitions: dict[str, Any]) -> None:
    assert definitions["vhosts"] == [{"name": "/"}]
    for section in ("exchanges", "queues", "bindings", "permissions", "topic_permissions"):
        assert definitions[section], section
        assert {item["vhost"] for item in definitions[section]} == {"/"}, section
    assert definitions["policies"] == []


def test_exchanges_are_the_ones_the_code_declares(
    definitions: dict[str, Any], declared: dict[str, Recorder]
) -> None:
    expected: dict[str, dict[str, Any]] = {}
    for recorder in declared.values():
        expected.update(recorder.exchanges)
    t = topology("registration")
    assert set(expected) == {t.internal, t.public, t.dead_letter_exchange}
    assert set(expected) == {"holdspace.internal", "holdspace.public", "holdspace.dlx"}
    found = by_name(definitions["exchanges"])
    assert set(found) == set(expected)
    for name, want in expected.items():
        got = {k: v for k, v in found[name].items() if k not in ("name", "vhost")}
        assert got == want, name


def test_queues_are_each_services_queue_and_dlq_with_the_codes_arguments(
    definitions: dict[str, Any], declared: dict[str, Recorder]
) -> None:
    found = by_name(definitions["queues"])
    expected_names = {n for s in SERVICES for n in (topology(s).queue, topology(s).dlq)}
    assert set(found) == expected_names
    for service, recorder in declared.items():
        t = topology(service)
        for name in (t.queue, t.dlq):
            want = recorder.queues[name]
            got = found[name]
            assert got["arguments"] == want["arguments"], (
                f"{name}: arguments differ from Broker.declare_service_queues; update "
                "deploy/rabbitmq/definitions.json"
            )
            assert got["durable"] is want["durable"] is True
            assert got["auto_delete"] is want["auto_delete"] is False
        assert found[t.queue]["arguments"]["x-queue-type"] == "quorum"
        assert found[t.queue]["arguments"]["x-dead-letter-exchange"] == t.dead_letter_exchange


def test_bindings_are_the_dead_letter_routes_the_code_declares(
    definitions: dict[str, Any], declared: dict[str, Recorder]
) -> None:
    expected = set().union(*(r.bindings for r in declared.values()))
    found = {
        (b["source"], b["destination"], b["routing_key"])
        for b in definitions["bindings"]
        if b["destination_type"] == "queue"
    }
    assert len(found) == len(definitions["bindings"])
    assert found == expected
    # and a queue's dead letters really reach its DLQ
    queues = by_name(definitions["queues"])
    for service in SERVICES:
        t = topology(service)
        args = queues[t.queue]["arguments"]
        route = (args["x-dead-letter-exchange"], t.dlq, args["x-dead-letter-routing-key"])
        assert route in found, service


# --- the example subscriber user ---------------------------------------------------


def subscriber(definitions: dict[str, Any]) -> tuple[dict, dict, dict]:
    (user,) = definitions["users"]
    (perm,) = [p for p in definitions["permissions"] if p["user"] == user["name"]]
    (topic,) = [p for p in definitions["topic_permissions"] if p["user"] == user["name"]]
    return user, perm, topic


def allowed(pattern: str, resource: str) -> bool:
    # RabbitMQ matches permissions with an unanchored regex search (re:run).
    return re.search(pattern, resource) is not None


def test_only_the_subscriber_user_is_defined_with_a_real_sha256_hash(
    definitions: dict[str, Any],
) -> None:
    user, _, _ = subscriber(definitions)
    assert user["name"] == "subscriber"
    assert user["tags"] == ""
    assert "password" not in user
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    raw = base64.b64decode(user["password_hash"], validate=True)
    assert len(raw) == 4 + 32  # 32-bit salt, SHA-256 digest
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + DEV_PASSWORD.encode()).digest()
    text = SUBSCRIBING_DOC.read_text(encoding="utf-8")
    assert DEV_PASSWORD in text and "change" in text.lower()


def test_the_subscriber_cannot_touch_the_internal_exchange_or_service_queues(
    definitions: dict[str, Any],
) -> None:
    _, perm, _ = subscriber(definitions)
    t = topology("registration")
    forbidden = [t.internal, t.dead_letter_exchange, "amq.default", "amq.topic"]
    for service in SERVICES:
        forbidden += topology(service).all_queues()
    for resource in forbidden:
        for kind in ("configure", "write", "read"):
            assert not allowed(perm[kind], resource), (kind, resource)
    assert not allowed(perm["read"], "holdspace.internal")
    # It may read (bind from) the public exchange, but neither redeclare nor publish to it.
    assert allowed(perm["read"], t.public)
    assert not allowed(perm["configure"], t.public) and not allowed(perm["write"], t.public)
    # Its own queues: declare (configure), bind (write), consume (read).
    for kind in ("configure", "write", "read"):
        assert allowed(perm[kind], "subscriber.enrollments"), kind
        assert not allowed(perm[kind], "other.enrollments"), kind


def test_the_subscriber_may_bind_only_enrollment_routing_keys(
    definitions: dict[str, Any],
) -> None:
    _, _, topic = subscriber(definitions)
    assert topic["exchange"] == topology("registration").public
    assert PUBLIC_EVENT_TYPES
    for event_type in PUBLIC_EVENT_TYPES:
        assert allowed(topic["read"], event_type), event_type
    assert allowed(topic["read"], "enrollment.*")
    for key in ["#", "*.confirmed", "registration.#", "#.enrollment.#", "enrollments.x"] + [
        t for t in EVENT_TYPES if t not in PUBLIC_EVENT_TYPES
    ]:
        assert not allowed(topic["read"], key), key
    assert not allowed(topic["write"], "enrollment.confirmed")
