"""What consent does with other services' events.

- ``registration.approved``: create the signing request (once per registration,
  whatever the deliveries) and publish consent.requested with the signing link.
- ``registration.withdrawn`` / ``registration.expired``: cancel an open request.
- ``enrollment.confirmed``: remember it, so a new form version does not ask
  confirmed participants to sign again unless a coordinator says so.
"""

from __future__ import annotations

from consent.service import ConsentService
from shared.messaging import Handler


def build_handlers(service: ConsentService) -> dict[str, Handler]:
    return {
        "registration.approved": service.on_approved,
        "registration.withdrawn": service.on_registration_closed,
        "registration.expired": service.on_registration_closed,
        "enrollment.confirmed": service.on_confirmed,
    }
