"""What a message's template is given: from the event, the recipient and the cohort.

Never a condition or a reason: the templates say only what the person needs to act on,
and a group is named by its discreet display name (or "your group").
"""

from __future__ import annotations

from typing import Any

GENERIC_GROUP_NAME = {"en": "your group", "zh": "你的小组"}


def applicant_context(
    event_type: str,
    data: dict[str, Any],
    recipient: dict[str, Any],
    contact: dict[str, str],
    cohort: dict[str, Any] | None,
    *,
    web_url: str,
) -> dict[str, Any]:
    """``web_url``: the pages' base URL, for the link to the applicant's registration."""
    lang = recipient["language"]
    cohort = cohort or {}
    context: dict[str, Any] = {
        "name": contact.get("name", ""),
        "tz": recipient["timezone"],
        "display_name": cohort.get("display_name") or GENERIC_GROUP_NAME[lang],
        "contact_email": cohort.get("contact_email"),
        "cohort_id": recipient["cohort_id"],
        "sessions": _as_text(cohort.get("sessions", [])),
        # The calendar file replaces entries sent before (shared/ics.py).
        "calendar_sequence": cohort.get("sessions_sequence", 0),
        "cancelled_sessions": _as_text(cohort.get("retired_sessions", [])),
    }
    if contact.get("access_token"):
        context["my_url"] = (
            f"{web_url.rstrip('/')}/my/{data['registration_id']}?t={contact['access_token']}"
        )
    for key in (
        "status",
        "position",
        "offer_expires_at",
        "composition",
        "withdraw_by",
        "verify_by",
        "hold_expires_at",
        "signing_url",
        "expires_at",
        "amount",
        "reference",
        "instructions",
        "scholarship",
        "refundable",
        "crisis_resources",
    ):
        if key in data:
            context[key] = data[key]
    if isinstance(data.get("title"), dict):  # progress.milestone_reached
        titles = data["title"]
        context["milestone"] = titles.get(lang) or next(iter(titles.values()), "")
        context["reached"], context["of"] = data["reached"], data["of"]
    context.setdefault("scholarship", None)  # events from before the field have none
    context["joining"] = None  # added for a confirmed participant only (service.py)
    return context


def _as_text(sessions: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "starts_at": s["starts_at"].isoformat(),
            "ends_at": s["ends_at"].isoformat(),
            "timezone": s["timezone"],
        }
        for s in sessions
    ]


# The console page each coordinator message is about; the rest open the console's start.
ABOUT_A_REGISTRATION = frozenset(
    {
        "coordinator_review",
        "coordinator_safety",
        "coordinator_safety_escalation",
        "coordinator_payment_problem",
    }
)


def console_link(console_url: str, template: str, registration_id: str | None) -> str:
    base = console_url.rstrip("/")
    if template == "coordinator_manual_confirmation":
        return f"{base}/payments"
    if registration_id and template in ABOUT_A_REGISTRATION:
        return f"{base}/registrations/{registration_id}"
    return base


def coordinator_context(
    data: dict[str, Any],
    cohort: dict[str, Any] | None,
    *,
    template: str,
    language: str,
    console_url: str,
) -> dict[str, Any]:
    lang = language
    rid = data.get("registration_id") or "-"
    return {
        "tz": "UTC",
        "registration_id": rid,
        "payment_id": data.get("payment_id") or "-",
        "reason_code": data.get("reason_code", ""),
        "display_name": (cohort or {}).get("display_name") or GENERIC_GROUP_NAME[lang],
        "console_url": console_link(console_url, template, data.get("registration_id")),
    }
