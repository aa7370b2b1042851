"""What consent does with other services' events."""

from __future__ import annotations

from consent import erasure
from consent.service import ConsentService
from shared import events as ev
from shared.events import Envelope, utcnow
from shared.subscriptions import Subscriptions

subscriptions: Subscriptions[ConsentService] = Subscriptions("consent")


@subscriptions.on
async def approved(
    service: ConsentService, event: ev.RegistrationApproved, envelope: Envelope
) -> None:
    """Create the signing request (once per registration, whatever the deliveries) and
    publish consent.requested with the signing link."""
    await service.on_approved(event, envelope.id)


@subscriptions.on
async def registration_closed(
    service: ConsentService,
    event: ev.RegistrationWithdrawn | ev.RegistrationExpired,
    envelope: Envelope,
) -> None:
    """Cancel an open request (or leave a tombstone, should the approval come later)."""
    await service.on_registration_closed(event.registration_id, envelope.id)


@subscriptions.on
async def erase_mine(
    service: ConsentService, event: ev.RegistrationErasureRequested, envelope: Envelope
) -> None:
    """Drop the signer's typed name, IP and user agent; keep what the signature proves."""
    assert service.stores.erasures is not None
    await erasure.erase(service.stores, service.stores.erasures, event.registration_id, utcnow())


@subscriptions.on
async def confirmed(
    service: ConsentService, event: ev.EnrollmentConfirmed, envelope: Envelope
) -> None:
    """Remember it, so a new form version does not ask confirmed participants to sign
    again unless a coordinator says so."""
    await service.on_confirmed(event.registration_id, envelope.id)
