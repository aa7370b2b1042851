"""``ops token revoke``: a revocation published straight to every service.

There is no database write to make atomic with it, so no outbox: the event is the
revocation. It is published ``mandatory`` with publisher confirms; the command
reports success only once the broker has it queued for every service (each takes
``staff.access_revoked``), and fails loudly otherwise, so the operator runs it again.
"""

from __future__ import annotations

from shared.events import StaffAccessRevoked, make_envelope, new_id
from shared.messaging import Broker
from shared.ops.settings import OpsSettings

SOURCE = "holdspace/ops"


async def publish_revocation(settings: OpsSettings, revoked: StaffAccessRevoked) -> str:
    """Publish one revocation; its event id, once the broker confirmed it."""
    event_id = new_id()
    envelope = make_envelope(revoked, source=SOURCE, correlation_id=event_id, event_id=event_id)
    broker = Broker(
        settings.rabbitmq_url,
        settings.topology("ops"),
        publish_timeout_s=settings.ops_timeout_s,
        connect_timeout_s=settings.ops_timeout_s,
    )
    await broker.connect()
    try:
        await broker.publish(envelope)
    finally:
        await broker.close()
    return event_id
