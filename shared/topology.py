"""Who consumes what: the bindings of every service's queue, declared by every service.

Each service declares all four queues and their bindings at start-up, not only its
own. So an event is routable (and waits in its consumer's queue) as soon as any
service runs, whatever order the services start in; a mandatory publish is refused
only when a binding is really missing. MAX_ATTEMPTS must be the same for every
service, since it shapes the queue arguments.
"""

from __future__ import annotations

SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "registration": (
        "consent.signed",
        "consent.declined",
        "consent.withdrawn",
        "consent.expired",
        "payment.confirmed",
        "payment.waived",
        "payment.expired",
    ),
    "consent": (
        "registration.approved",
        "registration.withdrawn",
        "registration.expired",
        "enrollment.confirmed",
    ),
    "payments": (
        "consent.signed",
        "registration.submitted",
        "registration.withdrawn",
        "registration.expired",
    ),
    "notifications": (
        "registration.submitted",
        "registration.pending_review",
        "registration.approved",
        "registration.rejected",
        "registration.waitlisted",
        "registration.seat_offered",
        "registration.withdrawn",
        "registration.expired",
        "registration.flagged_for_safety",
        "consent.requested",
        "payment.requested",
        "payment.failed",
        "payment.flagged",
        "payment.confirmation_pending",
        "enrollment.confirmed",
    ),
}

SERVICES = tuple(SUBSCRIPTIONS)
