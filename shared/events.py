"""The event envelope (CloudEvents 1.0, structured JSON) and every event's payload model.

One module, owned by the producers, imported by every service. The routing key
of an event is its ``type``; ``dataschema`` names the payload's schema version,
which a breaking change bumps. Events on the ``public`` exchange carry ids,
cohort, status and times only, never personal data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared import tracing


class Exchange(StrEnum):
    internal = "internal"
    public = "public"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class EventData(BaseModel):
    """Base of every payload. Subclasses set ``event_type`` (the routing key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    exchange: ClassVar[Exchange] = Exchange.internal
    # An event some service must take: published `mandatory`, so an unbound one is
    # an error and stays in the outbox. Broadcasts (public, notification.*) may
    # have no taker at all.
    must_be_routed: ClassVar[bool] = True
    # Carries personal data (a contact, a link with a token): its data travels sealed
    # (shared/wire.py), so the broker and its dead-letter queues never hold it in clear.
    personal: ClassVar[bool] = False


class Envelope(BaseModel):
    """CloudEvents 1.0 attributes plus Holdspace's correlation extensions."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id)
    source: str
    type: str
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str
    subject: str | None = None
    correlationid: str
    causationid: str | None = None
    traceparent: str | None = None
    data: dict[str, Any]

    def payload(self) -> EventData:
        """The typed payload; raises ``KeyError`` for an unknown type, ValidationError if bad."""
        return EVENT_TYPES[self.type].model_validate(self.data)

    @property
    def exchange(self) -> Exchange:
        return EVENT_TYPES[self.type].exchange

    @property
    def must_be_routed(self) -> bool:
        return EVENT_TYPES[self.type].must_be_routed


def schema_uri(event_type: str, version: int) -> str:
    return f"urn:holdspace:event:{event_type}:v{version}"


def make_envelope(
    data: EventData,
    *,
    source: str,
    correlation_id: str,
    causation_id: str | None = None,
    subject: str | None = None,
    event_id: str | None = None,
) -> Envelope:
    return Envelope(
        id=event_id or new_id(),
        source=source,
        type=data.event_type,
        dataschema=schema_uri(data.event_type, data.version),
        subject=subject,
        correlationid=correlation_id,
        causationid=causation_id,
        traceparent=tracing.current_traceparent(),
        data=data.model_dump(mode="json"),
    )


def about_registration(
    data: EventData, registration_id: str, causation_id: str | None = None, *, source: str
) -> Envelope:
    """The envelope of an event about one registration. Its id is the correlation id
    and the subject of everything about that registration, in every service, so an
    operator can follow it from sign-up to enrollment (``ops registration show``)."""
    return make_envelope(
        data,
        source=source,
        correlation_id=registration_id,
        causation_id=causation_id,
        subject=registration_id,
    )


def registration_enveloper(source: str) -> Callable[[EventData, str | None], Envelope]:
    """An aggregate store's enveloper (shared/aggregates.py) for events that each name
    the registration they are about, or (cohort events) the cohort."""

    def envelope(data: EventData, causation_id: str | None) -> Envelope:
        if isinstance(data, CohortEvent):  # about the whole cohort: followed by its id
            return about_registration(data, data.cohort_id, causation_id, source=source)
        registration_id = getattr(data, "registration_id", None)
        if not registration_id:
            raise ValueError(f"{data.event_type} names no registration")
        return about_registration(data, registration_id, causation_id, source=source)

    return envelope


# --- shared value types ------------------------------------------------------


class Contact(BaseModel):
    """What notifications needs to reach an applicant. Internal events only."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    email: EmailStr
    chat_handle: str | None = None
    language: Literal["en", "zh"] = "en"
    timezone: str = "Asia/Shanghai"
    # The applicant's own key to their registration, for the "my registration" link in
    # every message (registration keeps only its hash; notifications keeps it sealed).
    access_token: str | None = None


class Session(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    starts_at: datetime
    ends_at: datetime
    timezone: str


class Money(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)


class CohortRef(BaseModel):
    """What a message about a cohort needs, carried so no one looks it up elsewhere."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cohort_id: str
    program_id: str
    display_name: str  # the discreet name used in messages
    sessions: list[Session] = []
    contact_email: str | None = None  # the program's address for questions and concerns
    # How often the sessions had changed when this was sent (cohort.sessions_changed).
    sessions_sequence: int = 0


# --- registration (internal) -------------------------------------------------


class RegistrationEvent(EventData):
    registration_id: str
    cohort_id: str


class RegistrationSubmitted(RegistrationEvent):
    event_type: ClassVar[str] = "registration.submitted"
    personal: ClassVar[bool] = True
    program_id: str
    contact: Contact
    cohort: CohortRef | None = None
    price: Money | None = None
    scholarship_requested: bool = False
    submitted_at: datetime


class RegistrationEmailVerificationRequested(RegistrationEvent):
    """A sign-up waits for its email address to be verified; nothing is held before.

    ``already_registered``: the address already has a registration for this cohort.
    The sign-up was answered as any other (no stranger learns who is in a group); only
    the mailbox's owner is told, and ``contact.access_token`` is then empty.
    """

    event_type: ClassVar[str] = "registration.email_verification_requested"
    personal: ClassVar[bool] = True
    program_id: str
    contact: Contact
    cohort: CohortRef | None = None
    verify_by: datetime
    already_registered: bool = False


class RegistrationErasureRequested(RegistrationEvent):
    """Erase everything about this registration: each service erases what it holds and
    answers with erasure.completed. Registration withdrew the registration first."""

    event_type: ClassVar[str] = "registration.erasure_requested"
    requested_at: datetime


class ErasureCompleted(EventData):
    """One service erased what it held about a registration (registration records it).
    Each service publishes its own type, in its own family of events."""

    service: ClassVar[str]
    registration_id: str
    completed_at: datetime


class ConsentErased(ErasureCompleted):
    event_type: ClassVar[str] = "consent.erased"
    service: ClassVar[str] = "consent"


class PaymentErased(ErasureCompleted):
    event_type: ClassVar[str] = "payment.erased"
    service: ClassVar[str] = "payments"


class NotificationErased(ErasureCompleted):
    event_type: ClassVar[str] = "notification.erased"
    service: ClassVar[str] = "notifications"


class RegistrationPendingReview(RegistrationEvent):
    event_type: ClassVar[str] = "registration.pending_review"
    hold_expires_at: datetime | None = None


class RegistrationApproved(RegistrationEvent):
    event_type: ClassVar[str] = "registration.approved"
    program_id: str
    consent_form_ref: str | None = None
    price: Money | None = None
    refundable: bool = False
    hold_expires_at: datetime | None = None


class RegistrationRejected(RegistrationEvent):
    event_type: ClassVar[str] = "registration.rejected"


class RegistrationWaitlisted(RegistrationEvent):
    event_type: ClassVar[str] = "registration.waitlisted"
    position: int = Field(ge=1)


class RegistrationSeatOffered(RegistrationEvent):
    event_type: ClassVar[str] = "registration.seat_offered"
    offer_expires_at: datetime


class RegistrationWithdrawn(RegistrationEvent):
    """The registration ended by the applicant's choice, or (``cohort_cancelled``) because
    the coordinator cancelled the whole cohort; ``refundable`` says whether money paid
    goes back (payments decides the refund from it)."""

    event_type: ClassVar[str] = "registration.withdrawn"
    previous_status: str
    refundable: bool = False
    cohort_cancelled: bool = False


class RegistrationMoved(RegistrationEvent):
    """A coordinator moved the registration to another cohort of its program
    (``cohort_id``, described by ``cohort``), where it keeps its ``status``."""

    event_type: ClassVar[str] = "registration.moved"
    from_cohort_id: str
    program_id: str
    status: str
    position: int | None = None
    cohort: CohortRef


class RegistrationCompositionUnmet(RegistrationEvent):
    """The cohort's gender make-up is set and does not meet the applicant's wish for a
    single-gender group: they may stay, or withdraw until ``withdraw_by`` (refunded when
    ``refundable``). Personal: with the make-up it hints at the applicant's gender."""

    event_type: ClassVar[str] = "registration.composition_unmet"
    personal: ClassVar[bool] = True
    composition: Literal["mixed", "women", "men"]
    withdraw_by: datetime
    refundable: bool


class RegistrationExpired(RegistrationEvent):
    event_type: ClassVar[str] = "registration.expired"
    previous_status: str


class RegistrationPaidAfterClose(RegistrationEvent):
    """Money was confirmed for a registration that had already ended (its hold expired,
    or it was withdrawn or rejected, before the payment reached registration): no seat
    follows, so payments records a refund to make."""

    event_type: ClassVar[str] = "registration.paid_after_close"
    previous_status: str


class CrisisResource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    contact: str
    url: str | None = None


class RegistrationFlaggedForSafety(RegistrationEvent):
    """No reason given, anywhere: only that a coordinator must look, and where help is."""

    event_type: ClassVar[str] = "registration.flagged_for_safety"
    program_id: str
    crisis_resources: list[CrisisResource] = []


# --- enrollment (public: ids, cohort, status and times only) ------------------


class EnrollmentEvent(EventData):
    exchange: ClassVar[Exchange] = Exchange.public
    must_be_routed: ClassVar[bool] = False
    registration_id: str
    cohort_id: str
    program_id: str
    occurred_at: datetime


class EnrollmentConfirmed(EnrollmentEvent):
    event_type: ClassVar[str] = "enrollment.confirmed"


class EnrollmentCancelled(EnrollmentEvent):
    event_type: ClassVar[str] = "enrollment.cancelled"


class EnrollmentWaitlisted(EnrollmentEvent):
    event_type: ClassVar[str] = "enrollment.waitlisted"
    position: int = Field(ge=1)


# --- cohort (internal: what a coordinator changed about a whole cohort) ----------


class CohortEvent(EventData):
    """A change to a cohort as a whole; what it means for each registration follows as
    that registration's own events (a seat offered, a withdrawal), which is what the
    people concerned are told by. Ids, times and counts only. A broadcast, taken by
    whoever needs it (``cohort.sessions_changed``: notifications)."""

    must_be_routed: ClassVar[bool] = False
    cohort_id: str
    program_id: str
    occurred_at: datetime


class CohortCancelled(CohortEvent):
    event_type: ClassVar[str] = "cohort.cancelled"


class CohortCapacityChanged(CohortEvent):
    event_type: ClassVar[str] = "cohort.capacity_changed"
    capacity: int = Field(ge=1)


class CohortRegistrationClosed(CohortEvent):
    event_type: ClassVar[str] = "cohort.registration_closed"


class CohortRegistrationReopened(CohortEvent):
    event_type: ClassVar[str] = "cohort.registration_reopened"


class CohortSessionsChanged(CohortEvent):
    """The cohort's sessions as they now are. ``sequence`` counts the changes: a calendar
    entry sent with it replaces one sent before (iCalendar SEQUENCE, same UIDs)."""

    event_type: ClassVar[str] = "cohort.sessions_changed"
    must_be_routed: ClassVar[bool] = True  # notifications must tell the participants
    sessions: list[Session]
    sequence: int = Field(ge=1)


class JoiningDetails(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    platform: str
    url: str | None = None
    meeting_id: str | None = None
    passcode: str | None = None
    notes: str | None = None


class CohortJoiningChanged(CohortEvent):
    """How the cohort's participants join, set or changed: every confirmed participant
    is sent it, and later confirmations and reminders carry it. Personal (a meeting's
    link and passcode let anyone in): its data travels sealed. ``sequence`` is the
    calendar's, as for changed sessions (a new LOCATION and URL replace the old)."""

    event_type: ClassVar[str] = "cohort.joining_changed"
    must_be_routed: ClassVar[bool] = True
    personal: ClassVar[bool] = True
    joining: JoiningDetails
    cohort: CohortRef
    sequence: int = Field(ge=1)


# --- consent ------------------------------------------------------------------


class ConsentEvent(EventData):
    registration_id: str


class ConsentRequested(ConsentEvent):
    event_type: ClassVar[str] = "consent.requested"
    personal: ClassVar[bool] = True
    signing_url: str  # carries the single-use signing token: internal only
    expires_at: datetime
    # True when someone who signed is asked to sign a newer version (re-consent).
    reconsent: bool = False


class ConsentSigned(ConsentEvent):
    event_type: ClassVar[str] = "consent.signed"
    # The registration's program, so payments answers only its coordinators (None:
    # from a consent service before it said so).
    program_id: str | None = None
    form_id: str
    form_version: int
    text_sha256: str
    signed_at: datetime
    price: Money | None = None
    refundable: bool = False
    hold_expires_at: datetime | None = None
    # True for a signature of a newer version by someone who had signed: payment
    # was already requested after the first signature, so this asks for nothing.
    reconsent: bool = False


class ConsentDeclined(ConsentEvent):
    event_type: ClassVar[str] = "consent.declined"


class ConsentWithdrawn(ConsentEvent):
    event_type: ClassVar[str] = "consent.withdrawn"


class ConsentExpired(ConsentEvent):
    event_type: ClassVar[str] = "consent.expired"


# --- payments -----------------------------------------------------------------


class PaymentEvent(EventData):
    registration_id: str
    payment_id: str


class PaymentRequested(PaymentEvent):
    event_type: ClassVar[str] = "payment.requested"
    amount: Money
    reference: str
    expires_at: datetime
    instructions: str
    # The decision on the applicant's scholarship request, when they made one: the
    # amount above is what it left to pay (never the reason or the coordinator).
    scholarship: Literal["granted", "declined"] | None = None


class PaymentConfirmed(PaymentEvent):
    event_type: ClassVar[str] = "payment.confirmed"
    amount: Money
    reference: str
    method: Literal["wechatpay", "alipay", "generic", "manual"]
    confirmed_at: datetime


class PaymentWaived(PaymentEvent):
    event_type: ClassVar[str] = "payment.waived"


class PaymentExpired(PaymentEvent):
    event_type: ClassVar[str] = "payment.expired"


class PaymentConfirmationPending(PaymentEvent):
    """A coordinator marked a transfer as received; a second coordinator must approve it."""

    event_type: ClassVar[str] = "payment.confirmation_pending"
    confirmation_id: str
    amount: Money


class PaymentFlagged(EventData):
    """A notification or manual mark did not match its request (or no request at all):
    recorded, not confirmed, and a coordinator must look."""

    event_type: ClassVar[str] = "payment.flagged"
    flag_id: str
    reason_code: str  # amount_mismatch, currency_mismatch, unknown_reference, ...
    method: str
    registration_id: str | None = None
    payment_id: str | None = None


class PaymentFailed(PaymentEvent):
    event_type: ClassVar[str] = "payment.failed"
    reason_code: str


class PaymentRefundDue(PaymentEvent):
    """Money is owed back and a coordinator must return it: the program's refund policy
    after a withdrawal (``withdrawn``), or a payment confirmed for a registration that
    had already ended (``registration_closed``)."""

    event_type: ClassVar[str] = "payment.refund_due"
    amount: Money
    reason_code: Literal["withdrawn", "registration_closed"]


# --- notifications ------------------------------------------------------------


class NotificationEvent(EventData):
    must_be_routed: ClassVar[bool] = False
    delivery_id: str
    template: str
    channel: Literal["email", "chat"]
    recipient_ref: str  # opaque: never an address


class NotificationSent(NotificationEvent):
    event_type: ClassVar[str] = "notification.sent"


class NotificationFailed(NotificationEvent):
    event_type: ClassVar[str] = "notification.failed"
    error_code: str


# --- progress (between sessions; internal, ids only unless said) -----------------


class ProgressEvent(EventData):
    registration_id: str
    cohort_id: str


class ProgressSafetyAnswered(ProgressEvent):
    """A participant answered an item their program marks as a safety item at or past
    its threshold: registration routes it as it routes intake's safety answers (a flag,
    the crisis resources at once, a coordinator alerted). No answer, score or item."""

    event_type: ClassVar[str] = "progress.safety_answered"
    program_id: str
    answered_at: datetime


class ProgressMilestoneReached(ProgressEvent):
    """The participant ticked a milestone of their program: notifications sends a short,
    discreet word of encouragement. Personal (the milestone's title says what they work
    on): its data travels sealed."""

    event_type: ClassVar[str] = "progress.milestone_reached"
    personal: ClassVar[bool] = True
    title: dict[str, str]  # by language (en, zh)
    reached: int = Field(ge=1)
    of: int = Field(ge=1)


class ProgressPlanSet(EventData):
    """A program's work between sessions was set: after which sessions it sets homework,
    so that the reminder before the next session can say it is waiting (notifications).
    The program's content only; nothing about any person."""

    event_type: ClassVar[str] = "progress.plan_set"
    program_id: str
    homework_sessions: list[int]
    set_at: datetime


class ProgressErased(ErasureCompleted):
    event_type: ClassVar[str] = "progress.erased"
    service: ClassVar[str] = "progress"


# --- staff access -----------------------------------------------------------


class StaffAccessRevoked(EventData):
    """Bearer tokens every service must refuse from now on (shared/revocation.py): one
    token (``token_id``) or every token of an account issued up to ``not_before``. Ids
    and times only; ``forget_after`` is when no token it refuses can still be valid."""

    event_type: ClassVar[str] = "staff.access_revoked"
    subject: str | None = None
    token_id: str | None = None
    not_before: datetime
    forget_after: datetime
    reason: Literal["signed_out", "deactivated", "revoked"] = "revoked"


def _all_event_types() -> dict[str, type[EventData]]:
    found: dict[str, type[EventData]] = {}
    stack = list(EventData.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "event_type" in cls.__dict__:
            found[cls.event_type] = cls
    return dict(sorted(found.items()))


EVENT_TYPES: dict[str, type[EventData]] = _all_event_types()
PUBLIC_EVENT_TYPES = {t: c for t, c in EVENT_TYPES.items() if c.exchange is Exchange.public}
