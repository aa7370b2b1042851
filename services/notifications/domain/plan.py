"""Which messages an event causes, and to whom (pure).

Every message is named by its template; the README of the service lists each with
its trigger. Applicant messages go to the one applicant the event is about;
coordinator messages go to every configured coordinator address and the chat robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Audience(StrEnum):
    applicant = "applicant"
    coordinators = "coordinators"


@dataclass(frozen=True)
class Planned:
    template: str
    audience: Audience
    urgent: bool = False  # ignores quiet hours
    # Waits out the recipient's quiet hours: news nobody just asked for. A reply to
    # what the applicant or their coordinator just did goes at once, day or night.
    unprompted: bool = False
    deadline: datetime | None = None  # a deferral past this is pointless
    calendar: bool = False  # attach the cohort's sessions as .ics


APPLICANT_TEMPLATES = (
    "verify_email",
    "already_registered",
    "signup_received",
    "waitlisted",
    "seat_offered",
    "composition_unmet",
    "approved",
    "rejected",
    "consent_requested",
    "payment_requested",
    "confirmed",
    "reminder",
    "withdrawn",
    "moved",
    "cohort_cancelled",
    "sessions_changed",
    "joining_changed",
    "expired",
    "crisis_resources",
    "milestone_reached",
)
COORDINATOR_TEMPLATES = (
    "coordinator_review",
    "coordinator_safety",
    "coordinator_safety_escalation",
    "coordinator_payment_problem",
    "coordinator_manual_confirmation",
    "coordinator_undeliverable",
)
TEMPLATES = APPLICANT_TEMPLATES + COORDINATOR_TEMPLATES

# Messages that carry how to join, and only to a confirmed participant.
WITH_JOINING = frozenset({"confirmed", "reminder", "sessions_changed", "moved", "joining_changed"})

# Messages still worth sending after the registration closed (withdrawn, expired,
# rejected); any other applicant message still waiting then is cancelled.
SENT_WHEN_CLOSED = frozenset(
    {"withdrawn", "cohort_cancelled", "expired", "rejected", "crisis_resources"}
)

# How an event changes what notifications knows about the applicant.
CLOSING_EVENTS = frozenset(
    {"registration.withdrawn", "registration.expired", "registration.rejected"}
)


def _when(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


# Events that send the applicant one plain message, at once.
ONE_REPLY: dict[str, str] = {
    "registration.submitted": "signup_received",
    "registration.rejected": "rejected",
    "registration.waitlisted": "waitlisted",
    # They just ticked a milestone: a short word back, discreet in subject and preview.
    "progress.milestone_reached": "milestone_reached",
}


def plan(event_type: str, data: dict[str, Any]) -> list[Planned]:
    """The messages ``event_type`` causes (``data`` is the event's JSON payload)."""
    a, c = Audience.applicant, Audience.coordinators
    if event_type in ONE_REPLY:
        return [Planned(ONE_REPLY[event_type], a)]
    match event_type:
        case "registration.email_verification_requested":
            # The applicant just signed up: the link goes at once, day or night.
            if data.get("already_registered"):
                return [Planned("already_registered", a)]
            return [Planned("verify_email", a, deadline=_when(data, "verify_by"))]
        case "registration.pending_review":
            return [Planned("coordinator_review", c)]
        case "registration.approved":
            return [Planned("approved", a, deadline=_when(data, "hold_expires_at"))]
        case "registration.seat_offered":
            deadline = _when(data, "offer_expires_at")
            return [Planned("seat_offered", a, unprompted=True, deadline=deadline)]
        case "registration.composition_unmet":
            deadline = _when(data, "withdraw_by")
            return [Planned("composition_unmet", a, unprompted=True, deadline=deadline)]
        case "registration.moved":
            # The coordinator just moved them: the new group's sessions, with a calendar
            # for a confirmed place.
            return [Planned("moved", a, calendar=data.get("status") == "confirmed")]
        case "registration.withdrawn":
            # The coordinator just cancelled the cohort: word goes at once, as a reply.
            return [Planned("cohort_cancelled" if data.get("cohort_cancelled") else "withdrawn", a)]
        case "registration.expired":
            return [Planned("expired", a, unprompted=True)]
        case "registration.flagged_for_safety":
            return [
                Planned("crisis_resources", a, urgent=True),
                Planned("coordinator_safety", c, urgent=True),
            ]
        case "consent.requested":
            return [Planned("consent_requested", a, deadline=_when(data, "expires_at"))]
        case "payment.requested":
            return [Planned("payment_requested", a, deadline=_when(data, "expires_at"))]
        case "payment.failed" | "payment.flagged" | "payment.refund_due":
            return [Planned("coordinator_payment_problem", c)]
        case "payment.confirmation_pending":
            return [Planned("coordinator_manual_confirmation", c)]
        case "enrollment.confirmed":
            return [Planned("confirmed", a, calendar=True)]
        case "cohort.joining_changed":
            # How to join, set or changed by the coordinator just now: to each confirmed
            # participant, with the calendar's LOCATION and URL updated.
            return [Planned("joining_changed", a, calendar=True)]
        case "cohort.sessions_changed":
            # To each confirmed participant (the cohort's roster): their coordinator just
            # changed the sessions, so word goes at once, with the replacing calendar.
            return [Planned("sessions_changed", a, calendar=True)]
        case _:
            return []


def recipient_status_after(event_type: str) -> str | None:
    """The applicant's standing in notifications' own projection after an event."""
    if event_type in CLOSING_EVENTS:
        return "closed"
    if event_type == "enrollment.confirmed":
        return "confirmed"
    return None


def still_wanted(template: str, recipient_status: str) -> bool:
    """Whether an applicant message waiting to go is still worth sending."""
    if template == "reminder":
        return recipient_status == "confirmed"
    if recipient_status == "closed":
        return template in SENT_WHEN_CLOSED
    return True
