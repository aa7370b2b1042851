"""Programs, cohorts and the intake rules an application is checked against (pure)."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from shared.errors import Invalid


def _no_control_chars(value: str) -> str:
    # No control character (NUL included: C drivers and logs truncate at it) belongs here.
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", value):
        raise ValueError("must not contain control characters")
    return value


def _valid_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone") from None
    return value


def _single_line(value: str) -> str:
    if re.search(r"[\t\r\n]", value):
        raise ValueError("must be a single line")
    return value


# The same rules, stated in the document (shared/contract.py holds bodies to it).
_NO_CONTROL = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
_ONE_LINE = r"^[^\u0000-\u001f\u007f-\u009f]*$"
Text = Annotated[
    str, AfterValidator(_no_control_chars), Field(json_schema_extra={"pattern": _NO_CONTROL})
]
Line = Annotated[
    str,
    AfterValidator(_no_control_chars),
    AfterValidator(_single_line),
    Field(json_schema_extra={"pattern": _ONE_LINE}),
]
TimeZone = Annotated[
    str,
    AfterValidator(_valid_timezone),
    Field(json_schema_extra={"enum": sorted(available_timezones())}),
]
Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProgramKind(StrEnum):
    recovery_group = "recovery_group"
    facilitator_session = "facilitator_session"
    other = "other"


class RefundPolicy(StrEnum):
    no_refund = "no_refund"
    refundable = "refundable"


class GenderComposition(StrEnum):
    mixed = "mixed"
    single_gender_by_request = "single_gender_by_request"


class Gender(StrEnum):
    woman = "woman"
    man = "man"
    non_binary = "non_binary"
    prefer_not_to_say = "prefer_not_to_say"


class Price(BaseModel):
    model_config = Strict
    amount_minor: int = Field(ge=0, le=100_000_000, description="e.g. 90000 for 900.00 CNY")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")


class SafetyQuestion(BaseModel):
    """A yes/no question; a "yes" routes the application to a coordinator at once."""

    model_config = Strict
    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: Text = Field(min_length=1, max_length=500)
    text_zh: Text | None = Field(None, max_length=500)


class IntakeChoice(BaseModel):
    model_config = Strict
    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: Text = Field(min_length=1, max_length=200)
    text_zh: Text | None = Field(None, max_length=200)


class IntakeQuestion(BaseModel):
    """A program's own question (who the applicant is, what they hope for): a choice or
    free text, answered on the sign-up form and shown to the reviewing coordinator.
    Every answer is sealed at rest; a ``sensitive`` one is shown only on the
    registration's own record, never in the group's lists. Safety questions are a
    separate kind (SafetyQuestion), with their own routing."""

    model_config = Strict
    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: Text = Field(min_length=1, max_length=500)
    text_zh: Text | None = Field(None, max_length=500)
    kind: Literal["choice", "text"]
    choices: list[IntakeChoice] = Field(default_factory=list, max_length=20)
    required: bool = False
    sensitive: bool = False

    @model_validator(mode="after")
    def _choices_fit_the_kind(self) -> IntakeQuestion:
        if self.kind == "choice" and len(self.choices) < 2:
            raise ValueError("a choice question needs at least two choices")
        if self.kind == "text" and self.choices:
            raise ValueError("a text question has no choices")
        if len({c.id for c in self.choices}) != len(self.choices):
            raise ValueError("choice ids must be unique")
        return self


ANSWER_MAX = 2000


class CrisisResource(BaseModel):
    model_config = Strict
    name: Text = Field(min_length=1, max_length=200)
    contact: Text = Field(min_length=1, max_length=200)
    url: Text | None = Field(None, max_length=500)


class ProgramWords(BaseModel):
    """A program's title and description in the other of English and Chinese."""

    model_config = Strict
    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=5000)


