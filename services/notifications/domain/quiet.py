"""Quiet hours in the recipient's own time zone (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class QuietHours:
    """A daily window, e.g. 22:00-08:00 (it may wrap midnight); start == end means none."""

    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> QuietHours:
        return cls(time.fromisoformat(start), time.fromisoformat(end))

    @property
    def enabled(self) -> bool:
        return self.start != self.end

    def contains(self, t: time) -> bool:
        if not self.enabled:
            return False
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def zone(name: str | None) -> ZoneInfo:
    """The recipient's zone; an unknown name falls back to UTC rather than failing a send."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def send_at(
    now: datetime,
    timezone: str | None,
    quiet: QuietHours,
    *,
    urgent: bool,
    deadline: datetime | None = None,
) -> datetime:
    """When a message may go: now, or the end of the recipient's quiet hours.

    Urgent messages (crisis resources, safety alerts) ignore quiet hours. A deferral
    that would land after the message's deadline (an offer that expires, a session
    that starts) is worse than a message at night, so then it goes now.
    """
    if urgent or not quiet.enabled:
        return now
    tz = zone(timezone)
    local = now.astimezone(tz)
    if not quiet.contains(local.timetz().replace(tzinfo=None)):
        return now
    day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        day = day + timedelta(days=1)  # after the start of a window that ends tomorrow
    # fold/gap: zoneinfo resolves a wall time in a DST gap forward, which is what we want.
    end_local = datetime.combine(day, quiet.end, tzinfo=tz)
    later = end_local.astimezone(now.tzinfo)
    if deadline is not None and later >= deadline:
        return now
    return later
