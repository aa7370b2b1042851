"""What registration does with other services' events: move the registration on.

Each handler is one decision on the cohort's ledger, conditional on the event not
having been applied (the cohort's inbox), so a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from registration import safety
from registration.erasure import Erasures
from registration.service import RegistrationService
from shared import events as ev
from shared.errors import NotFound
from shared.events import Envelope
from shared.logs import get_logger
from shared.subscriptions import Subscriptions

log = get_logger(__name__)
subscriptions: Subscriptions[RegistrationService] = Subscriptions("registration")


@subscriptions.on
async def consent_signed(
    service: RegistrationService, event: ev.ConsentSigned, envelope: Envelope
) -> None:
    await _move(service, event.registration_id, "consent_signed", envelope.id)


@subscriptions.on
async def paid(
    service: RegistrationService,
    event: ev.PaymentConfirmed | ev.PaymentWaived,
    envelope: Envelope,
) -> None:
    step = "paid" if isinstance(event, ev.PaymentConfirmed) else "payment_settled"
    await _move(service, event.registration_id, step, envelope.id)


@subscriptions.on
async def left_by_the_applicant(
    service: RegistrationService,
    event: ev.ConsentDeclined | ev.ConsentWithdrawn,
    envelope: Envelope,
) -> None:
    await _move(service, event.registration_id, "lapse_withdrawn", envelope.id)


@subscriptions.on
async def ran_out_of_time(
    service: RegistrationService,
    event: ev.ConsentExpired | ev.PaymentExpired,
    envelope: Envelope,
) -> None:
    await _move(service, event.registration_id, "lapse_expired", envelope.id)


@subscriptions.on
async def erased_elsewhere(
    service: RegistrationService,
    event: ev.ConsentErased | ev.PaymentErased | ev.NotificationErased | ev.ProgressErased,
    envelope: Envelope,
) -> None:
    await Erasures(service).completed(event)


@subscriptions.on
async def answered_for_safety(
    service: RegistrationService, event: ev.ProgressSafetyAnswered, envelope: Envelope
) -> None:
    """A safety item answered between sessions: a person looks, as for intake's."""
    await safety.flag_later_answer(service.stores, event, envelope.id)


async def _move(service: RegistrationService, rid: str, step: str, event_id: str) -> None:
    try:
        status = await service.change(rid, step, datetime.now(UTC), event_id=event_id)
    except NotFound:
        # Not ours (or erased): nothing to move. Acknowledged, logged by id only.
        log.warning("event for an unknown registration", step=step)
        return
    log.info("registration moved", step=step, status=str(status))
