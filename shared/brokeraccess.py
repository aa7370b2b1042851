"""Who may do what on the broker: one user per service, the public subscriber, DLQ bounds.

Computed here from the topology (shared/messaging.py names, shared/topology.py
subscriptions, the event types' families), so the deployment's files can be checked
against the code (tests/unit/test_rabbitmq_definitions.py) and the local broker set
up the same way (:func:`apply_permissions`, :func:`apply_dlq_bounds`).

A service's user (docs/decisions/0005-broker-users-and-dead-letter-bounds.md):

- **configure** nothing: the deployment declares the topology (definitions file, or an
  administrator's run of the code's declaration); a service with no right to declare
  checks passively that its exchanges and queues are there.
- **write** the internal exchange, the public one when it publishes public events, and
  its own ``<service>.requeue`` exchange (its retries and dead letters); the topic
  permissions limit the routing keys to its own event families. No write on the
  default exchange, which would reach every queue.
- **read** its own queue, nothing else (no exchange: it binds nothing).

RabbitMQ matches these regular expressions unanchored, so each is anchored here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import devinfra
from shared.events import EVENT_TYPES, Exchange
from shared.topology import SERVICES

# The event families (the routing key's first word) each service publishes; every
# event type belongs to exactly one (tests/unit/test_rabbitmq_definitions.py).
PUBLISHES: dict[str, tuple[str, ...]] = {
    "registration": ("registration", "enrollment", "cohort"),
    "consent": ("consent",),
    "payments": ("payment",),
    "notifications": ("notification",),
    "progress": ("progress",),
    # The pages consume nothing; they publish staff.access_revoked (a coordinator signed
    # out or was deactivated) from their own outbox (services/web/revocations.py).
    "web": ("staff",),
}
NOTHING = "^$"
DLQ_POLICY_NAME = "holdspace-dlq-bounds"


class DlqBoundSettings(BaseSettings):
    """The dead-letter queues' bounds, applied by the deployment as a broker policy."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    dlq_max_length: int = Field(
        10_000, ge=1, description="dead letters kept per DLQ; past it the oldest is dropped"
    )
    dlq_ttl_s: int = Field(
        14 * 24 * 3600, ge=1, description="seconds a dead letter is kept before it is dropped"
    )


@dataclass(frozen=True)
class Permissions:
    user: str
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]  # exchange -> (write, read) routing-key patterns


def _alternatives(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in names)


def requeue_exchange(prefix: str, service: str) -> str:
    return f"{prefix}{service}.requeue"


def families_on(service: str, exchange: Exchange) -> list[str]:
    """The service's event families that have at least one type on ``exchange``."""
    return [
        family
        for family in PUBLISHES[service]
        if any(
            t.split(".", 1)[0] == family and c.exchange is exchange for t, c in EVENT_TYPES.items()
        )
    ]


def service_permissions(prefix: str, service: str, user: str | None = None) -> Permissions:
    internal, public = f"{prefix}internal", f"{prefix}public"
    writes = [internal, requeue_exchange(prefix, service)]
    topics = {}
    for name, exchange in ((internal, Exchange.internal), (public, Exchange.public)):
        families = families_on(service, exchange)
        keys = f"^({'|'.join(families)})\\.[a-z0-9_]+$" if families else NOTHING
        topics[name] = (keys, NOTHING)
        if families and name == public:
            writes.append(public)
    return Permissions(
        user=user or service,
        configure=NOTHING,
        write=f"^({_alternatives(writes)})$",
        read=f"^{re.escape(prefix + service)}$",
        topics=topics,
    )


def publisher_permissions(prefix: str, publisher: str, user: str | None = None) -> Permissions:
    """A user that only publishes its own event families to the internal exchange (the
    pages): no queue to read, nothing to declare, no requeue exchange."""
    internal = f"{prefix}internal"
    families = families_on(publisher, Exchange.internal)
    return Permissions(
        user=user or publisher,
        configure=NOTHING,
        write=f"^{re.escape(internal)}$",
        read=NOTHING,
        topics={internal: (f"^({'|'.join(families)})\\.[a-z0-9_]+$", NOTHING)},
    )


def subscriber_permissions(prefix: str, user: str = "subscriber") -> Permissions:
    """An outside system's user: its own ``<user>.*`` queues, bound to enrollment keys of
    the public exchange; nothing of Holdspace's own (docs/subscribing.md)."""
    own = f"{re.escape(user)}\\..*"
    public = f"{prefix}public"
    return Permissions(
        user=user,
        configure=f"^{own}",
        write=f"^{own}",
        read=f"^({own}|{re.escape(public)})$",
        topics={public: (NOTHING, "^enrollment\\.")},
    )


def dlq_policy(prefix: str, bounds: DlqBoundSettings) -> dict[str, object]:
    """A policy on every ``<prefix><service>.dlq``: a policy, not queue arguments, so it
    bounds queues that already exist (changing their arguments is PRECONDITION_FAILED).
    ``drop-head``: past the length the oldest dead letter goes."""
    return {
        "name": DLQ_POLICY_NAME,
        "pattern": f"^{re.escape(prefix)}({_alternatives(list(SERVICES))})\\.dlq$",
        "apply-to": "queues",
        "priority": 10,
        "definition": {
            "max-length": bounds.dlq_max_length,
            "message-ttl": bounds.dlq_ttl_s * 1000,
            "overflow": "drop-head",
        },
    }


