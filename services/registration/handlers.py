"""What registration does with other services' events: move the registration on.

Each handler is one decision on the cohort's ledger, conditional on the event not
having been applied (the cohort's inbox), so a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from registration.service import RegistrationService
from shared.errors import NotFound
from shared.events import Envelope
from shared.logs import get_logger
from shared.messaging import Handler

log = get_logger(__name__)

STEPS = {
    "consent.signed": "consent_signed",
    "consent.declined": "lapse_withdrawn",
    "consent.withdrawn": "lapse_withdrawn",
    "consent.expired": "lapse_expired",
    "payment.confirmed": "payment_settled",
    "payment.waived": "payment_settled",
    "payment.expired": "lapse_expired",
}


def build_handlers(service: RegistrationService) -> dict[str, Handler]:
    def handler_for(step: str) -> Handler:
        async def handle(envelope: Envelope) -> None:
            payload = envelope.payload()
            try:
                status = await service.change(
                    payload.registration_id, step, datetime.now(UTC), event_id=envelope.id
                )
            except NotFound:
                # Not ours (or erased): nothing to move. Acknowledged, logged by id only.
                log.warning("event for an unknown registration", step=step)
                return
            log.info("registration moved", step=step, status=str(status))

        return handle

    return {event_type: handler_for(step) for event_type, step in STEPS.items()}