class ProgramSpec(BaseModel):
    """What a coordinator sets for a program."""

    model_config = Strict
    title: Text = Field(min_length=1, max_length=200)
    display_name: Text = Field(
        min_length=1, max_length=100, description="discreet name used in messages"
    )
    kind: ProgramKind
    language: Literal["en", "zh"] = "zh"
    facilitator: Text = Field(min_length=1, max_length=200)
    contact_email: EmailStr | None = Field(
        None, description="where applicants write with questions, concerns or feedback"
    )
    description: Text = Field("", max_length=5000)
    translation: ProgramWords | None = Field(
        None, description="title and description in the language other than `language`"
    )
    price: Price
    refund_policy: RefundPolicy = RefundPolicy.no_refund
    minimum_age: int = Field(18, ge=0, le=120)
    capacity: int = Field(8, ge=1, le=200)
    sign_up_for: Literal["series", "session"] = Field(
        "series",
        description="series: one sign-up for every session of a cohort; session: each "
        "session is a cohort of its own, signed up for alone (a cohort given several "
        "sessions, or a recurrence, becomes one cohort per session)",
    )
    gender_composition: GenderComposition = GenderComposition.mixed
    composition_window_days: int = Field(
        7,
        ge=1,
        le=60,
        description="how long after a cohort's make-up is set an applicant whose wish for "
        "a single-gender group it does not meet may withdraw under composition_refund",
    )
    composition_refund: RefundPolicy = Field(
        RefundPolicy.refundable,
        description="the refund for such a withdrawal, whatever refund_policy says",
    )
    cancellation_refund: RefundPolicy = Field(
        RefundPolicy.refundable,
        description="the refund for everyone in a cohort the coordinator cancels",
    )
    approval_required: bool = True
    scholarships_allowed: bool = False
    safety_questions: list[SafetyQuestion] = Field(default_factory=list, max_length=20)
    intake_questions: list[IntakeQuestion] = Field(default_factory=list, max_length=20)
    crisis_resources: list[CrisisResource] = Field(default_factory=list, max_length=20)
    consent_form_ref: Text | None = Field(None, max_length=200)

    @field_validator("safety_questions", "intake_questions")
    @classmethod
    def _unique_ids(cls, questions: list) -> list:
        ids = [q.id for q in questions]
        if len(ids) != len(set(ids)):
            raise ValueError("question ids must be unique")
        return questions

    @property
    def refundable(self) -> bool:
        """What the program promises a participant who withdraws after paying; payments
        decides the refund from it (payments/domain/cases.py, Case.withdrawn)."""
        return self.refund_policy == RefundPolicy.refundable

    @property
    def composition_refundable(self) -> bool:
        """Whether withdrawing because the cohort's make-up does not meet one's wish for
        a single-gender group is refunded (domain/composition.py)."""
        return self.composition_refund == RefundPolicy.refundable

    @property
    def cancellation_refundable(self) -> bool:
        """Whether money paid for a cohort the coordinator cancels goes back."""
        return self.cancellation_refund == RefundPolicy.refundable


def _https(url: str | None) -> str | None:
    if url is not None and not url.lower().startswith("https://"):
        raise ValueError("a meeting link starts with https://")
    return url


class Joining(BaseModel):
    """How a confirmed participant joins the sessions: shown and sent to them and to
    coordinators only (their page, their emails and calendar file), sealed at rest and
    on the wire (cohort.joining_changed), never in a public event, a subject or a log."""

    model_config = Strict
    platform: Line = Field(min_length=1, max_length=80, description="e.g. Tencent Meeting")
    url: Annotated[Line | None, AfterValidator(_https)] = Field(None, max_length=500)
    meeting_id: Line | None = Field(None, max_length=40)
    passcode: Line | None = Field(None, max_length=40)
    notes: Text | None = Field(None, max_length=1000, description="anything else to know")


class PaymentInstructions(BaseModel):
    """How to pay this program's organisation, in each language applicants read."""

    model_config = Strict
    en: Text | None = Field(None, max_length=2000)
    zh: Text | None = Field(None, max_length=2000)


QR_MAX_BYTES = 256 * 1024
QR_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def qr_image_type(data: bytes) -> str:
    """The image's type from its first bytes: a PNG or a JPEG, no larger than 256 KiB."""
    if not data:
        raise Invalid("qr", "the image is empty")
    if len(data) > QR_MAX_BYTES:
        raise Invalid("qr", f"the image is larger than {QR_MAX_BYTES // 1024} KiB")
    for magic, content_type in QR_TYPES.items():
        if data.startswith(magic):
            return content_type
    raise Invalid("qr", "the image must be a PNG or a JPEG")


