"""What payments does with other services' events.

Each handler is one decision on the registration's payment case, conditional on the
event not having been applied (the case's inbox), so a redelivery changes nothing.

- ``registration.submitted``: only when a scholarship was requested (the reason stays
  sealed in registration; payments needs only that one was asked for, and the price).
- ``consent.signed``: issue the payment request (or waive it, or wait for the decision).
- ``registration.withdrawn`` / ``registration.expired``: cancel or expire an open request;
  after payment, record the refund the program's policy calls for.
"""

from __future__ import annotations

from payments.service import PaymentService
from shared.messaging import Handler


def build_handlers(service: PaymentService) -> dict[str, Handler]:
    return {
        "registration.submitted": service.scholarship_requested,
        "consent.signed": service.consent_signed,
        "registration.withdrawn": service.registration_ended,
        "registration.expired": service.registration_ended,
    }
