"""What notifications does with events: every event that tells a person something goes
to one use case.

The messages each event causes are decided in domain/plan.py; the handler only hands
over. A handler that finds the applicant unknown (an event that overtook its
registration.submitted) fails, and the consumer retries it later.
"""

from __future__ import annotations

from notifications import erasure
from notifications.service import NotificationService
from shared import events as ev
from shared.events import Envelope, utcnow
from shared.subscriptions import Subscriptions

subscriptions: Subscriptions[NotificationService] = Subscriptions("notifications")

TellsSomeone = (
    ev.RegistrationEmailVerificationRequested
    | ev.RegistrationSubmitted
    | ev.RegistrationPendingReview
    | ev.RegistrationApproved
    | ev.RegistrationRejected
    | ev.RegistrationWaitlisted
    | ev.RegistrationSeatOffered
    | ev.RegistrationCompositionUnmet
    | ev.RegistrationWithdrawn
    | ev.RegistrationMoved
    | ev.RegistrationExpired
    | ev.RegistrationFlaggedForSafety
    | ev.ConsentRequested
    | ev.PaymentRequested
    | ev.PaymentFailed
    | ev.PaymentFlagged
    | ev.PaymentRefundDue
    | ev.PaymentConfirmationPending
    | ev.EnrollmentConfirmed
    | ev.ProgressMilestoneReached
)


@subscriptions.on
async def erase_mine(
    service: NotificationService, event: ev.RegistrationErasureRequested, envelope: Envelope
) -> None:
    """Drop the contact and every message about the registration."""
    assert service.stores.erasures is not None
    await erasure.erase(service.stores, service.stores.erasures, event.registration_id, utcnow())


@subscriptions.on
async def sessions_changed(
    service: NotificationService, event: ev.CohortSessionsChanged, envelope: Envelope
) -> None:
    await service.sessions_changed(event, envelope)


@subscriptions.on
async def joining_changed(
    service: NotificationService, event: ev.CohortJoiningChanged, envelope: Envelope
) -> None:
    await service.joining_changed(event, envelope)


@subscriptions.on
async def homework_set(
    service: NotificationService, event: ev.ProgressPlanSet, envelope: Envelope
) -> None:
    """After which sessions the program sets homework: the next reminder says so."""
    await service.reminders.set_homework(event.program_id, event.homework_sessions, event.set_at)


@subscriptions.on
async def tell(service: NotificationService, event: TellsSomeone, envelope: Envelope) -> None:
    await service.handle(event, envelope)
