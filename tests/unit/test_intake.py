"""Intake rules (check_application) and the program, cohort and application models."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from registration.domain.programs import (
    Application,
    Gender,
    GenderComposition,
    IntakeProblem,
    Price,
    ProgramSpec,
    age_on,
    check_application,
    registration_open,
)
from registration.domain.schedule import CohortSpec, SessionSpec

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Wednesday 19:30 Asia/Shanghai (11:30 UTC): the same calendar day everywhere near it
FIRST_SESSION = datetime(2025, 6, 4, 19, 30, tzinfo=SHANGHAI)
SESSION_DAY = date(2025, 6, 4)
TODAY = date(2025, 5, 20)


def program(**overrides: Any) -> ProgramSpec:
    fields: dict[str, Any] = {
        "title": "Six-week recovery group",
        "display_name": "Wednesday group",
        "kind": "recovery_group",
        "facilitator": "Facilitator Li",
        "price": {"amount_minor": 90000, "currency": "CNY"},
        "safety_questions": [
            {"id": "self_harm", "text": "Are you thinking of harming yourself?"},
            {"id": "crisis", "text": "Are you in crisis right now?"},
        ],
    }
    fields.update(overrides)
    return ProgramSpec.model_validate(fields)


def application(**overrides: Any) -> Application:
    fields: dict[str, Any] = {
        "name": "Ming",
        "email": "ming@example.com",
        "date_of_birth": "1990-03-15",
        "privacy_notice_accepted": True,
        "safety_answers": {"self_harm": False, "crisis": False},
    }
    fields.update(overrides)
    return Application.model_validate(fields)


def check(app: Application, prog: ProgramSpec | None = None, **kw: Any) -> bool:
    return check_application(
        app,
        prog or program(),
        first_session=kw.get("first_session", FIRST_SESSION),
        today=kw.get("today", TODAY),
    )


def problem_field(app: Application, prog: ProgramSpec | None = None, **kw: Any) -> str:
    with pytest.raises(IntakeProblem) as caught:
        check(app, prog, **kw)
    assert caught.value.message
    assert str(caught.value) == caught.value.message
    return caught.value.field


def birthday_turning(age: int, on: date) -> date:
    return on.replace(year=on.year - age)


# --- check_application: passing and safety routing -----------------------------------------


def test_valid_application_passes_without_safety_routing() -> None:
    assert check(application()) is False


def test_valid_application_with_attestation_instead_of_birth_date() -> None:
    assert check(application(date_of_birth=None, age_attested=True)) is False


def test_program_without_safety_questions_takes_no_answers() -> None:
    assert check(application(safety_answers={}), program(safety_questions=[])) is False


@pytest.mark.parametrize(
    "answers",
    [
        {"self_harm": True, "crisis": False},
        {"self_harm": False, "crisis": True},
        {"self_harm": True, "crisis": True},
    ],
)
def test_any_yes_to_a_safety_question_routes(answers: dict[str, bool]) -> None:
    assert check(application(safety_answers=answers)) is True


# --- check_application: each rule and its field ---------------------------------------------


def test_privacy_notice_must_be_accepted() -> None:
    assert problem_field(application(privacy_notice_accepted=False)) == "privacy_notice_accepted"


def test_privacy_notice_is_checked_first() -> None:
    app = application(privacy_notice_accepted=False, date_of_birth=None, safety_answers={})
    assert problem_field(app) == "privacy_notice_accepted"


def test_under_age_by_date_of_birth() -> None:
    app = application(date_of_birth="2010-01-01")
    assert problem_field(app) == "date_of_birth"


def test_turning_18_on_the_session_day_passes() -> None:
    app = application(date_of_birth=birthday_turning(18, SESSION_DAY).isoformat())
    assert check(app) is False


def test_turning_18_the_day_after_the_session_fails() -> None:
    born = birthday_turning(18, SESSION_DAY + timedelta(days=1))
    app = application(date_of_birth=born.isoformat())
    assert problem_field(app) == "date_of_birth"


def test_age_is_counted_on_the_session_day_not_today() -> None:
    # 17 on the day of application, 18 by the first session: accepted
    born = birthday_turning(18, SESSION_DAY - timedelta(days=3))
    assert age_on(born, TODAY) == 17
    assert check(application(date_of_birth=born.isoformat())) is False


def test_minimum_age_follows_the_program() -> None:
    born = birthday_turning(21, SESSION_DAY + timedelta(days=1)).isoformat()  # 20 that day
    assert problem_field(application(date_of_birth=born), program(minimum_age=21)) == (
        "date_of_birth"
    )
    assert check(application(date_of_birth=born), program(minimum_age=20)) is False


# The session day is the calendar day where the session takes place (the cohort's sessions
# carry their time zone). check_application converts the first session to UTC before taking
# its date, so the day shifts for a session early in the morning east of UTC or late in the
# evening west of it.


def test_turning_18_on_the_day_of_an_early_morning_session_east_of_utc_passes() -> None:
    first = datetime(2025, 6, 4, 7, 30, tzinfo=SHANGHAI)  # 2025-06-03 23:30 UTC
    app = application(date_of_birth=birthday_turning(18, date(2025, 6, 4)).isoformat())
    assert check(app, first_session=first) is False


def test_turning_18_the_day_after_a_late_evening_session_west_of_utc_fails() -> None:
    first = datetime(2025, 6, 4, 20, 30, tzinfo=ZoneInfo("America/New_York"))  # 06-05 UTC
    app = application(date_of_birth=birthday_turning(18, date(2025, 6, 5)).isoformat())
    assert problem_field(app, first_session=first) == "date_of_birth"


def test_date_of_birth_in_the_future() -> None:
    app = application(date_of_birth=(TODAY + timedelta(days=1)).isoformat())
    assert problem_field(app) == "date_of_birth"
    # also when the program has no minimum age
    assert problem_field(app, program(minimum_age=0)) == "date_of_birth"


def test_date_of_birth_today_is_not_in_the_future() -> None:
    app = application(date_of_birth=TODAY.isoformat())
    assert check(app, program(minimum_age=0)) is False


def test_neither_date_of_birth_nor_attestation() -> None:
    app = application(date_of_birth=None, age_attested=False)
    assert problem_field(app) == "age_attested"


def test_no_age_needed_when_the_program_has_no_minimum() -> None:
    app = application(date_of_birth=None, age_attested=False)
    assert check(app, program(minimum_age=0)) is False


def test_gender_required_when_single_gender_by_request() -> None:
    prog = program(gender_composition="single_gender_by_request")
    assert problem_field(application(), prog) == "gender"
    assert check(application(gender="woman", single_gender_preference=True), prog) is False
    assert check(application(gender="prefer_not_to_say"), prog) is False


def test_a_mixed_program_takes_a_wish_for_a_single_gender_group_with_a_gender() -> None:
    # The recovery group's FAQ: people uncomfortable in a mixed group should still apply.
    prog = program(gender_composition=GenderComposition.mixed)
    assert check(application(gender=Gender.man, single_gender_preference=True), prog) is False
    assert problem_field(application(single_gender_preference=True), prog) == "gender"
    assert check(application(gender=Gender.man), prog) is False
    assert check(application(), prog) is False


def test_scholarship_where_not_allowed() -> None:
    app = application(scholarship_requested=True, scholarship_reason="low income")
    assert problem_field(app, program(scholarships_allowed=False)) == "scholarship_requested"


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_scholarship_needs_a_reason(reason: str | None) -> None:
    app = application(scholarship_requested=True, scholarship_reason=reason)
    assert problem_field(app, program(scholarships_allowed=True)) == "scholarship_reason"


def test_scholarship_with_a_reason_passes() -> None:
    app = application(scholarship_requested=True, scholarship_reason="between jobs")
    assert check(app, program(scholarships_allowed=True)) is False


def test_missing_safety_answer() -> None:
    app = application(safety_answers={"self_harm": False})
    assert problem_field(app) == "safety_answers.crisis"


def test_missing_safety_answer_even_with_a_yes_elsewhere() -> None:
    app = application(safety_answers={"self_harm": True})
    assert problem_field(app) == "safety_answers.crisis"


def test_answer_to_an_unknown_question() -> None:
    app = application(safety_answers={"self_harm": False, "crisis": False, "other": False})
    assert problem_field(app) == "safety_answers.other"


# --- pydantic validation ---------------------------------------------------------------------


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com", ""])
def test_malformed_email(email: str) -> None:
    with pytest.raises(ValidationError) as caught:
        application(email=email)
    assert caught.value.errors()[0]["loc"] == ("email",)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x0b", "\x0c"])
def test_control_character_in_name(char: str) -> None:
    with pytest.raises(ValidationError) as caught:
        application(name=f"Mi{char}ng")
    assert caught.value.errors()[0]["loc"] == ("name",)


@pytest.mark.parametrize("field", ["chat_handle", "scholarship_reason"])
def test_nul_refused_in_other_text_fields(field: str) -> None:
    with pytest.raises(ValidationError):
        application(**{field: "a\x00b"})


def test_name_is_stripped_and_required() -> None:
    assert application(name="  Ming  ").name == "Ming"
    with pytest.raises(ValidationError):
        application(name="   ")
    with pytest.raises(ValidationError):
        application(name="x" * 101)


def test_unknown_time_zone() -> None:
    with pytest.raises(ValidationError) as caught:
        application(timezone="Mars/Olympus_Mons")
    assert caught.value.errors()[0]["loc"] == ("timezone",)
    with pytest.raises(ValidationError):
        application(timezone="../../etc/passwd")
    assert application(timezone="Europe/Berlin").timezone == "Europe/Berlin"


def test_extra_field_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        application(is_admin=True)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(ValidationError):
        program(secret="x")


def session(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "starts_at": "2025-06-04T19:30:00+08:00",
        "ends_at": "2025-06-04T21:00:00+08:00",
        "timezone": "Asia/Shanghai",
    }
    fields.update(overrides)
    return fields


def test_session_spec_valid() -> None:
    spec = SessionSpec.model_validate(session())
    assert spec.starts_at == FIRST_SESSION


@pytest.mark.parametrize(
    "ends_at", ["2025-06-04T19:00:00+08:00", "2025-06-04T19:30:00+08:00", "2025-06-04T11:30:00Z"]
)
def test_session_spec_ends_before_or_at_start(ends_at: str) -> None:
    with pytest.raises(ValidationError):
        SessionSpec.model_validate(session(ends_at=ends_at))


@pytest.mark.parametrize(
    "overrides",
    [
        {"starts_at": "2025-06-04T19:30:00"},
        {"ends_at": "2025-06-04T21:00:00"},
        {"starts_at": "2025-06-04T19:30:00", "ends_at": "2025-06-04T21:00:00"},
    ],
)
def test_session_spec_needs_a_utc_offset(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        SessionSpec.model_validate(session(**overrides))


def test_session_spec_unknown_time_zone() -> None:
    with pytest.raises(ValidationError):
        SessionSpec.model_validate(session(timezone="Asia/Atlantis"))


def cohort(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sessions": [session()],
        "registration_opens_at": "2025-05-01T00:00:00+08:00",
        "registration_closes_at": "2025-06-01T00:00:00+08:00",
    }
    fields.update(overrides)
    return fields


def test_cohort_spec_valid() -> None:
    spec = CohortSpec.model_validate(cohort())
    assert spec.capacity is None
    assert spec.hold_seconds == 7 * 24 * 3600
    assert spec.offer_seconds == 48 * 3600


@pytest.mark.parametrize(
    "closes", ["2025-04-30T00:00:00+08:00", "2025-05-01T00:00:00+08:00", "2025-04-30T16:00:00Z"]
)
def test_cohort_spec_closes_before_or_at_opening(closes: str) -> None:
    with pytest.raises(ValidationError):
        CohortSpec.model_validate(cohort(registration_closes_at=closes))


def test_cohort_spec_needs_a_session() -> None:
    with pytest.raises(ValidationError):
        CohortSpec.model_validate(cohort(sessions=[]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"registration_opens_at": "2025-05-01T00:00:00"},
        {"registration_closes_at": "2025-06-01T00:00:00"},
    ],
)
def test_cohort_spec_window_with_and_without_offset_is_a_validation_error(
    overrides: dict[str, str],
) -> None:
    # bad input must come back as a ValidationError (a 4xx naming the field), not a crash
    with pytest.raises(ValidationError):
        CohortSpec.model_validate(cohort(**overrides))


def test_program_spec_duplicate_safety_question_ids() -> None:
    questions = [
        {"id": "crisis", "text": "Are you in crisis?"},
        {"id": "crisis", "text": "Again?"},
    ]
    with pytest.raises(ValidationError) as caught:
        program(safety_questions=questions)
    assert caught.value.errors()[0]["loc"] == ("safety_questions",)


def test_program_spec_defaults() -> None:
    prog = program()
    assert prog.minimum_age == 18
    assert prog.capacity == 8
    assert prog.gender_composition == GenderComposition.mixed
    assert prog.approval_required is True
    assert prog.scholarships_allowed is False


@pytest.mark.parametrize("currency", ["cny", "Cny", "CN", "CNYY", "C1Y"])
def test_price_currency_must_be_iso_uppercase(currency: str) -> None:
    with pytest.raises(ValidationError):
        Price(amount_minor=90000, currency=currency)


def test_price_valid_and_bounds() -> None:
    assert Price(amount_minor=0, currency="CNY").amount_minor == 0
    with pytest.raises(ValidationError):
        Price(amount_minor=-1, currency="CNY")


# --- age_on and registration_open -----------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (date(2000, 6, 15), date(2018, 6, 14), 17),
        (date(2000, 6, 15), date(2018, 6, 15), 18),
        (date(2000, 6, 15), date(2018, 6, 16), 18),
        (date(2000, 12, 31), date(2019, 1, 1), 18),
        (date(2000, 1, 1), date(2018, 12, 31), 18),
        (date(2000, 6, 15), date(2000, 6, 15), 0),
        # born on 29 February: a year older on 1 March in common years
        (date(2008, 2, 29), date(2026, 2, 28), 17),
        (date(2008, 2, 29), date(2026, 3, 1), 18),
        (date(2008, 2, 29), date(2028, 2, 28), 19),
        (date(2008, 2, 29), date(2028, 2, 29), 20),
        (date(2004, 2, 29), date(2022, 2, 28), 17),
        (date(2004, 2, 29), date(2022, 3, 1), 18),
    ],
)
def test_age_on(birth: date, day: date, age: int) -> None:
    assert age_on(birth, day) == age


def test_leap_day_birth_is_18_on_1_march() -> None:
    session_day = datetime(2026, 3, 1, 19, 30, tzinfo=SHANGHAI)
    app = application(date_of_birth="2008-02-29")
    assert check(app, first_session=session_day, today=date(2026, 2, 1)) is False
    before = datetime(2026, 2, 28, 19, 30, tzinfo=SHANGHAI)
    assert problem_field(app, first_session=before, today=date(2026, 2, 1)) == "date_of_birth"


def test_registration_open_is_half_open_and_a_coordinator_closes_it_early() -> None:
    opens = datetime(2025, 5, 1, tzinfo=UTC)
    closes = datetime(2025, 6, 1, tzinfo=UTC)
    window = {"registration_opens_at": opens, "registration_closes_at": closes}
    tick = timedelta(microseconds=1)
    assert registration_open(window, opens - tick) is False
    assert registration_open(window, opens) is True
    assert registration_open(window, opens + timedelta(days=10)) is True
    assert registration_open(window, closes - tick) is True
    assert registration_open(window, closes) is False
    assert registration_open(window, closes + tick) is False
    assert registration_open({**window, "registration_closed": True}, opens) is False
    assert registration_open({**window, "registration_closed": False}, opens) is True
    cancelled = {**window, "cancelled": {"at": opens, "by": "c"}}
    assert registration_open(cancelled, opens) is False


WORK = {
    "id": "work",
    "text": "How do you work with groups?",
    "text_zh": "你以什么身份带领团体？",
    "kind": "choice",
    "choices": [
        {"id": "facilitator", "text": "Facilitator"},
        {"id": "therapist", "text": "Therapist or counsellor"},
        {"id": "coach", "text": "Coach"},
    ],
    "required": True,
}
HOPES = {"id": "hopes", "text": "Anything the facilitator should know?", "kind": "text"}


def test_a_programs_own_questions_are_answered_as_asked() -> None:
    prog = program(intake_questions=[WORK, {**HOPES, "sensitive": True}])
    assert check(application(intake_answers={"work": "coach"}), prog) is False
    long = "x" * 2000
    assert check(application(intake_answers={"work": "coach", "hopes": long}), prog) is False
    assert problem_field(application(), prog) == "intake_answers.work"  # required
    blank = application(intake_answers={"work": "  "})
    assert problem_field(blank, prog) == "intake_answers.work"
    wrong = application(intake_answers={"work": "astronaut"})
    assert problem_field(wrong, prog) == "intake_answers.work"
    extra = application(intake_answers={"work": "coach", "age": "40"})
    assert problem_field(extra, prog) == "intake_answers.age"
    with pytest.raises(ValidationError):
        application(intake_answers={"hopes": "x" * 2001})


def test_a_question_is_a_choice_with_choices_or_text_without_them() -> None:
    assert program(intake_questions=[WORK, HOPES]).intake_questions[0].required
    for broken in (
        {**WORK, "choices": WORK["choices"][:1]},  # one choice is no choice
        {**HOPES, "choices": WORK["choices"]},
        {**WORK, "choices": [WORK["choices"][0], WORK["choices"][0]]},
        {**WORK, "kind": "scale"},
    ):
        with pytest.raises(ValidationError):
            program(intake_questions=[broken])
    with pytest.raises(ValidationError):
        program(intake_questions=[WORK, WORK])  # ids are unique
