"""What payments does with other services' events.

Each handler is one decision on the registration's payment case, conditional on the
event not having been applied (the case's inbox), so a redelivery changes nothing.
"""

from __future__ import annotations

from payments import erasure
from payments.scholarships import Scholarships
from payments.service import PaymentService
from shared import events as ev
from shared.events import Envelope, utcnow
from shared.subscriptions import Subscriptions

subscriptions: Subscriptions[PaymentService] = Subscriptions("payments")


@subscriptions.on
async def scholarship_requested(
    service: PaymentService, event: ev.RegistrationSubmitted, envelope: Envelope
) -> None:
    """Only when a scholarship was asked for: the reason stays sealed in registration;
    payments needs to know that one was asked, and the price."""
    await service.scholarship_requested(event, envelope.id)


@subscriptions.on
async def erase_mine(
    service: PaymentService, event: ev.RegistrationErasureRequested, envelope: Envelope
) -> None:
    """Drop coordinators' notes about the payment; the accounts stay, naming nobody."""
    assert service.stores.erasures is not None
    await erasure.erase(service, service.stores.erasures, event.registration_id, utcnow())


@subscriptions.on
async def consent_signed(
    service: PaymentService, event: ev.ConsentSigned, envelope: Envelope
) -> None:
    """Consent comes before payment: only a signed consent issues the payment request
    (or waives it, or waits for the scholarship decision)."""
    await service.consent_signed(event, envelope.id)


@subscriptions.on
async def registration_ended(
    service: PaymentService,
    event: ev.RegistrationWithdrawn | ev.RegistrationExpired,
    envelope: Envelope,
) -> None:
    """Cancel or expire an open request; after payment, record the refund the
    program's policy calls for."""
    await service.registration_ended(event, envelope.id)


@subscriptions.on
async def paid_after_close(
    service: PaymentService, event: ev.RegistrationPaidAfterClose, envelope: Envelope
) -> None:
    """The money confirmed here bought no seat: it is owed back, and coordinators see it
    among the refunds to make."""
    await service.paid_after_close(event, envelope.id)


@subscriptions.on
async def registration_moved(
    service: PaymentService, event: ev.RegistrationMoved, envelope: Envelope
) -> None:
    """The payment follows the registration to its new cohort, a scholarship grant to
    that cohort's budget when it has room."""
    await Scholarships(service).registration_moved(event, envelope.id)
