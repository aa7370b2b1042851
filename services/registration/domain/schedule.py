"""When a cohort meets: its sessions, given one by one or as a recurrence rule, and
its registration window (pure)."""

from __future__ import annotations

from datetime import timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from pydantic import AwareDatetime, BaseModel, Field, NaiveDatetime, model_validator

from registration.domain.programs import Line, Strict, Text, TimeZone


class SessionSpec(BaseModel):
    model_config = Strict
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    timezone: TimeZone

    @model_validator(mode="after")
    def _ordered(self) -> SessionSpec:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


MAX_SESSIONS = 100


# A wall-clock time with no offset (RFC 3339's date-time requires one).
LOCAL_TIME = (
    r"^[1-9]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$"
)


def _local_time(schema: dict[str, Any]) -> None:
    schema.pop("format", None)
    schema["pattern"] = LOCAL_TIME


class Recurrence(BaseModel):
    """Sessions as an RFC 5545 recurrence rule, at a local time in a time zone: e.g. the
    first Wednesday of May, July, September and November, 19:00 for 90 minutes in
    Asia/Shanghai is ``FREQ=MONTHLY;BYMONTH=5,7,9,11;BYDAY=+1WE;COUNT=4`` from
    ``2027-05-05T19:00``. The rule must end (COUNT or UNTIL), within 100 sessions."""

    model_config = Strict
    rrule: Line = Field(min_length=1, max_length=500, examples=["FREQ=WEEKLY;COUNT=6"])
    starts: NaiveDatetime = Field(
        description="the first session's local start, no zone",
        json_schema_extra=_local_time,
    )
    minutes: int = Field(ge=5, le=24 * 60)
    timezone: TimeZone

    @model_validator(mode="after")
    def _gives_sessions(self) -> Recurrence:
        self.sessions()  # refused here, its error names `recurrence`
        return self

    def sessions(self) -> list[SessionSpec]:
        upper = self.rrule.upper()
        if "COUNT=" not in upper and "UNTIL=" not in upper:
            raise ValueError("the rule must end: give COUNT or UNTIL")
        zone = ZoneInfo(self.timezone)
        try:  # a third-party parser given untrusted text: any refusal is the input's fault
            rule = rrulestr(self.rrule, dtstart=self.starts)
            starts = list(islice(iter(rule), MAX_SESSIONS + 1))  # type: ignore[arg-type]
            spans = [
                (s.replace(tzinfo=zone), s.replace(tzinfo=zone) + timedelta(minutes=self.minutes))
                for s in starts
            ]
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"not a recurrence rule: {exc}") from None
        if not spans or len(spans) > MAX_SESSIONS:
            raise ValueError(f"the rule must give from 1 to {MAX_SESSIONS} sessions")
        return [SessionSpec(starts_at=a, ends_at=b, timezone=self.timezone) for a, b in spans]


class CohortSpec(BaseModel):
    model_config = Strict
    label: Text = Field("", max_length=200)
    sessions: list[SessionSpec] = Field(
        default_factory=list, max_length=MAX_SESSIONS, description="or give `recurrence`"
    )
    recurrence: Recurrence | None = Field(None, description="the sessions as a rule")
    registration_opens_at: AwareDatetime
    registration_closes_at: AwareDatetime
    capacity: int | None = Field(None, ge=1, le=200, description="defaults to the program's")
    hold_seconds: int = Field(7 * 24 * 3600, ge=1, le=90 * 24 * 3600)
    offer_seconds: int = Field(48 * 3600, ge=1, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def _window(self) -> CohortSpec:
        if self.registration_closes_at <= self.registration_opens_at:
            raise ValueError("registration_closes_at must be after registration_opens_at")
        if self.recurrence is not None:
            if self.sessions:
                raise ValueError("give sessions or a recurrence, not both")
            self.sessions = self.recurrence.sessions()
        if not self.sessions:
            raise ValueError("sessions: at least one session (or a recurrence)")
        return self


class CohortEdit(BaseModel):
    model_config = Strict
    label: Text | None = Field(None, max_length=200)
    registration_opens_at: AwareDatetime | None = None
    registration_closes_at: AwareDatetime | None = None
    hold_seconds: int | None = Field(None, ge=1, le=90 * 24 * 3600)
    offer_seconds: int | None = Field(None, ge=1, le=30 * 24 * 3600)