# --- applied to a local broker with rabbitmqctl (scripts/up, the tests) ----------------


def apply_dlq_bounds(vhost: str, prefix: str, bounds: DlqBoundSettings) -> None:
    policy = dlq_policy(prefix, bounds)
    devinfra.rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        str(policy["apply-to"]),
        "--priority",
        str(policy["priority"]),
        str(policy["name"]),
        str(policy["pattern"]),
        json.dumps(policy["definition"]),
    )


def apply_permissions(vhost: str, permissions: Permissions, password: str) -> None:
    """Create (or reset) the user with exactly these permissions on ``vhost``."""
    p = permissions
    try:
        devinfra.rabbitmqctl("add_user", p.user, password)
    except Exception:  # exists: reset its password
        devinfra.rabbitmqctl("change_password", p.user, password)
    devinfra.rabbitmqctl("set_permissions", "-p", vhost, p.user, p.configure, p.write, p.read)
    for exchange, (write, read) in p.topics.items():
        devinfra.rabbitmqctl("set_topic_permissions", "-p", vhost, p.user, exchange, write, read)


# --- deploy/rabbitmq/definitions.json, generated from the code ------------------------

DEFINITIONS_PREFIX = "holdspace."  # docker-compose.yml pins HOLDSPACE_TOPOLOGY_PREFIX to it


class _Recorder:
    """A channel that records what Broker.declare_service_queues declares."""

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.exchanges: dict[str, dict[str, object]] = {}
        self.queues: dict[str, dict[str, object]] = {}
        self.bindings: dict[tuple[str, str, str], dict[str, object]] = {}

    async def declare_exchange(self, name: str, type: object, durable: bool = False, **_: object):
        self.exchanges[name] = {
            "name": name,
            "vhost": self.vhost,
            "type": getattr(type, "value", type),
            "durable": durable,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }

    async def declare_queue(self, name: str, durable: bool = False, arguments=None, **_: object):
        self.queues[name] = {
            "name": name,
            "vhost": self.vhost,
            "durable": durable,
            "auto_delete": False,
            "arguments": dict(arguments or {}),
        }
        recorder = self

        class _Queue:
            async def bind(self, exchange: object, routing_key: str = "", **_: object) -> None:
                source = exchange if isinstance(exchange, str) else exchange.name  # type: ignore[attr-defined]
                recorder.bindings[(source, name, routing_key)] = {
                    "source": source,
                    "vhost": recorder.vhost,
                    "destination": name,
                    "destination_type": "queue",
                    "routing_key": routing_key,
                    "arguments": {},
                }

        return _Queue()


def _permission_entries(p: Permissions, vhost: str) -> tuple[dict, list[dict]]:
    perm = {"user": p.user, "vhost": vhost, "configure": p.configure, "write": p.write}
    perm["read"] = p.read
    topics = [
        {"user": p.user, "vhost": vhost, "exchange": x, "write": w, "read": r}
        for x, (w, r) in p.topics.items()
    ]
    return perm, topics


def definitions(retry_delays_ms: tuple[int, ...], bounds: DlqBoundSettings) -> dict:
    """The whole topology the services declare, their users' permissions (no users: the
    deployment adds them with their passwords) and the DLQ bounds, for vhost ``/``."""
    import asyncio

    from shared.messaging import Broker, Topology
    from shared.topology import subscriptions

    vhost, prefix = "/", DEFINITIONS_PREFIX
    recorder = _Recorder(vhost)

    async def declare_all() -> None:
        for service, event_types in subscriptions().items():
            broker = Broker("amqp://unused/", Topology(prefix, service, retry_delays_ms))
            await broker.declare_service_queues(recorder, event_types)  # type: ignore[arg-type]

    asyncio.run(declare_all())
    permissions, topic_permissions = [], []
    users = [
        *(service_permissions(prefix, s) for s in SERVICES),
        publisher_permissions(prefix, "web"),
        subscriber_permissions(prefix),
    ]
    for p in users:
        perm, topics = _permission_entries(p, vhost)
        permissions.append(perm)
        topic_permissions += topics
    policy = {"vhost": vhost, **dlq_policy(prefix, bounds)}
    return {
        "vhosts": [{"name": vhost}],
        "users": [],
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": [],
        "global_parameters": [],
        "policies": [policy],
        "exchanges": sorted(recorder.exchanges.values(), key=lambda e: str(e["name"])),
        "queues": sorted(recorder.queues.values(), key=lambda q: str(q["name"])),
        "bindings": [recorder.bindings[k] for k in sorted(recorder.bindings)],
    }


def default_definitions() -> dict:
    """For the services' default retry settings and the default bounds (what the file holds)."""
    from shared.settings import ServiceSettings

    settings = ServiceSettings.model_construct()  # the field defaults, whatever the shell says
    return definitions(tuple(settings.retry_delays_ms()), DlqBoundSettings.model_construct())


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m shared.brokeraccess")
    parser.add_argument("--write", type=Path, help="write the definitions to this file")
    args = parser.parse_args(argv)
    text = json.dumps(default_definitions(), indent=2, ensure_ascii=False) + "\n"
    if args.write:
        args.write.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