class Application(BaseModel):
    """An applicant's sign-up. Every field is checked; personal ones are sealed at rest."""

    model_config = Strict
    name: Line = Field(min_length=1, max_length=100, description="name or alias")
    email: EmailStr
    chat_handle: Line | None = Field(None, max_length=64)
    date_of_birth: date | None = None
    age_attested: bool = Field(False, description="I confirm I meet the program's minimum age")
    gender: Gender | None = None
    single_gender_preference: bool = False
    scholarship_requested: bool = False
    scholarship_reason: Text | None = Field(None, max_length=2000)
    safety_answers: dict[str, bool] = Field(default_factory=dict, max_length=20)
    intake_answers: dict[str, Annotated[Text, Field(max_length=ANSWER_MAX)]] = Field(
        default_factory=dict, max_length=20, description="question id -> choice id or text"
    )
    language: Literal["en", "zh"] = "zh"
    timezone: TimeZone = "Asia/Shanghai"
    privacy_notice_accepted: bool = False


class IntakeProblem(Invalid):
    """An application the program's rules refuse; ``field`` names what to fix."""


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def check_application(
    app: Application, program: ProgramSpec, *, first_session: datetime, today: date
) -> bool:
    """Raise IntakeProblem for the first rule broken; return whether safety routing applies.

    ``first_session`` is the first session's start in the session's own time zone.
    """
    if not app.privacy_notice_accepted:
        raise IntakeProblem("privacy_notice_accepted", "the privacy notice must be accepted")
    if app.date_of_birth is not None:
        if app.date_of_birth > today:
            raise IntakeProblem("date_of_birth", "date of birth is in the future")
        # The age on the day of the first session where it takes place.
        if age_on(app.date_of_birth, first_session.date()) < program.minimum_age:
            raise IntakeProblem(
                "date_of_birth", f"this group is for people aged {program.minimum_age} and over"
            )
    elif program.minimum_age > 0 and not app.age_attested:
        raise IntakeProblem(
            "age_attested",
            f"give a date of birth or confirm you are {program.minimum_age} or over",
        )
    # Any program takes a wish for a single-gender group (domain/composition.py); the
    # gender says which group would meet it.
    asks_gender = program.gender_composition == GenderComposition.single_gender_by_request
    if app.gender is None and (asks_gender or app.single_gender_preference):
        raise IntakeProblem("gender", "say your gender, so we know which group you would prefer")
    if app.scholarship_requested:
        if not program.scholarships_allowed:
            raise IntakeProblem("scholarship_requested", "this program offers no scholarships")
        if not app.scholarship_reason:
            raise IntakeProblem("scholarship_reason", "say briefly why you ask for a scholarship")
    asked = {q.id for q in program.safety_questions}
    for qid in sorted(asked - app.safety_answers.keys()):
        raise IntakeProblem(f"safety_answers.{qid}", "this question needs an answer")
    for qid in sorted(app.safety_answers.keys() - asked):
        raise IntakeProblem(f"safety_answers.{qid}", "not a question of this program")
    check_intake_answers(app.intake_answers, program.intake_questions)
    return any(app.safety_answers.values())


def check_intake_answers(answers: dict[str, str], questions: list[IntakeQuestion]) -> None:
    """Each required question answered, each choice one of its own, nothing else."""
    for qid in sorted(answers.keys() - {q.id for q in questions}):
        raise IntakeProblem(f"intake_answers.{qid}", "not a question of this program")
    for q in questions:
        answer = answers.get(q.id, "")
        if not answer:
            if q.required:
                raise IntakeProblem(f"intake_answers.{q.id}", "this question needs an answer")
            continue
        if q.kind == "choice" and answer not in {c.id for c in q.choices}:
            raise IntakeProblem(f"intake_answers.{q.id}", "not one of this question's choices")


def registration_open(cohort: dict, now: datetime) -> bool:
    """Within the cohort's window, and not closed early (or cancelled) by a coordinator."""
    if cohort.get("registration_closed") or cohort.get("cancelled"):
        return False
    return cohort["registration_opens_at"] <= now < cohort["registration_closes_at"]
