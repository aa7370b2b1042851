import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    Contact,
    EnrollmentConfirmed,
    Envelope,
    Exchange,
    RegistrationSubmitted,
    make_envelope,
    utcnow,
)
from shared.logs import PERSONAL_KEYS

DESIGN_EVENTS = {
    "registration.submitted",
    "registration.approved",
    "registration.rejected",
    "registration.waitlisted",
    "registration.seat_offered",
    "registration.withdrawn",
    "registration.expired",
    "registration.flagged_for_safety",
    "enrollment.confirmed",
    "enrollment.cancelled",
    "enrollment.waitlisted",
    "consent.requested",
    "consent.signed",
    "consent.declined",
    "consent.withdrawn",
    "consent.expired",
    "payment.requested",
    "payment.confirmed",
    "payment.waived",
    "payment.failed",
    "payment.expired",
    "notification.sent",
    "notification.failed",
}


def test_every_event_named_in_the_design_has_a_model() -> None:
    assert DESIGN_EVENTS <= set(EVENT_TYPES)


def test_public_events_are_enrollment_only_and_carry_no_personal_field() -> None:
    assert set(PUBLIC_EVENT_TYPES) == {t for t in EVENT_TYPES if t.startswith("enrollment.")}
    for model in PUBLIC_EVENT_TYPES.values():
        assert model.exchange is Exchange.public
        assert not set(model.model_fields) & PERSONAL_KEYS, model


def test_envelope_round_trip_is_cloudevents_structured_json() -> None:
    data = RegistrationSubmitted(
        registration_id="r1",
        cohort_id="c1",
        program_id="p1",
        contact=Contact(name="A", email="a@example.org"),
        submitted_at=utcnow(),
    )
    env = make_envelope(data, source="registration", correlation_id="corr", subject="r1")
    parsed = Envelope.model_validate_json(env.model_dump_json())
    assert parsed == env
    assert parsed.specversion == "1.0" and parsed.type == "registration.submitted"
    assert parsed.dataschema == "urn:holdspace:event:registration.submitted:v1"
    assert parsed.payload() == data
    assert parsed.exchange is Exchange.internal


def test_payloads_are_frozen_and_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        EnrollmentConfirmed(
            registration_id="r", cohort_id="c", program_id="p", occurred_at=utcnow(), email="x"
        )


def test_only_broadcasts_may_be_published_without_a_taker() -> None:
    unrouted = {t for t, model in EVENT_TYPES.items() if not model.must_be_routed}
    broadcasts = {
        t for t in EVENT_TYPES if t.startswith(("enrollment.", "notification.", "cohort."))
    }
    # Registration must take notifications' erasure report, and notifications changed
    # sessions and joining details (it tells the participants): they are no broadcasts.
    told = {"cohort.sessions_changed", "cohort.joining_changed"}
    assert unrouted == broadcasts - {"notification.erased"} - told
