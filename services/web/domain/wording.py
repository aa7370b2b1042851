"""What an applicant is told about their registration: plain words and the next step.

Pure: takes the registration's status (registration's vocabulary) and answers message
keys of the locale catalogs (services/web/locales/), never a sentence of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Standing:
    status_key: str
    next_key: str
    may_withdraw: bool
    may_accept_offer: bool = False
    may_verify: bool = False


# registration.domain.ledger.Status values, as the registration API answers them.
_STANDINGS = {
    "unverified": Standing("status.unverified", "next.verify_email", False, may_verify=True),
    "submitted": Standing("status.submitted", "next.wait_review", True),
    "pending_review": Standing("status.pending_review", "next.wait_review", True),
    "approved": Standing("status.approved", "next.consent", True),
    "awaiting_consent": Standing("status.awaiting_consent", "next.consent", True),
    "awaiting_payment": Standing("status.awaiting_payment", "next.payment", True),
    "confirmed": Standing("status.confirmed", "next.confirmed", True),
    "waitlisted": Standing("status.waitlisted", "next.waitlisted", True),
    "offered": Standing("status.offered", "next.offered", True, may_accept_offer=True),
    "rejected": Standing("status.rejected", "next.none", False),
    "withdrawn": Standing("status.withdrawn", "next.none", False),
    "expired": Standing("status.expired", "next.none", False),
}


def standing(status: str) -> Standing:
    return _STANDINGS.get(status, Standing("status.unknown", "next.contact", False))


def seats_word(seats_left: int) -> str:
    """Whether places are left or the waitlist is open: never how many signed up."""
    return "group.places_open" if seats_left > 0 else "group.waitlist_open"


def as_seen(group: dict[str, Any], lang: str) -> dict[str, Any]:
    """The group in the viewer's language where the organisers wrote it in both:
    ``title`` and ``description`` the viewer's, ``own_title`` and ``own_description``
    the group's own words, kept when they differ so both can be shown."""
    other = group.get("translation")
    if lang == group.get("language") or not other:
        return group
    return {
        **group,
        "title": other["title"],
        "description": other.get("description") or group.get("description", ""),
        "own_title": group["title"],
        "own_description": group.get("description", "") if other.get("description") else "",
    }
