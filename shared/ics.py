"""A cohort's sessions as an iCalendar file: one VEVENT per session, in its time zone.

Notifications attaches it to the confirmation email and to the news of changed
sessions; the pages offer it on the confirmed registration. The summary is a discreet
name, never the group's condition.

The n-th session (in time order) is always ``<cohort id>-<n>@holdspace``: when the
sessions change, the new file carries a higher SEQUENCE and calendars replace the
entries they hold; sessions dropped by the change come as cancelled entries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event

PRODID = "-//Holdspace//Holdspace//EN"


def build_ics(
    *,
    uid_prefix: str,
    summary: str,
    sessions: list[dict[str, Any]],
    description: str = "",
    location: str = "",
    url: str = "",
    now: datetime | None = None,
    sequence: int = 0,
    cancelled: list[dict[str, Any]] | None = None,
    left: dict[str, Any] | None = None,
) -> bytes:
    """``sessions``: ``{starts_at, ends_at, timezone}`` with aware datetimes or ISO strings.
    ``location`` and ``url`` say how to join (a meeting platform and its link).
    ``sequence``: how often the sessions changed; ``cancelled``: the sessions a change
    dropped, in the order of the slots after the live ones. ``left``: the group the
    person was moved out of (``uid_prefix``, ``sessions``, ``sequence``, from
    :func:`left_group`), whose entries come as cancelled."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    stamp = now or datetime.now(UTC)
    ordered = sorted(sessions, key=lambda s: _dt(s["starts_at"]))
    slots = [(s, False) for s in ordered] + [(s, True) for s in cancelled or []]
    joining = {"description": description, "location": location, "url": url}
    for i, (session, dropped) in enumerate(slots, start=1):
        uid = f"{uid_prefix}-{i}@holdspace"
        cal.add_component(_event(uid, session, summary, sequence, stamp, dropped, **joining))
    if left:
        gone = sorted(left["sessions"], key=lambda s: _dt(s["starts_at"]))
        for i, session in enumerate(gone, start=1):
            uid = f"{left['uid_prefix']}-{i}@holdspace"
            cal.add_component(_event(uid, session, summary, left["sequence"], stamp, True))
    cal.add_missing_timezones()
    return cal.to_ical()


def left_group(cohort: dict[str, Any] | None) -> dict[str, Any] | None:
    """The entries of a group someone was moved out of, ready to cancel: its slots as
    they were last sent (live sessions in time order), one SEQUENCE higher."""
    if not cohort or not cohort.get("sessions"):
        return None
    return {
        "uid_prefix": cohort["_id"],
        "sessions": [
            {k: _text(s[k]) for k in ("starts_at", "ends_at", "timezone")}
            for s in cohort["sessions"]
        ],
        "sequence": cohort.get("sessions_sequence", 0) + 1,
    }


def _event(
    uid: str,
    session: dict[str, Any],
    summary: str,
    sequence: int,
    stamp: datetime,
    dropped: bool,
    *,
    description: str = "",
    location: str = "",
    url: str = "",
) -> Event:
    tz = _zone(session.get("timezone"))
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp)
    event.add("dtstart", _dt(session["starts_at"]).astimezone(tz))
    event.add("dtend", _dt(session["ends_at"]).astimezone(tz))
    event.add("summary", summary)
    if description:
        event.add("description", description)
    if location:
        event.add("location", location)
    if url:
        event.add("url", url)
    event.add("sequence", sequence)
    if dropped:
        event.add("status", "CANCELLED")
    return event


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _dt(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def calendar_joining(joining: dict[str, Any] | None) -> dict[str, str]:
    """How to join, as a calendar entry holds it: the platform as LOCATION, the link as
    URL, the meeting id and passcode in DESCRIPTION (the participant's own calendar)."""
    if not joining:
        return {}
    lines = [joining.get("meeting_id") and f"Meeting ID: {joining['meeting_id']}"]
    lines += [joining.get("passcode") and f"Passcode: {joining['passcode']}"]
    return {
        "location": joining["platform"],
        "url": joining.get("url") or "",
        "description": "\n".join(line for line in lines if line),
    }
