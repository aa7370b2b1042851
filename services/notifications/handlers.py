"""What notifications does with events: every subscribed type goes to one use case.

The messages each event causes are decided in domain/plan.py; the handler only
parses and hands over. A handler that finds the applicant unknown (an event that
overtook its registration.submitted) fails, and the consumer retries it later.
"""

from __future__ import annotations

from notifications.service import NotificationService
from shared.events import Envelope
from shared.messaging import Handler
from shared.topology import SUBSCRIPTIONS


def build_handlers(service: NotificationService) -> dict[str, Handler]:
    async def handle(envelope: Envelope) -> None:
        await service.handle(envelope)

    return {event_type: handle for event_type in SUBSCRIPTIONS["notifications"]}
