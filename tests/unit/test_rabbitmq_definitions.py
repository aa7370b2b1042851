"""deploy/rabbitmq/definitions.json agrees with the topology and the users the code defines.

The file is generated from the code (``python -m shared.brokeraccess --write
deploy/rabbitmq/definitions.json``): the real ``Broker.declare_service_queues`` runs
against a recording channel for every service's subscriptions and the default retry
settings, and shared/brokeraccess.py gives each user's permissions. A stale file
here would be a PRECONDITION_FAILED, or a service missing a queue it may not declare,
on a broker loaded from it. The permissions are then checked by what they allow,
with RabbitMQ's own matching (an unanchored regex search); tests/integration/
test_broker_access.py checks them on the live broker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared import brokeraccess
from shared.events import EVENT_TYPES, PUBLIC_EVENT_TYPES
from shared.messaging import Topology
from shared.settings import CommonSettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
SUBSCRIBING_DOC = ROOT / "docs" / "subscribing.md"
SERVICES = ("registration", "consent", "payments", "notifications")
OLD_DEV_PASSWORD = "subscriber-dev-only-change-me"
PREFIX = CommonSettings.model_fields["holdspace_topology_prefix"].default


def topology(service: str) -> Topology:
    # model_construct: the field defaults, whatever this shell's environment says.
    settings = ServiceSettings.model_construct(service_name=service)
    return Topology(PREFIX, service, tuple(settings.retry_delays_ms()))


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return json.loads(DEFINITIONS.read_text(encoding="utf-8"))


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), f"duplicate names: {names}"
    return {item["name"]: item for item in items}


def allowed(pattern: str, resource: str) -> bool:
    # RabbitMQ matches permissions with an unanchored regex search (re:run).
    return re.search(pattern, resource) is not None


def test_the_file_is_what_the_code_generates(definitions: dict[str, Any]) -> None:
    assert definitions == brokeraccess.default_definitions(), (
        "deploy/rabbitmq/definitions.json is stale: "
        "python -m shared.brokeraccess --write deploy/rabbitmq/definitions.json"
    )


def test_the_file_declares_every_queue_exchange_and_route_the_services_use(
    definitions: dict[str, Any],
) -> None:
    assert definitions["vhosts"] == [{"name": "/"}]
    queues = by_name(definitions["queues"])
    exchanges = by_name(definitions["exchanges"])
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}
    for service in SERVICES:
        t = topology(service)
        assert set(t.all_queues()) <= set(queues)
        assert exchanges[t.requeue]["type"] == "direct"
        args = queues[t.queue]["arguments"]
        assert (
            args["x-dead-letter-exchange"],
            t.dlq,
            args["x-dead-letter-routing-key"],
        ) in bindings
        assert (t.requeue, t.dlq, t.DLQ_KEY) in bindings
        for delay in t.retry_delays_ms:
            assert (t.requeue, t.retry_queue(delay), t.retry_key(delay)) in bindings
        # no length or age argument on the DLQ: the policy bounds it
        assert queues[t.dlq]["arguments"] == {"x-queue-type": "quorum"}


def test_the_file_holds_no_user_and_no_password(definitions: dict[str, Any]) -> None:
    assert definitions["users"] == []
    text = DEFINITIONS.read_text()
    assert "password" not in text
    assert OLD_DEV_PASSWORD not in SUBSCRIBING_DOC.read_text()


def test_every_dead_letter_queue_is_bounded_by_the_policy(definitions: dict[str, Any]) -> None:
    [policy] = definitions["policies"]
    assert policy["apply-to"] == "queues"
    definition = policy["definition"]
    assert definition == {
        "max-length": 10_000,
        "message-ttl": 14 * 86400 * 1000,
        "overflow": "drop-head",
    }
    for service in SERVICES:
        t = topology(service)
        assert allowed(policy["pattern"], t.dlq)
        for other in (t.queue, *(t.retry_queue(d) for d in t.retry_delays_ms)):
            assert not allowed(policy["pattern"], other), other
    assert not allowed(policy["pattern"], "subscriber.enrollments.dlq")


def test_every_event_type_has_exactly_one_publisher() -> None:
    for event_type in EVENT_TYPES:
        family = event_type.split(".", 1)[0]
        publishers = [s for s, fams in brokeraccess.PUBLISHES.items() if family in fams]
        assert len(publishers) == 1, (
            f"{event_type}: add its family to shared/brokeraccess.py PUBLISHES, or its "
            "publisher's broker user may not publish it"
        )


# --- the services' users -----------------------------------------------------------


def user_entries(definitions: dict[str, Any], user: str) -> tuple[dict, dict[str, dict]]:
    (perm,) = [p for p in definitions["permissions"] if p["user"] == user]
    topics = {p["exchange"]: p for p in definitions["topic_permissions"] if p["user"] == user}
    return perm, topics


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_user_may_use_only_its_own_queue_and_requeue_exchange(
    definitions: dict[str, Any], service: str
) -> None:
    perm, _ = user_entries(definitions, service)
    t = topology(service)
    everything = ["amq.default", "amq.topic", t.internal, t.public, t.dead_letter_exchange]
    for s in SERVICES:
        everything += [*topology(s).all_queues(), topology(s).requeue]
    for resource in everything:
        assert not allowed(perm["configure"], resource), resource
    assert allowed(perm["read"], t.queue)
    assert [r for r in everything if allowed(perm["read"], r)] == [t.queue]
    writable = {r for r in everything if allowed(perm["write"], r)}
    publishes_public = service == "registration"
    assert writable == {t.internal, t.requeue} | ({t.public} if publishes_public else set())


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_user_may_publish_only_its_own_event_types(
    definitions: dict[str, Any], service: str
) -> None:
    _, topics = user_entries(definitions, service)
    t = topology(service)
    for event_type, cls in EVENT_TYPES.items():
        mine = event_type.split(".", 1)[0] in brokeraccess.PUBLISHES[service]
        exchange = t.exchange_name(cls.exchange)
        assert allowed(topics[exchange]["write"], event_type) == mine, event_type
        other = t.public if exchange == t.internal else t.internal
        assert not allowed(topics[other]["write"], event_type), event_type
    for patterns in topics.values():
        assert patterns["read"] == "^$"
        assert not allowed(patterns["write"], "#")


# --- the example subscriber user ---------------------------------------------------


def subscriber(definitions: dict[str, Any]) -> tuple[None, dict, dict]:
    (perm,) = [p for p in definitions["permissions"] if p["user"] == "subscriber"]
    (topic,) = [p for p in definitions["topic_permissions"] if p["user"] == "subscriber"]
    return None, perm, topic


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
