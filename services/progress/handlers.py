"""What progress does with other services' events: a space opens with a confirmed
enrollment, closes when it ends, and is erased with the registration."""

from __future__ import annotations

from progress.service import ProgressService
from shared import events as ev
from shared.events import Envelope
from shared.subscriptions import Subscriptions

subscriptions: Subscriptions[ProgressService] = Subscriptions("progress")


@subscriptions.on
async def confirmed(
    service: ProgressService, event: ev.EnrollmentConfirmed, envelope: Envelope
) -> None:
    """Open the participant's space (or follow a move to another cohort)."""
    await service.on_confirmed(event, envelope.id)


@subscriptions.on
async def cancelled(
    service: ProgressService, event: ev.EnrollmentCancelled, envelope: Envelope
) -> None:
    """The enrollment in that cohort ended (a move also ends the old one first)."""
    await service.on_ended(event.registration_id, event.cohort_id, envelope.id)


@subscriptions.on
async def withdrawn(
    service: ProgressService, event: ev.RegistrationWithdrawn, envelope: Envelope
) -> None:
    await service.on_ended(event.registration_id, None, envelope.id)


@subscriptions.on
async def erase_mine(
    service: ProgressService, event: ev.RegistrationErasureRequested, envelope: Envelope
) -> None:
    """Drop the space, the person's feedback and every share with them."""
    await service.on_erasure(event.registration_id)
