"""What registration's HTTP API answers: the response models of the public routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from registration.domain.ledger import Status


class SessionView(BaseModel):
    starts_at: datetime
    ends_at: datetime
    timezone: str


class CohortView(BaseModel):
    cohort_id: str
    program_id: str
    title: str
    kind: str
    language: str
    facilitator: str
    contact_email: str | None = None
    description: str
    translation: dict[str, str] | None = None
    label: str
    sessions: list[SessionView]
    price: dict[str, Any]
    refund_policy: str
    minimum_age: int
    gender_composition: str
    composition: str | None = Field(
        None, description="the cohort's make-up once known: mixed, women or men"
    )
    composition_window_days: int = 7
    composition_refund: str = "refundable"
    cancellation_refund: str = Field(
        "refundable", description="what is refunded if the coordinator cancels the cohort"
    )
    scholarships_allowed: bool
    safety_questions: list[dict[str, Any]]
    intake_questions: list[dict[str, Any]] = []
    capacity: int
    seats_left: int
    registration_opens_at: datetime
    registration_closes_at: datetime
    registration_closed: bool = Field(
        False, description="closed by a coordinator before registration_closes_at"
    )
    cancelled: bool = Field(False, description="the cohort will not take place")
    sessions_sequence: int = Field(
        0, description="how often the sessions changed: a calendar entry's SEQUENCE"
    )


def cohort_view(cohort: dict[str, Any], program: dict[str, Any]) -> CohortView:
    return CohortView(
        cohort_id=cohort["_id"],
        program_id=program["_id"],
        title=program["title"],
        kind=program["kind"],
        language=program["language"],
        facilitator=program["facilitator"],
        contact_email=program.get("contact_email"),
        description=program["description"],
        translation=program.get("translation"),
        label=cohort.get("label", ""),
        sessions=[SessionView(**s) for s in cohort["sessions"]],
        price=program["price"],
        refund_policy=program["refund_policy"],
        minimum_age=program["minimum_age"],
        gender_composition=program["gender_composition"],
        composition=(cohort.get("composition") or {}).get("kind"),
        composition_window_days=program.get("composition_window_days", 7),
        composition_refund=program.get("composition_refund", "refundable"),
        cancellation_refund=program.get("cancellation_refund", "refundable"),
        scholarships_allowed=program["scholarships_allowed"],
        safety_questions=program["safety_questions"],
        intake_questions=program.get("intake_questions", []),
        capacity=cohort["capacity"],
        seats_left=max(0, cohort["capacity"] - cohort.get("seats_taken", 0)),
        registration_opens_at=cohort["registration_opens_at"],
        registration_closes_at=cohort["registration_closes_at"],
        registration_closed=bool(cohort.get("registration_closed")),
        cancelled=bool(cohort.get("cancelled")),
        sessions_sequence=cohort.get("sessions_sequence", 0),
    )


class SignUpAnswer(BaseModel):
    """The same for every sign-up the cohort takes, whoever's the address."""

    status: Literal["check_your_email"] = "check_your_email"
    verify_by: datetime = Field(description="the emailed link works until then")
    crisis_resources: list[dict[str, Any]] = []


class VerifiedAnswer(BaseModel):
    registration_id: str
    status: Status
    waitlist_position: int | None = None
    hold_expires_at: datetime | None = None


class ErasureView(BaseModel):
    registration_id: str
    requested_at: datetime
    services: dict[str, datetime | None] = Field(
        description="when each service finished erasing (null: not yet)"
    )
    complete: bool


class CompositionNotice(BaseModel):
    """The cohort's make-up does not meet the applicant's wish for a single-gender group:
    they may withdraw until ``withdraw_by``, refunded when ``refundable``."""

    composition: Literal["mixed", "women", "men"]
    withdraw_by: datetime
    refundable: bool


class RegistrationView(BaseModel):
    registration_id: str
    cohort_id: str
    status: Status
    waitlist_position: int | None = None
    expires_at: datetime | None = None
    composition_notice: CompositionNotice | None = None
    cohort_cancelled: bool = Field(False, description="the coordinator cancelled the cohort")
    erasure: ErasureView | None = None
