"""A cohort's sessions given as an RFC 5545 recurrence rule, at a local time in a time
zone (registration/domain/schedule.py), and a program signed up for per session."""

from __future__ import annotations

from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from registration.domain.programs import ProgramSpec
from registration.domain.schedule import CohortSpec

from tests.unit.test_handlers_registration import NOW, System

SHANGHAI = ZoneInfo("Asia/Shanghai")
WINDOW = {
    "registration_opens_at": NOW - timedelta(days=1),
    "registration_closes_at": NOW + timedelta(days=10),
}
FIRST_WEDNESDAYS = {
    "rrule": "FREQ=MONTHLY;BYMONTH=5,7,9,11;BYDAY=+1WE;COUNT=4",
    "starts": "2027-05-05T19:00",
    "minutes": 90,
    "timezone": "Asia/Shanghai",
}


def test_the_facilitators_rule_gives_the_first_wednesday_of_four_months() -> None:
    spec = CohortSpec(recurrence=FIRST_WEDNESDAYS, **WINDOW)
    starts = [s.starts_at.astimezone(SHANGHAI) for s in spec.sessions]
    assert [d.date().isoformat() for d in starts] == [
        "2027-05-05",
        "2027-07-07",
        "2027-09-01",
        "2027-11-03",
    ]
    assert {(d.hour, d.minute, d.weekday()) for d in starts} == {(19, 0, 2)}
    assert {s.ends_at - s.starts_at for s in spec.sessions} == {timedelta(minutes=90)}
    assert {s.timezone for s in spec.sessions} == {"Asia/Shanghai"}


def test_a_weekly_rule_keeps_its_local_time_across_summer_time() -> None:
    weekly = {"rrule": "FREQ=WEEKLY;COUNT=3", "starts": "2031-03-20T19:30", "minutes": 60}
    spec = CohortSpec(recurrence={**weekly, "timezone": "Europe/London"}, **WINDOW)
    london = [s.starts_at.astimezone(ZoneInfo("Europe/London")) for s in spec.sessions]
    assert {(d.hour, d.minute) for d in london} == {(19, 30)}
    utc = [s.starts_at.astimezone(UTC).hour for s in spec.sessions]
    assert utc[0] != utc[-1]  # the clocks went forward on 30 March 2031


@pytest.mark.parametrize(
    "wrong",
    [
        {"rrule": "FREQ=WEEKLY"},  # never ends
        {"rrule": "FREQ=DAILY;COUNT=101"},  # more than 100 sessions
        {"rrule": "FREQ=SOMETIMES;COUNT=2"},
        {"timezone": "Mars/Base"},
        {"minutes": 0},
        {"rrule": "COUNT=3"},  # no FREQ
        {"rrule": "FREQ=WEEKLY;UNTIL=soon"},
        {"rrule": "FREQ=MONTHLY;BYMONTH=13;COUNT=2"},  # gives no session
        {"starts": "9999-12-31T23:00"},  # ends past the calendar's end
    ],
)
def test_a_rule_that_does_not_end_or_is_not_one_is_refused_naming_it(wrong) -> None:
    with pytest.raises(ValidationError) as refused:
        CohortSpec(recurrence={**FIRST_WEDNESDAYS, **wrong}, **WINDOW)
    assert refused.value.errors()[0]["loc"][0] == "recurrence"


def test_sessions_or_a_rule_not_both_and_not_neither() -> None:
    one = CohortSpec(recurrence=FIRST_WEDNESDAYS, **WINDOW).sessions[:1]
    with pytest.raises(ValidationError, match="not both"):
        CohortSpec(sessions=one, recurrence=FIRST_WEDNESDAYS, **WINDOW)
    with pytest.raises(ValidationError, match="at least one session"):
        CohortSpec(**WINDOW)


PER_SESSION = ProgramSpec(
    title="Facilitators' processing session",
    display_name="Facilitators' circle",
    kind="facilitator_session",
    facilitator="Supervising facilitator",
    price={"amount_minor": 15000, "currency": "CNY"},
    sign_up_for="session",
)


async def test_a_program_signed_up_for_per_session_gets_a_cohort_per_session() -> None:
    system = System()
    per_session = (await system.admin.create_program(PER_SESSION))["_id"]
    created = await system.admin.create_cohort(
        per_session, CohortSpec(label="Facilitators", recurrence=FIRST_WEDNESDAYS, **WINDOW)
    )
    assert [c["label"] for c in created] == [
        "Facilitators · 2027-05-05",
        "Facilitators · 2027-07-07",
        "Facilitators · 2027-09-01",
        "Facilitators · 2027-11-03",
    ]
    assert {len(c["sessions"]) for c in created} == {1}
    series = (
        await system.admin.create_program(PER_SESSION.model_copy(update={"sign_up_for": "series"}))
    )["_id"]
    (one,) = await system.admin.create_cohort(
        series, CohortSpec(recurrence=FIRST_WEDNESDAYS, **WINDOW)
    )
    assert len(one["sessions"]) == 4  # one sign-up for the four sessions
